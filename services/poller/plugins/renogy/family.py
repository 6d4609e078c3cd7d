"""Renogy smart LiFePO4 batteries (RBT100LFP12S, RBT100LFP12SH-G1, ...-BT) over RS485.

Modbus RTU at 9600 baud 8N1, function 03 (read holding registers) only: requests ``addr 03
start(2) count(2) crc16`` (CRC-16/MODBUS, low byte first), replies ``addr 03 n data[n] crc16``.
A reply does not say which registers it carries, so it is decoded with the request it answers:
one register map covers every block, any read window decodes. Facts and their public sources:

- Link, function 03, the registers from 5000 and the addresses (0xF7 = 247 from the factory, 0x30
  once a Renogy hub or the DC Home app has set it; each battery of a shared bus gets its own):
  Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/renogy.py (class ``Renogy``: its
  ``command_*`` registers and ``read_soc_data``), Grmume/renogy-smart-battery README.md (a
  register scan of a RBT100LFP12SH-G1 at 247; ``device_address`` 0x1467 = 247) and
  renogy_smart_readout.py (``scan_addresses``).
- Register map 5000-5052, 5100-5131 (cell count 5000, cells 5001-5016 in 0.1 V, probe count 5017,
  probes 5018-5033 in 0.1 °C, current 5042, voltage 5043, remaining 5044-5045 and full capacity
  5046-5047 as u32 in mAh, cycles 5048, charge/discharge voltage and current limits 5049-5052,
  alarm info 5100-5105, status 1-3 at 5106-5108, serial 5110-5117, name 5122-5129, software
  version 5130-5131): charlieh0tel/renogy-rs src/registers.rs (``Register::address``,
  ``parse_value``) and src/alarm.rs (the bits of ``Status1``, ``Status2``, ``OtherAlarmInfo``),
  patman15/aiobmsble aiobmsble/bms/renogy_bms.py (``BMS._async_update``: the reads 5000 x 34,
  5042 x 7, 5100 x 8; FETs in the low byte of 5106) with its captured replies in
  tests/bms/test_renogy_bms.py.
- Current s16 in 10 mA, + = charge: aiobmsble's capture reads -0.86 A with ``battery_charging``
  False; renogy-rs, serialbattery and cyrils/renogy-bt renogybt/BatteryClient.py
  (``parse_battery_info``) read it signed / 100. Grmume's renogy_smart_readout.py scales it by
  0.1 with a sign-magnitude reading; no capture supports that, so it is not offered.
- SoC is not a register: every driver computes remaining / capacity (serialbattery
  ``read_soc_data``, aiobmsble ``battery_level``); so does :meth:`Family.state`.
- Cell probes: renogy-rs and Grmume read them unsigned; they are decoded s16 here, because an
  unsigned reading of a probe below 0 °C would be 6000 °C and a signed one of a real pack never
  exceeds 3276.7 °C (no capture below 0 °C exists to decide it otherwise).
- The discharge current limit 5052 is signed (0xD8F0 = -100.00 A in Grmume's scan, renogy-rs
  reads it i16): decoded s16 and reported as its magnitude.

Left out: the BMS, ambient and heater probes 5035-5041 (Grmume's scan reads 0 for the BMS probe of
a pack at 18 °C, so their meaning is unsure), the per-cell and per-probe alarm bits (5100-5103:
status 1 and 2 carry the same conditions for the pack), the settings 5200-5229, and every write:
no public driver writes to these batteries, so the family has no controls. The protocol reports
no balancing: every cell's flag is 0.
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
    modbus_read,
    parse_modbus_read,
)
from bmsbank.services.poller.plugins.renogy import INFO

FC_READ = 0x03
#: polled part -> (first register, count), as aiobmsble reads them where it reads them
BLOCKS: dict[str, tuple[int, int]] = {
    "cells": (5000, 34),  # cell count, 16 cells, probe count, 16 probes
    "pack": (5042, 7),  # current, voltage, remaining, capacity, cycles
    "status": (5100, 8),  # alarm info, status 1 and 2
    "limits": (5049, 4),  # the BMS's charge/discharge voltage and current limits
    "info": (5110, 22),  # serial, versions, name, software version
}
PART_AT = {start: part for part, (start, _) in BLOCKS.items()}
GENERIC = "registers"  # the part of a reply to any other read window
CELLS, PROBES = 16, 16  # register slots
#: how often the limits are read (poll cycles); they change only when a user sets them
LIMITS_EVERY = 60

#: every register the family reads (offset = register number)
REGISTERS: tuple[Field, ...] = (
    Field("cell_count", 5000, "u16be"),
    Field("cells", 5001, "u16be", scale=0.1, count=CELLS),
    Field("probe_count", 5017, "u16be"),
    Field("cell_temperatures", 5018, "s16be", scale=0.1, count=PROBES),
    Field("current", 5042, "s16be", scale=0.01),  # + = charge
    Field("voltage", 5043, "u16be", scale=0.1),
    Field("remaining", 5044, "u32be", scale=0.001),  # mAh on the wire
    Field("capacity", 5046, "u32be", scale=0.001),
    Field("cycles", 5048, "u16be"),
    Field("charge_voltage_limit", 5049, "u16be", scale=0.1),
    Field("discharge_voltage_limit", 5050, "u16be", scale=0.1),
    Field("charge_current_limit", 5051, "u16be", scale=0.01),
    Field("discharge_current_limit", 5052, "s16be", scale=0.01),  # negative on the wire
    Field("cell_voltage_alarms", 5100, "u32be"),  # bit i: cell i+1 low, bit 16+i: high
    Field("cell_temperature_alarms", 5102, "u32be"),  # bit i: probe i+1 low, 16+i: high
    Field("other_alarms", 5104, "u32be"),
    Field("status1", 5106, "u16be"),
    Field("status2", 5107, "u16be"),
    Field("serial", 5110, "str", count=16),
    Field("name", 5122, "str", count=16),
    Field("software_version", 5130, "str", count=4),
)

#: status 1 (5106): protections, reported as alarms (renogy-rs ``Status1``)
CHARGE_FET_BIT, DISCHARGE_FET_BIT = 1, 2
STATUS1_ALARMS: dict[int, str] = {
    0: "short_circuit",
    4: "high_charge_current",  # charge over current 2
    5: "high_discharge_current",  # discharge over current 2
    6: "high_voltage",  # module over voltage
    7: "low_cell_voltage",
    8: "high_cell_voltage",
    9: "high_charge_current",  # charge over current 1
    10: "high_discharge_current",  # discharge over current 1
    11: "low_temperature",  # discharge under temperature
    12: "high_temperature",  # discharge over temperature
    13: "low_charge_temperature",
    14: "high_charge_temperature",
    15: "low_voltage",  # module under voltage
}
#: status 2 (5107): warnings (renogy-rs ``Status2``)
STATUS2_WARNINGS: dict[int, str] = {
    0: "low_cell_voltage",
    1: "high_cell_voltage",
    2: "low_voltage",
    3: "high_voltage",
    4: "low_charge_temperature",
    5: "high_charge_temperature",
    6: "low_temperature",
    7: "high_temperature",
}
#: other alarm info (5104-5105, one u32): alarms (renogy-rs ``OtherAlarmInfo``)
OTHER_ALARMS: dict[int, str] = {
    19: "high_discharge_current",
    21: "high_charge_current",
    28: "low_temperature",  # environment
    29: "high_temperature",
    30: "low_temperature",  # BMS board
    31: "high_internal_temperature",
}
NEEDED = ("cell_count", "cells", "probe_count", "cell_temperatures", "current", "voltage",
          "remaining", "capacity", "cycles", "other_alarms", "status1", "status2")  # fmt: skip


def read_request(address: int, start: int, count: int) -> bytes:
    """The FC03 request for ``count`` registers from ``start``."""
    return modbus_read(address, FC_READ, start, count)


def parse_request(request: bytes) -> tuple[int, int, int] | None:
    """(address, start, count) of an FC03 read request, or None."""
    read = parse_modbus_read(request, (FC_READ,))
    return None if read is None else (read[0], read[2], read[3])


def hardware_text(f: Mapping[str, Any]) -> str:
    """The text "Renogy <name> SN <serial> v<version>" from the info block ("" without it)."""
    if not f.get("serial") and not f.get("name"):
        return ""
    text = f"Renogy {f.get('name') or '?'}"
    if f.get("serial"):
        text += f" SN {f['serial']}"
    if f.get("software_version"):
        text += f" v{f['software_version']}"
    return text


class Family(Plugin):
    """Renogy: cells, pack and status every cycle, limits now and then, the info block once."""

    info = INFO
    #: no published timing; a margin above Modbus RTU's 3.5 characters (4 ms at 9600 baud)
    command_gap: ClassVar[float] = 0.05
    reply_timeout: ClassVar[float] = 0.5  # Grmume reads with 0.2 s, serialbattery's default 0.5
    framing = ModbusRtu(functions=(FC_READ,))
    layouts: ClassVar[Mapping[str, Layout]] = {
        part: Layout(REGISTERS, 3, -2, "registers") for part in (*BLOCKS, GENERIC)
    }
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """Cells, pack, status (required); limits (every 60 cycles) and the info block (once)."""
        every = {"limits": LIMITS_EVERY, "info": 0}
        return tuple(
            Query(part, read_request(address, *BLOCKS[part]), every=every.get(part, 1),
                  required=part not in every)
            for part in ("cells", "pack", "status", "limits", "info")
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

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Merge the fields of every part and map them to state fields.

        Raises:
            FrameError: a value the state needs was in no part ("truncated"); a cell or probe
                count beyond 16, or no capacity to compute the SoC with ("malformed").

        """
        f: dict[str, Any] = {}
        for fields in parts.values():
            f.update(fields)
        missing = [name for name in NEEDED if name not in f]
        if missing:
            raise FrameError(f"{self.name}: no {', '.join(missing)} read", kind="truncated")
        n_cells, n_probes = f["cell_count"], f["probe_count"]
        if not 1 <= n_cells <= CELLS or n_probes > PROBES:
            raise FrameError(f"{self.name}: {n_cells} cells, {n_probes} probes (at most "
                             f"{CELLS} each)")  # fmt: skip
        if f["capacity"] <= 0:
            raise FrameError(f"{self.name}: capacity {f['capacity']} Ah, no SoC to compute")
        status1, status2 = f["status1"], f["status2"]
        alarms = alarms_from_bits(status2, STATUS2_WARNINGS, WARNING)
        for table, value in ((STATUS1_ALARMS, status1), (OTHER_ALARMS, f["other_alarms"])):
            for name, level in alarms_from_bits(value, table).items():
                alarms[name] = max(level, alarms.get(name, 0))
        discharge_limit = f.get("discharge_current_limit")
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": min(100.0, 100.0 * f["remaining"] / f["capacity"]),
            "capacity": f["capacity"],
            "remaining": f["remaining"],
            "cycles": f["cycles"],
            "cells": list(f["cells"][:n_cells]),
            "balancing": [0] * n_cells,  # the protocol reports no balancing
            "temperatures": list(f["cell_temperatures"][:n_probes]),
            "mosfet_temperature": None,
            "charge_fet": bool(status1 >> CHARGE_FET_BIT & 1),
            "discharge_fet": bool(status1 >> DISCHARGE_FET_BIT & 1),
            "bms_ccl": f.get("charge_current_limit"),
            "bms_dcl": abs(discharge_limit) if discharge_limit is not None else None,
            "bms_cvl": f.get("charge_voltage_limit"),
            "alarms": alarms,
            "hardware": hardware_text(f),
            "serial": f.get("serial") or "",
        }
