"""Heltec Modbus SmartBMS (YYBMS / YanYang BMS) over RS485: Modbus RTU function 03, 9600 8N1.

Requests are reads of holding registers ``addr 03 start(2) count(2) crc16``; replies ``addr 03 n
data[n] crc16`` (an exception ``addr 83 code crc16``). A reply does not say which registers it
carries, so each is decoded with the read it answers, by one register map (any window decodes).
The BMS stores its numbers byte-swapped: a 16-bit value is little-endian in its register, a
32-bit value is four bytes little-endian over two registers (minimalmodbus BYTEORDER_LITTLE);
text and byte pairs are in wire order. No vendor document is public; the facts come from:

- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/heltecmodbus.py (the same
  driver as Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/heltecmodbus.py, PR #658 by
  its author, used on real packs: issue #245 runs five 22S packs on one bus): ``HeltecModbus``,
  ``read_status_data``, ``read_soc_data``, ``read_cell_data``.
- YY = the BMS Monitor Android app's ``YYBmsDecoder`` (Kotlin package
  ``de.drick.bmsmonitor.bms_adapter.yy_bms``): the same registers over the BMS's Bluetooth
  module, read as two blocks, 0x0001 x 79 and 0x0050 x 80.

Registers (DSB unless said): 2-5 serial number (shown as four hex words joined by "-"), 7 x 13
type name (text), 38 hardware version (first byte), 41 x 6 device name (text), 52 second byte:
sensors (YY, not used), 75 first byte cell count, second byte cell type, 76 pack voltage s32 mV,
78 current s32 10 mA (+ = discharge on the wire: DSB and YY both negate it), 81.. cells u16 mV,
112 MOS and balancer temperatures (one byte each, +40 offset), 113 probe temperatures 1 and 2
(one byte each, +40), 118 rated capacity u16 0.1 Ah, 119 "actual" capacity, 120 first byte SoC
%, second byte SoH %, 126 learned capacity, 127 second byte cycle count (YY only), 139 balancing
bits u32 (bit n = cell n+1), 152 run state u32 (bit 28 charge protection, bit 29 discharge
protection: the FET is off), 156 warnings u32 (see ``WARNING_BITS``), 191/194 charge/discharge
current setting u16 10 mA (reported as the BMS's current limits).

Polling: the two blocks YY reads (the information block first: it identifies the family by its
cell count and carries voltage and current; then the cell block) every cycle, the current
settings once: 2 requests a cycle where DSB sends 9 single reads.

Where the public drivers disagree:

- Pack voltage scale: DSB divides register 76 by 1000 (mV), YY by 100. DSB runs on RS485 packs
  in Venus installations; the default is mV and the port option ``voltage_scale`` = 0.01 takes
  YY's reading.
- Which byte of register 112 is the MOSFET and which the balancer: DSB reads the second byte as
  MOS, YY the first; both are reported as the MOSFET temperature's maximum, as DSB does.
- The order of the two probe bytes of register 113 (DSB: second byte first, YY: first byte
  first): DSB's order is kept.
- FET states: YY reads bits 0/1 of register 152 as "discharge/charge enabled", DSB bits 29/28 as
  "discharge/charge protection"; DSB's reading is used.
- Warning bit 8 (short circuit): DSB raises it as a charge overcurrent alarm; here it is
  ``short_circuit``.

Frames in tests/test_heltecmodbus.py are built from this description (no raw capture of a
Heltec Modbus frame is public) and say so. No writes: DSB has none (it notes SoC at register 120
"should be" writable, untested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Field, Layout, ModbusRtu
from bmsbank.schema import WARNING
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    alarms_from_bits,
    answered_read,
    bits,
    modbus_read,
    parse_modbus_read,
)
from bmsbank.services.poller.plugins.heltecmodbus import INFO

FC_HOLDING = 0x03
#: polled part -> (first register, count): YY's two blocks and DSB's current settings
BLOCKS: dict[str, tuple[int, int]] = {
    "info": (1, 79),
    "cells": (80, 80),
    "settings": (191, 4),
}
PART_AT = {start: part for part, (start, _) in BLOCKS.items()}
#: the registers a pack answers (this family's choice of extent: 0..199 covers every map entry)
REGISTER_SPAN = (0, 199)
MAX_CELLS = 24  # YY: "24x 2 byte shorts" from register 81; 112 holds the temperatures
TEMPERATURE_OFFSET = 40  # °C subtracted from each temperature byte

REGISTERS: tuple[Field, ...] = (
    Field("serial_words", 2, "u16be", count=4),
    Field("type_name", 7, "str", count=26),
    Field("hardware_word", 38, "u16be"),
    Field("device_name", 41, "str", count=12),
    Field("cell_word", 75, "u16be"),  # first byte: cells, second: cell type
    Field("voltage_raw", 76, "s32le"),  # scaled by the voltage_scale option
    Field("current", 78, "s32le", scale=-0.01),  # + = discharge on the wire
    Field("cells", 81, "u16le", scale=0.001, count=MAX_CELLS),
    Field("board_temperatures", 112, "u16be"),  # MOS and balancer bytes
    Field("probe_temperatures", 113, "u16be"),  # probe 2 and probe 1 bytes
    Field("capacity", 118, "u16le", scale=0.1),
    Field("actual_capacity", 119, "u16le", scale=0.1),
    Field("soc_soh", 120, "u16be"),  # first byte SoC, second SoH
    Field("learned_capacity", 126, "u16le", scale=0.1),
    Field("cycle_word", 127, "u16be"),  # second byte: cycles (YY)
    Field("balance_bits", 139, "u32le"),
    Field("run_state", 152, "u32le"),
    Field("warnings", 156, "u32le"),
    Field("charge_current_setting", 191, "u16le", scale=0.01),
    Field("discharge_current_setting", 194, "u16le", scale=0.01),
)
CHARGE_PROTECTION, DISCHARGE_PROTECTION = 28, 29  # bits of the run state
#: warning bit -> alarm raised (DSB); bit 6 is a discharge overcurrent warning (level 1)
WARNING_BITS: dict[int, str] = {
    0: "high_cell_voltage",
    1: "low_cell_voltage",
    3: "high_voltage",  # the pack
    4: "low_voltage",
    5: "high_charge_current",
    7: "high_discharge_current",
    8: "short_circuit",
    9: "high_charge_temperature",
    10: "low_charge_temperature",
    11: "high_temperature",
    12: "low_temperature",
    13: "high_internal_temperature",  # MOS
    14: "low_soc",
    15: "high_voltage",  # "full protection"
    **{bit: "internal_failure" for bit in range(16, 32)},  # DSB: "any other fault"
}
DISCHARGE_CURRENT_WARNING = 6
#: fields a state needs
NEEDED = ("cell_count", "voltage", "current", "cells", "soc", "probe_temperatures",
          "board_temperatures", "run_state", "warnings")  # fmt: skip


def read_request(address: int, start: int, count: int) -> bytes:
    """The FC03 request for ``count`` holding registers from ``start``."""
    return modbus_read(address, FC_HOLDING, start, count)


def parse_request(request: bytes) -> tuple[int, int, int] | None:
    """(address, start, count) of an FC03 read request, or None."""
    read = parse_modbus_read(request, (FC_HOLDING,))
    return None if read is None else (read[0], read[2], read[3])


def serial_text(words: Sequence[int]) -> str:
    """The serial number as DSB shows it: four hex words joined by "-"."""
    return "-".join(f"{w:04x}" for w in words)


class Family(Plugin):
    """Heltec Modbus: the information and cell blocks every cycle, current settings once."""

    info = INFO
    #: DSB sleeps 30 ms after every exchange ("it seems we need it for the Heltec BMS")
    command_gap: ClassVar[float] = 0.03
    #: DSB: "400ms is long but the BMS is sometimes really slow in responding"
    reply_timeout: ClassVar[float] = 0.4
    framing = ModbusRtu(functions=(FC_HOLDING,), addresses=(1, 247))
    layouts: ClassVar[Mapping[str, Layout]] = {
        part: Layout(REGISTERS, 3, -2, "registers")
        for part in (*BLOCKS, "registers")
    }  # fmt: skip
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """Information block first (it identifies the family), cells, then the settings once."""
        return (
            Query("info", read_request(address, *BLOCKS["info"])),
            Query("cells", read_request(address, *BLOCKS["cells"])),
            Query("settings", read_request(address, *BLOCKS["settings"]), every=0, required=False),
        )

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part and first register of a reply, from the read request it answers.

        Raises:
            FrameError: no request or not an FC03 read ("unexpected"), a reply from another
                address than asked ("address"), a byte count that does not answer the read
                ("malformed").

        """
        _function, start, _count = answered_read(self.name, payload, request, (FC_HOLDING,))
        return PART_AT.get(start, "registers"), start

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Scale the voltage, split the byte pairs, join the serial; reject impossible values.

        Raises:
            FrameError: a cell count outside 1-24, or an SoC or SoH above 100 % ("malformed").

        """
        if "voltage_raw" in fields:
            fields["voltage"] = round(fields.pop("voltage_raw") * self.options["voltage_scale"], 3)
        if "current" in fields:
            fields["current"] = round(fields["current"], 2) + 0.0  # 10 mA steps, never -0.0
        if "cell_word" in fields:
            word = fields.pop("cell_word")
            fields["cell_count"], fields["cell_type"] = word >> 8, word & 0xFF
            if not 1 <= fields["cell_count"] <= MAX_CELLS:
                raise FrameError(f"{self.name}: {fields['cell_count']} cells", payload)
        if "soc_soh" in fields:
            word = fields.pop("soc_soh")
            fields["soc"], fields["soh"] = float(word >> 8), float(word & 0xFF)
            if fields["soc"] > 100.0 or fields["soh"] > 100.0:
                raise FrameError(f"{self.name}: SoC {fields['soc']:g} %, SoH "
                                 f"{fields['soh']:g} %", payload)  # fmt: skip
        if "cycle_word" in fields:
            fields["cycles"] = fields.pop("cycle_word") & 0xFF
        if "hardware_word" in fields:
            fields["hardware_version"] = fields.pop("hardware_word") >> 8
        if "serial_words" in fields:
            fields["serial"] = serial_text(fields["serial_words"])
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Merge the fields of every part and map them to state fields.

        Raises:
            FrameError: a value the state needs was in no part ("truncated").

        """
        f: dict[str, Any] = {}
        for fields in parts.values():
            f.update(fields)
        missing = [name for name in NEEDED if name not in f]
        if missing:
            raise FrameError(f"{self.name}: no {', '.join(missing)} read", kind="truncated")
        n = f["cell_count"]
        probes, board = f["probe_temperatures"], f["board_temperatures"]
        warnings, run_state = f["warnings"], f["run_state"]
        alarms = alarms_from_bits(warnings, WARNING_BITS)
        if warnings >> DISCHARGE_CURRENT_WARNING & 1 and not alarms["high_discharge_current"]:
            alarms["high_discharge_current"] = WARNING
        capacity = f.get("capacity")
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "soh": f.get("soh"),
            "capacity": capacity,
            "remaining": None if capacity is None else round(capacity * f["soc"] / 100.0, 2),
            "cycles": f.get("cycles"),
            "cells": f["cells"][:n],
            "balancing": bits(f.get("balance_bits", 0), n),
            # DSB's order: probe 1 is the second byte
            "temperatures": [
                float((probes & 0xFF) - TEMPERATURE_OFFSET),
                float((probes >> 8) - TEMPERATURE_OFFSET),
            ],
            # MOS and balancer: the drivers disagree which byte is which; the hotter, as DSB
            "mosfet_temperature": float(max(board & 0xFF, board >> 8) - TEMPERATURE_OFFSET),
            "charge_fet": not run_state >> CHARGE_PROTECTION & 1,
            "discharge_fet": not run_state >> DISCHARGE_PROTECTION & 1,
            "bms_ccl": f.get("charge_current_setting"),
            "bms_dcl": f.get("discharge_current_setting"),
            "alarms": alarms,
            "hardware": self.hardware(f),
            "serial": f.get("serial", ""),
        }

    def hardware(self, f: Mapping[str, Any]) -> str:
        """``Heltec <type name> (<device name>) hw <version>`` with what was read."""
        text = " ".join(t for t in ("Heltec", f.get("type_name", "")) if t)
        if f.get("device_name"):
            text += f" ({f['device_name']})"
        if f.get("hardware_version") is not None:
            text += f" hw {f['hardware_version']}"
        return text
