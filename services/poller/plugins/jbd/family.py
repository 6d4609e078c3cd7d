"""LLT/JBD (Jiabaida, Xiaoxiang, Overkill) smart BMS over UART/RS485 at 9600 baud (and BLE FF00).

Frames, both directions: ``DD <b1> <b2> <len> <data...> <chk_hi> <chk_lo> 77``. A read request is
``DD A5 <reg> 00 <chk> 77``; a reply is ``DD <reg> <status> <len> <data> <chk> 77`` with status 0x00
for success (0x80: the BMS refused). The check is 0x10000 - sum(bytes[2:-3]) (big endian): for a
request it covers register and length, for a reply status, length and data.

Facts and where they were confirmed (public sources, repository + path):

- framing, checksum coverage, request bytes ``DD A5 03 00 FF FD 77`` / ``.. 04 .. FF FC ..`` /
  ``.. 05 .. FF FB ..``: mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/lltjbd.py
  (``cmd``, ``validate_packet``), syssi/esphome-jbd-bms components/jbd_bms/jbd_bms.cpp (``chksum_``
  over ``raw + 2``), patman15/aiobmsble aiobmsble/bms/jbd_bms.py (``_crc(frame[2:...])``); checked
  against the captured replies in tests/test_jbd.py.
- 0x03 basic info layout (big endian): 0 voltage u16 10 mV, 2 current s16 10 mA (+ = charge),
  4 remaining u16 10 mAh, 6 nominal capacity u16 10 mAh, 8 cycles u16, 10 production date u16,
  12 balance bits cells 1-16, 14 balance bits cells 17-32, 16 protection bits u16, 18 software
  version u8, 19 SoC u8 %, 20 FET status (bit 0 charge, bit 1 discharge), 21 cell count, 22 NTC
  count n, 23.. n x NTC u16 in 0.1 K with 0 °C = 2731: esphome-jbd-bms jbd_bms.cpp
  (``on_hardware_info_data_``), dbus-serialbattery lltjbd.py (``read_gen_data``, ``to_cell_bits``,
  ``to_fet_bits``), aiobmsble jbd_bms.py (``_FIELDS``, temperature offset 2731).
- Newer firmware appends fields after the NTCs (for example 9 bytes on a JBD-DP04S007, see
  syssi/esphome-jbd-bms docs/pdus/JBD-DP04S007L4S100A-BLE.txt); they are ignored here.
- 0x04: n x u16 cell voltages in mV; 0x05: ASCII model string: jbd_bms.cpp
  (``on_cell_info_data_``, ``on_hardware_version_data_``), lltjbd.py (``read_hardware_data``).
- protection bits 0-12: esphome-jbd-bms jbd_bms.cpp (``ERRORS``), dbus-serialbattery lltjbd.py
  (``to_protection_bits``). Mapping to :data:`bmsbank.schema.ALARMS` in :data:`PROTECTION_ALARMS`.
  Bit 12 (software FET lock) is a setting, not a fault: no alarm. Bits 13-15 are undocumented
  (esphome calls 13 "Charge timeout Close") and raise no alarm.
- The basic info has no dedicated MOSFET temperature (dbus-serialbattery only *assumes* NTC 1 sits
  on the FETs when there are several), so ``mosfet_temperature`` stays None and every NTC is
  reported in ``temperatures``.

Writes (``controls``): :mod:`bmsbank.services.poller.plugins.jbd.control`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Binary, Check, Field, Layout
from bmsbank.services.poller.plugins.base import (
    Link,
    Plugin,
    Query,
    alarms_from_bits,
    bits,
    require,
)
from bmsbank.services.poller.plugins.jbd import INFO
from bmsbank.services.poller.plugins.jbd.control import JbdControl, read_request

START, END = 0xDD, 0x77
STATUS_OK = 0x00
REG_BASIC, REG_CELLS, REG_HARDWARE = 0x03, 0x04, 0x05
#: register -> part name
PARTS: dict[int, str] = {REG_BASIC: "basic", REG_CELLS: "cells", REG_HARDWARE: "hardware"}
#: bytes around the data: start, first, second, length ... check (2), end
OVERHEAD = 7
DATA_AT = 4
KELVIN_0C = -273.1  # the BMS's 0 °C is 2731 x 0.1 K

#: frames both ways: DD, two bytes, length, data, 0x10000 - sum(bytes 2..-3) big endian, 77
FRAMING = Binary(
    header=bytes((START,)),
    length_offset=3,
    length_fmt="u8",
    length_adjust=OVERHEAD,
    max_length=0xFF + OVERHEAD,
    check=Check("negsum16", start=2, end=-3, at=-3, fmt="u16be"),
    trailer=bytes((END,)),
)

#: 0x03 payload; field names equal state names where the value maps 1:1
BASIC_FIELDS: tuple[Field, ...] = (
    Field("voltage", 0, "u16be", scale=0.01),
    Field("current", 2, "s16be", scale=0.01),
    Field("remaining", 4, "u16be", scale=0.01),
    Field("capacity", 6, "u16be", scale=0.01),
    Field("cycles", 8, "u16be"),
    Field("production_date", 10, "u16be"),
    Field("balance_low", 12, "u16be"),  # cells 1-16, bit 0 = cell 1
    Field("balance_high", 14, "u16be"),  # cells 17-32
    Field("protection", 16, "u16be"),
    Field("software_version", 18, "u8"),
    Field("soc", 19, "u8"),
    Field("fet_status", 20, "u8"),
    Field("cell_count", 21, "u8"),
    Field("ntc_count", 22, "u8"),
    Field("temperatures", 23, "u16be", scale=0.1, bias=KELVIN_0C, count_from="ntc_count"),
)
#: 0x04 payload: every u16 is one cell voltage
CELL_FIELDS: tuple[Field, ...] = (Field("cells", 0, "u16be", scale=0.001, count=0),)
#: 0x05 payload: the model string, as long as the frame says
HARDWARE_FIELDS: tuple[Field, ...] = (Field("hardware", 0, "str", count=0),)

#: protection bit -> alarm name (bmsbank.schema.ALARMS)
PROTECTION_ALARMS: dict[int, str] = {
    0: "high_cell_voltage",  # cell overvoltage
    1: "low_cell_voltage",  # cell undervoltage
    2: "high_voltage",  # pack overvoltage
    3: "low_voltage",  # pack undervoltage
    4: "high_charge_temperature",  # charge over-temperature
    5: "low_charge_temperature",  # charge under-temperature
    6: "high_temperature",  # discharge over-temperature
    7: "low_temperature",  # discharge under-temperature
    8: "high_charge_current",  # charge overcurrent
    9: "high_discharge_current",  # discharge overcurrent
    10: "short_circuit",  # short circuit
    11: "internal_failure",  # analog front-end IC error
    # 12: FETs locked by software (a user's choice in the JBD app, not a fault): no alarm; the
    # FET bits already block charge/discharge in the bank.
}
FET_CHARGE, FET_DISCHARGE = 0x01, 0x02


class Family(Plugin):
    """LLT/JBD smart BMS: basic info (0x03), cell voltages (0x04), model string (0x05)."""

    info = INFO
    reply_timeout: ClassVar[float] = 0.5
    framing = FRAMING
    layouts: ClassVar[Mapping[str, Layout]] = {
        "basic": Layout(BASIC_FIELDS, DATA_AT, -3),
        "cells": Layout(CELL_FIELDS, DATA_AT, -3),
        "hardware": Layout(HARDWARE_FIELDS, DATA_AT, -3),
    }
    key_at = 1  # a reply's second byte is the register it answers
    keys = PARTS

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.writer = JbdControl(self)

    def queries(self, address: int) -> Sequence[Query]:
        """Ask for basic info and cells every cycle, the model once (JBD ignores ``address``)."""
        return (
            Query("basic", read_request(REG_BASIC)),
            Query("cells", read_request(REG_CELLS)),
            Query("hardware", read_request(REG_HARDWARE), every=0, required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part of the register in byte 1; a refusal (status byte != 0) is an error.

        Raises:
            FrameError: a refused request, or an unknown register ("unexpected").

        """
        part, origin = super().identify(payload, request)
        if payload[2] != STATUS_OK:
            raise FrameError(f"jbd: BMS refused register 0x{payload[1]:02X} "
                             f"(0x{payload[2]:02X})", payload)  # fmt: skip
        return part, origin

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Reject cell data that is not whole cells."""
        size = len(payload) - OVERHEAD
        if part == "cells" and (size < 2 or size % 2):
            raise FrameError(f"jbd: {size} bytes of cell data is not whole cells", payload)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the basic, cells and (optional) hardware parts to state fields.

        Raises:
            FrameError: the basic or cells part is missing.

        """
        require(parts, "basic", "cells")
        basic = parts["basic"]
        cells = list(parts["cells"]["cells"])
        balance = basic["balance_low"] | basic["balance_high"] << 16
        fets = basic["fet_status"]
        return {
            "voltage": basic["voltage"],
            "current": basic["current"],
            "soc": float(basic["soc"]),
            "capacity": basic["capacity"],
            "remaining": basic["remaining"],
            "cycles": basic["cycles"],
            "cells": cells,
            "balancing": bits(balance, len(cells)),
            "temperatures": list(basic["temperatures"]),
            "mosfet_temperature": None,
            "charge_fet": bool(fets & FET_CHARGE),
            "discharge_fet": bool(fets & FET_DISCHARGE),
            "alarms": alarms_from_bits(basic["protection"], PROTECTION_ALARMS),
            "hardware": parts.get("hardware", {}).get("hardware", ""),
        }

    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Carry out a control action (see :mod:`.control`) and check the acks."""
        if action not in self.controls:
            super().control(link, address, action, value, parts)
        self.writer.control(link, address, action, value, parts)
