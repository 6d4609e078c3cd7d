"""EG4 LL batteries (EG4 LL / LL v2 12-48 V packs) over RS485, Modbus RTU at 9600 baud 8N1.

Requests are reads of holding registers ``addr 03 start(2) count(2) crc16`` (CRC-16/MODBUS, low
byte first); replies ``addr 03 n data[n] crc16``; an exception ``addr 83 code crc16``. A reply does
not say which registers it carries, so every reply is decoded with the request it answers: one
register map covers every block, any read window decodes. Facts and their public sources (short
names):

- PDF = "EG4-LL Battery MODBUS Protocol between UPS(SMPS) and BMS" V01.06, in gonzalop/wombatt
  docs/ref/EG4-LL-MODBUS-Communication-Protocol_ENG-correct-1.pdf: 9600 baud, 100 ms between
  reads, addresses 0x01-0x0F and 0x10 for the master module (DIP switch), function 03, and the
  register map: 0 voltage 10 mV, 1 current s16 10 mA (+ = charge), 2-17 cells mV, 18 PCB
  temperature, 19 average, 20 maximum (°C), 21 remaining capacity, 22 max charging current,
  23 SoH %, 24 SoC %, 25 status (low byte 1 charging, 2 discharging, 4 protect, 8 charge limit;
  high byte 0x80 heater on), 26 warnings and 27 protections (same bits, below), 28 errors (bit 0
  voltage, 1 temperature, 2 current flow, 4 cell unbalance), 29-30 cycles u32, 31-32 full capacity
  u32 in mAs, 33-35 six probes of one signed byte each (°C), 36 cell count, 37 design capacity
  0.1 Ah, 38 balancing (bit n = cell n+1), 105-116 model, 117-119 firmware, 120-127 serial (ASCII).
- DSB = mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/eg4_ll.py (``EG4_LL``:
  ``cellCommandRoot`` 0x0000 x 0x27, ``hwCommandRoot`` 0x0069 x 0x17, ``read_cell_details``,
  ``read_eg4ll_command``) and Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/eg4_ll.py
  (the warning and protection bit names); WOM = gonzalop/wombatt internal/batteries/eg4llv2.go
  (``EG4ModbusBatteryInfo``) with the RS485 capture in internal/batteries/batteries_test.go;
  AIO = patman15/aiobmsble aiobmsble/bms/eg4_bms.py with tests/bms/test_eg4_bms.py.
- Slow replies: DSB waits 1.5 s for the identity block, 2.0 s for the status block and 2.5 s for
  the settings block (``read_eg4ll_command``) with a 2 s port timeout; hence ``reply_timeout``.

Where the drivers disagree:

- Current scale. DSB and WOM read register 1 in 10 mA, as the PDF says; AIO in 100 mA. The
  captures decide the default: WOM's (a 48 V 100 Ah pack, status "charging", SoC 97 %, cells
  3.353-3.355 V) reads 120, 1.20 A of tail current rather than 12 A, which would hold a 97 % cell
  well above 3.36 V; Louisvdw/dbus-serialbattery issue #1091 logs 4.55 A "charging" at SoC 100 %
  with 3.39 V cells (400 of 400 Ah remaining), a tail current again. AIO's capture (a Bluetooth
  12 V pack; the reference app showed -6.2 A) reads -62, and a Bluetooth pack in aiobmsble issue
  #48 reports 3698 remaining at SoC 92 % of 400 Ah: that firmware counts in tenths. The port
  option ``current_scale = 0.1`` reads such a pack (current 0.1 A, remaining 0.1 Ah, charge limit
  0.1 A); the default 0.01 reads current in 10 mA, remaining in Ah and the limit in A.
- Temperatures. DSB reports probes 1 and 2 always and 3 and 4 when not 0 (probes 5 and 6 read 0,
  WOM); so does this family, with the PCB temperature (register 18) as the MOSFET temperature.
  WOM notes registers 19 and 20 are swapped against the PDF; neither is used.
- FET states are not in the protocol. DSB infers them from alarms; this family from the
  protection bits: charging stops on pack or cell over-voltage, charge over-current or charge
  temperature, discharging on pack or cell under-voltage, discharge over-current or discharge
  temperature, both on a short circuit.

Left out: the settings block 0x002D x 0x5B (protection thresholds) and writes: no public driver
writes to these packs, so the family has no controls.
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
from bmsbank.services.poller.plugins.eg4_ll import INFO

FC_READ = 0x03
#: polled part -> (first register, count), as DSB reads them
BLOCKS: dict[str, tuple[int, int]] = {
    "status": (0x0000, 0x27),
    "identity": (0x0069, 0x17),
}
PART_AT = {start: part for part, (start, _) in BLOCKS.items()}
GENERIC = "registers"  # the part of a reply to any other read window
CELLS, PROBES = 16, 6  # register slots
REPORTED_PROBES = 4  # probes 5 and 6 read 0 (WOM)
MAS_PER_AH = 3_600_000.0

#: every register the family reads (offset = register number); the scaled values of the raw
#: ones follow the port option ``current_scale`` (see :meth:`Family.refine`)
REGISTERS: tuple[Field, ...] = (
    Field("voltage", 0, "u16be", scale=0.01),
    Field("current_raw", 1, "s16be"),  # + = charge
    Field("cells", 2, "u16be", scale=0.001, count=CELLS),
    Field("pcb_temperature", 18, "s16be", scale=1.0),
    Field("average_temperature", 19, "s16be", scale=1.0),
    Field("max_temperature", 20, "s16be", scale=1.0),
    Field("remaining_raw", 21, "u16be"),
    Field("charge_current_limit_raw", 22, "u16be"),
    Field("soh", 23, "u16be"),
    Field("soc", 24, "u16be"),
    Field("status", 25, "u16be"),
    Field("warning", 26, "u16be"),
    Field("protection", 27, "u16be"),
    Field("error", 28, "u16be"),
    Field("cycles", 29, "u32be"),
    Field("full_capacity", 31, "u32be", scale=1 / MAS_PER_AH),  # mAs on the wire
    Field("probe_words", 33, "u16be", count=PROBES // 2),  # two signed bytes per register
    Field("cell_count", 36, "u16be"),
    Field("design_capacity", 37, "u16be", scale=0.1),
    Field("balancing_bits", 38, "u16be"),
    Field("model", 105, "str", count=24),
    Field("firmware", 117, "str", count=6),
    Field("serial", 120, "str", count=16),
)

#: warning (26) and protection (27) bits (PDF); bit 13 is "float stopped" in the warnings
ALARM_BITS: dict[int, str] = {
    0: "high_voltage",  # pack over-voltage
    1: "high_cell_voltage",
    2: "low_voltage",  # pack under-voltage
    3: "low_cell_voltage",
    4: "high_charge_current",
    5: "high_discharge_current",
    6: "high_temperature",  # abnormal ambient temperature
    7: "high_internal_temperature",  # MOS overheating
    8: "high_charge_temperature",
    9: "high_temperature",  # discharge over-temperature
    10: "low_charge_temperature",
    11: "low_temperature",  # discharge under-temperature
    12: "low_soc",  # low capacity
}
PROTECTION_BITS: dict[int, str] = {**ALARM_BITS, 13: "short_circuit"}
#: error code (28) bits
ERROR_BITS: dict[int, str] = {
    0: "internal_failure",  # voltage error
    1: "internal_failure",  # temperature error
    2: "internal_failure",  # current flow error
    4: "cell_imbalance",
}
SHORT_CIRCUIT = 1 << 13
#: protection bits that stop charging / discharging (see the module docstring)
CHARGE_STOPS = 1 << 0 | 1 << 1 | 1 << 4 | 1 << 8 | 1 << 10 | SHORT_CIRCUIT
DISCHARGE_STOPS = 1 << 2 | 1 << 3 | 1 << 5 | 1 << 9 | 1 << 11 | SHORT_CIRCUIT
NEEDED = ("voltage", "current", "cells", "cell_count", "soc", "remaining", "cycles",
          "probe_temperatures", "warning", "protection", "error")  # fmt: skip


def read_request(address: int, start: int, count: int) -> bytes:
    """The FC03 request for ``count`` registers from ``start``."""
    return modbus_read(address, FC_READ, start, count)


def parse_request(request: bytes) -> tuple[int, int, int] | None:
    """(address, start, count) of an FC03 read request, or None."""
    read = parse_modbus_read(request, (FC_READ,))
    return None if read is None else (read[0], read[2], read[3])


def signed_byte(value: int) -> int:
    """A byte as a two's complement number."""
    return value - 256 if value > 127 else value


def hardware_text(f: Mapping[str, Any]) -> str:
    """The text "EG4 LL <model> <firmware>" from the identity block ("" without it)."""
    words = [w for w in (f.get("model"), f.get("firmware")) if w]
    return " ".join(["EG4 LL", *words]) if words else ""


class Family(Plugin):
    """EG4 LL: the status block every cycle, the identity block once."""

    info = INFO
    #: the PDF asks for 100 ms between reads
    command_gap: ClassVar[float] = 0.1
    #: replies take up to seconds: DSB waits 2.0 s for the status block (module docstring)
    reply_timeout: ClassVar[float] = 2.0
    framing = ModbusRtu(functions=(FC_READ,))
    layouts: ClassVar[Mapping[str, Layout]] = {
        part: Layout(REGISTERS, 3, -2, "registers") for part in (*BLOCKS, GENERIC)
    }
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """The status block (required; it identifies the pack), then the identity block once."""
        return (
            Query("status", read_request(address, *BLOCKS["status"])),
            Query("identity", read_request(address, *BLOCKS["identity"]), every=0,
                  required=False),
        )  # fmt: skip

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part and first register of a reply, from the request it answers.

        Raises:
            FrameError: no request or not an FC03 read ("unexpected"), a reply from another
                address than asked ("address"), another function or byte count ("malformed").

        """
        _function, start, count = answered_read(self.name, payload, request, (FC_READ,))
        part = PART_AT.get(start, GENERIC)
        if part != GENERIC and BLOCKS[part][1] != count:
            part = GENERIC  # another window from a polled block's first register
        return part, start

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Scale current, remaining capacity and charge limit; split the probe bytes."""
        scale = self.options["current_scale"]
        tenths = scale == 0.1  # that firmware counts capacity and limit in tenths too
        if "current_raw" in fields:
            fields["current"] = round(fields.pop("current_raw") * scale, 3)
        if "remaining_raw" in fields:
            raw = fields.pop("remaining_raw")
            fields["remaining"] = raw / 10 if tenths else float(raw)
        if "charge_current_limit_raw" in fields:
            raw = fields.pop("charge_current_limit_raw")
            fields["charge_current_limit"] = raw / 10 if tenths else float(raw)
        if "probe_words" in fields:
            words = fields.pop("probe_words")
            fields["probe_temperatures"] = [
                float(signed_byte(w >> shift & 0xFF)) for w in words for shift in (8, 0)
            ]
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Merge the fields of every part and map them to state fields.

        Raises:
            FrameError: a value the state needs was in no part ("truncated"); a cell count
                outside 1-16 ("malformed").

        """
        f: dict[str, Any] = {}
        for fields in parts.values():
            f.update(fields)
        missing = [name for name in NEEDED if name not in f]
        if missing:
            raise FrameError(f"{self.name}: no {', '.join(missing)} read", kind="truncated")
        n_cells = f["cell_count"]
        if not 1 <= n_cells <= CELLS:
            raise FrameError(f"{self.name}: {n_cells} cells (1-{CELLS})")
        probes = f["probe_temperatures"][:REPORTED_PROBES]
        temperatures = probes[:2] + [t for t in probes[2:] if t != 0]
        protection = f["protection"]
        alarms = alarms_from_bits(f["warning"], ALARM_BITS, WARNING)
        for table, value in ((PROTECTION_BITS, protection), (ERROR_BITS, f["error"])):
            for name, level in alarms_from_bits(value, table).items():
                alarms[name] = max(level, alarms.get(name, 0))
        capacity = f.get("full_capacity") or f.get("design_capacity") or 0.0
        limit = f.get("charge_current_limit")
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "soh": f.get("soh"),
            "capacity": capacity,
            "remaining": f["remaining"],
            "cycles": f["cycles"],
            "cells": list(f["cells"][:n_cells]),
            "balancing": bits(f.get("balancing_bits") or 0, n_cells),
            "temperatures": temperatures,
            "mosfet_temperature": f.get("pcb_temperature"),
            "charge_fet": not protection & CHARGE_STOPS,
            "discharge_fet": not protection & DISCHARGE_STOPS,
            "bms_ccl": limit or None,  # 0: not reported
            "bms_dcl": None,
            "bms_cvl": None,
            "alarms": alarms,
            "hardware": hardware_text(f),
            "serial": f.get("serial") or "",
        }
