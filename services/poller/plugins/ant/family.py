"""ANT BMS (ANT-BLE16ZMUB and older boards) on the legacy UART protocol at 19200 baud 8N1.

The host sends the six bytes ``DB DB 00 00 00 00``; the BMS answers with one 140-byte frame
``AA 55 AA FF | data | sum16``, big endian throughout. The check is the u16 sum of bytes 4-137
(the header excluded), big endian at 138. The protocol has no address: one BMS per port. Facts and
their public sources ("OLD" = syssi/esphome-ant-bms components/ant_bms_old/ant_bms_old.cpp,
``on_status_data_`` and ``parse_ant_bms_old_byte_``; "SB" = Louisvdw/dbus-serialbattery
etc/dbus-serialbattery/bms/ant.py, ``ANT.read_status_data``):

- request ``DB DB 00 00 00 00``, 19200 baud, fixed 140-byte reply: SB (``command_general``,
  ``LENGTH_FIXED``), Louisvdw/dbus-serialbattery issue #5 (19200 "for the majority of users");
  replies to it: syssi/esphome-ant-bms docs/pdus/model2019-req-dbdb00000000.txt and
  model2021-req-dbdb00000000.txt. OLD polls with ``5A 5A 00 00 01 01`` and gets the same frame.
- header ``AA 55 AA FF`` and the checksum over bytes 4-137: OLD (``chksum_``), recomputed on every
  capture in tests/test_ant.py. SB checks only the length.
- field offsets (OLD's byte table; SB agrees where it reads them): 4 voltage 0.1 V; 6 32 cells
  0.001 V; 70 current s32 0.1 A; 74 SoC %; 75 capacity and 79 remaining in 0.000001 Ah; 83 cycle
  capacity 0.001 Ah (Ah moved so far); 87 uptime s; 91 six temperatures s16 1 °C; 103 / 104 charge
  / discharge FET status codes; 105 balancer status; 111 power s32 W; 115-122 max/min cell and
  average; 123 cell count; 132 balancing bit mask. OLD writes "Bit 1 = Cell 1"; read here as the
  lowest bit = cell 1 (no capture shows a cell balancing, so this order is unconfirmed).
- FET status codes (1 = on, 0 = off, others: the protection that switched it off) and their
  meaning: OLD ``CHARGE_MOSFET_STATUS`` / ``DISCHARGE_MOSFET_STATUS``; SB maps a few of them to its
  protection flags in the same way (charge 2 over-voltage, 3 over-current; discharge 2 and 5 under-
  voltage, 3 over-current). A code is reported as an alarm, and the FET as off.
- cycles: SB divides the cycle capacity (83) by the capacity (75); the protocol has no counter.

Where they disagree:

- the current's sign. OLD publishes the wire value (+ = discharge for a Victron); SB negates it.
  The model2019 capture decides: frames taken one after the other show the remaining capacity
  falling (68.770 -> 68.679 Ah), the cycle capacity growing, a power of +390 W at 48.8 V and +8.0 A
  on the wire: a discharging pack reads positive. Louisvdw/dbus-serialbattery issue #5 says the
  same of the ANT app ("delivering positive current when it is discharged"). So + on the wire is
  discharge and the state's current is its negation; ``invert_current`` reads it as OLD does.
- temperatures: OLD reads six s16 at 91, 93 ... 101; SB reads two single bytes at 96 and 98 (the
  low bytes of the third and fourth probe). OLD's table is used; a probe that is not fitted reads
  -40 °C (0xFFD8 in the model2021 capture) and is left out. Which probe is the MOSFET's is not
  published: all fitted probes are reported as temperatures, no MOSFET temperature.

Left out: writes. OLD switches the FETs and balancer with ``A5 A5 reg value sum`` after an optional
password (four more writes) and no reply is documented, so a write could never be confirmed; SB
has none. The capacity registers SB mentions (``5A 5A 1F``/``20``) are not needed: 75 has it.
The protocol reports no serial number or version string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Binary, Check, Field, Layout
from bmsbank.schema import ALARM
from bmsbank.services.poller.plugins.ant import INFO
from bmsbank.services.poller.plugins.base import Plugin, Query, bits, require

HEADER = b"\xaa\x55\xaa\xff"
FRAME_LENGTH = 140
READ_STATUS = b"\xdb\xdb\x00\x00\x00\x00"
MAX_CELLS, PROBES = 32, 6
NO_PROBE = -40  # °C, what an unfitted probe reads
FET_ON = 1

FRAMING = Binary(
    header=HEADER,
    fixed_length=FRAME_LENGTH,
    check=Check("sum16", start=len(HEADER), end=-2, at=-2, fmt="u16be"),
)
#: the request as the BMS sees it: ``DB DB reg value(2) sum8(reg, value)`` (OLD ``send_``)
REQUEST_FRAMING = Binary(
    header=READ_STATUS[:2], fixed_length=6, check=Check("sum8", start=2, end=-1, at=-1)
)

#: the status frame; offsets from the frame start (the payload is the whole frame)
FIELDS: tuple[Field, ...] = (
    Field("voltage", 4, "u16be", scale=0.1),
    Field("cells", 6, "u16be", scale=0.001, count=MAX_CELLS),
    Field("discharge_current", 70, "s32be", scale=0.1),  # A, + = discharge on the wire
    Field("soc", 74, "u8"),
    Field("capacity", 75, "u32be", scale=1e-6),  # Ah
    Field("remaining", 79, "u32be", scale=1e-6),  # Ah
    Field("cycle_capacity", 83, "u32be", scale=0.001),  # Ah moved since new
    Field("uptime", 87, "u32be"),  # s
    Field("temperatures", 91, "s16be", scale=1.0, count=PROBES, unknown=NO_PROBE),
    Field("charge_status", 103, "u8"),
    Field("discharge_status", 104, "u8"),
    Field("balancer_status", 105, "u8"),
    Field("power", 111, "s32be"),  # W, same sign as the wire current
    Field("cell_max_number", 115, "u8"),
    Field("cell_max", 116, "u16be", scale=0.001),
    Field("cell_min_number", 118, "u8"),
    Field("cell_min", 119, "u16be", scale=0.001),
    Field("cell_average", 121, "u16be", scale=0.001),
    Field("cell_count", 123, "u8"),
    Field("balancing_bits", 132, "u32be"),
)

#: charge FET status code -> alarm (OLD's texts); 0 off, 1 on, 4 full, 15 switched off: none
CHARGE_ALARMS: dict[int, str] = {
    2: "high_cell_voltage",  # overcharge protection (cell)
    3: "high_charge_current",
    5: "high_voltage",  # "total overpressure": pack over-voltage
    6: "high_charge_temperature",  # battery over temperature
    7: "high_internal_temperature",  # MOSFET over temperature
    8: "internal_failure",  # abnormal current
    9: "internal_failure",  # balance wire off
    10: "high_internal_temperature",  # main board over temperature
    13: "internal_failure",  # discharge MOSFET abnormality
}
#: discharge FET status code -> alarm; 0 off, 1 on, 11 "charge MOSFET on", 15 switched off: none
DISCHARGE_ALARMS: dict[int, str] = {
    2: "low_cell_voltage",  # overdischarge protection (cell)
    3: "high_discharge_current",
    5: "low_voltage",  # total (pack) under-voltage
    6: "high_temperature",  # battery over temperature
    7: "high_internal_temperature",
    8: "internal_failure",
    9: "internal_failure",
    10: "high_internal_temperature",
    12: "short_circuit",
    13: "internal_failure",
    14: "internal_failure",  # start exception
}
ALARM_NAMES = tuple(dict.fromkeys([*CHARGE_ALARMS.values(), *DISCHARGE_ALARMS.values()]))


class Family(Plugin):
    """ANT legacy protocol: one status request per cycle, one fixed-length reply."""

    info = INFO
    command_gap: ClassVar[float] = 0.05  # no source gives one; a margin between exchanges
    #: 140 bytes take 73 ms at 19200 baud; SB waits for its default serial timeout
    reply_timeout: ClassVar[float] = 0.8
    framing = FRAMING
    layouts: ClassVar[Mapping[str, Layout]] = {"status": Layout(FIELDS, 0, FRAME_LENGTH - 2)}
    key_at = 3  # the function byte of the header, 0xFF "read all"
    keys: ClassVar[Mapping[int, str]] = {HEADER[3]: "status"}

    def queries(self, address: int) -> Sequence[Query]:
        """The status request (the protocol has no address)."""
        return (Query("status", READ_STATUS),)

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Trim the cells to the cell count; current with + = charge (or as the option says).

        Raises:
            FrameError: a cell count outside 1-32 or a SoC above 100 % ("malformed").

        """
        count, soc = fields["cell_count"], fields["soc"]
        if not 1 <= count <= MAX_CELLS or soc > 100:
            raise FrameError(f"{self.name}: {count} cells, SoC {soc} %", payload)
        fields["cells"] = fields["cells"][:count]
        wire = fields["discharge_current"]
        fields["current"] = wire if self.options["invert_current"] else 0.0 - wire
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the status frame to state fields.

        Raises:
            FrameError: the status reply is missing ("truncated").

        """
        require(parts, "status")
        f = parts["status"]
        cells = list(f["cells"])
        capacity, charge, discharge = f["capacity"], f["charge_status"], f["discharge_status"]
        alarms = dict.fromkeys(ALARM_NAMES, 0)
        for code, table in ((charge, CHARGE_ALARMS), (discharge, DISCHARGE_ALARMS)):
            if code in table:
                alarms[table[code]] = ALARM
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": float(f["soc"]),
            "capacity": capacity,
            "remaining": f["remaining"],
            "cycles": int(f["cycle_capacity"] // capacity) if capacity > 0 else 0,
            "cells": cells,
            "balancing": bits(f["balancing_bits"], len(cells)),
            "temperatures": [t for t in f["temperatures"] if t is not None],
            "charge_fet": charge == FET_ON,
            "discharge_fet": discharge == FET_ON,
            "alarms": alarms,
            "hardware": f"ANT BMS {len(cells)}S",
        }
