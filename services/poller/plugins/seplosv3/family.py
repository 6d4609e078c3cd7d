"""Seplos v3 BMS (Seplos 10E/16E "BMS V3", XZH-ElecTech) over RS485, Modbus RTU at 19200 baud 8N1.

Requests are standard reads ``addr fc start(2) count(2) crc16`` (CRC-16/MODBUS, low byte first);
replies ``addr fc n data[n] crc16``; an exception ``addr fc|0x80 code crc16``. A reply does not
say which registers it carries, so every reply is decoded with the request it answers: one
register map (FC04) and one coil map (FC01) cover every block, any read window decodes. Facts and
their public sources:

- Link, framing, function codes, exception codes, device ids (BMS 0x00-0x7F), "a BMS answers only
  for its own address", the PIA/PIB/PIC register and coil tables and the worked examples (PIA,
  PIB, PIC at address 0): "SEPLOS-3.0RS485BMS Modbus RTU Protocol" V0.1 (2023-02-09),
  Hevak/seplos_v3_sniffer Dokumente/SEPLOS-3.0RS485BMS.Modbus.RTU.Protocol.pdf, p.3-8, p.13-15.
- SPA 0x1300 (settings: NTC count 0x1300, cells 0x1301, rated capacity 0x1358, PCS request charge
  voltage 0x1365 in 10 mV, charge/discharge current 0x1366/0x1367 in A) and SFA: syssi/esphome-
  seplos-bms docs/XZH BMS Modbus-RTU Protocol.md. 0x1367 is signed on the wire (0xFF4C = -180 A
  in syssi/esphome-seplos-bms docs/pdus/v3/SG16S200A-SP57B-A-all-frames.txt, 65396 = -140 A in
  Louisvdw/dbus-serialbattery issue #1056), so it is decoded s16 and never used as a limit.
- The poll (SPA 0x6A, PIA 0x12, PIB 0x1A, PIC 0x90 at 19200 baud, addresses 0-15 scanned, 0 by
  default): mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/seplosv3.py; a 106-register
  SPA read answered on a real pack: Louisvdw/dbus-serialbattery issue #1056. The master pack of a
  group polls PIA 0x12 / PIB 0x1A / PIC 0x90 itself (syssi/esphome-seplos-bms issue #112), so a
  second master on that bus collides (issue #80): poll a single pack, or packs on their own bus.
- Current s16 10 mA, + = charge: PIC state "charge" with +66 A (issue #112), "discharge" with
  -1.37 A (SG16S200A capture). Temperatures 0.1 K with 0 °C = 2731 (PDF p.14 "2944-2731=21.3",
  patman15/aiobmsble tests/bms/test_seplos_bms.py expectations); unused probes read 2731.
- Coils 0x1240-0x128F (PIC bytes 8-17): TB09 state, TB02 voltage, TB03 cell temperature, TB04
  ambient/power temperature, TB05/TB16 current, TB06 capacity, TB07 FETs (bit 0 discharge, bit 1
  charge), TB08, TB15 hard faults (PDF p.7-8). "Alarm" bits are warnings, "protect" bits alarms.
- SFA (0x1400) holds the protection functions' on/off switches, not their states (XZH): not read;
  serialbattery's seplosv3.py reads it as alarms, which is wrong.

Left out: VIA strings (0x1700, byte order unclear), EIA/EIB/EIC (the ECU's system aggregate over
BLE), writes (SCA).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Field, Layout, ModbusRtu
from bmsbank.services.poller.plugins.base import (
    Plugin,
    Query,
    answered_read,
    graded_alarms,
    modbus_read,
    parse_modbus_read,
)
from bmsbank.services.poller.plugins.seplosv3 import INFO

FC_COILS, FC_INPUTS = 0x01, 0x04
#: polled part -> (function, first register or coil, count) as serialbattery and the master send
BLOCKS: dict[str, tuple[int, int, int]] = {
    "pia": (FC_INPUTS, 0x1000, 0x12),
    "pib": (FC_INPUTS, 0x1100, 0x1A),
    "pic": (FC_COILS, 0x1200, 0x90),
    "spa": (FC_INPUTS, 0x1300, 0x6A),
}
PART_AT = {(fc, start): part for part, (fc, start, _) in BLOCKS.items()}
#: part of a reply to any other read window, by function
GENERIC = {FC_INPUTS: "registers", FC_COILS: "coils"}
KELVIN_0C = -273.1  # 0.1 K with 0 °C = 2731
CELLS, PROBES = 16, 4  # register slots

#: every FC04 register the family reads (offset = register number)
REGISTERS: tuple[Field, ...] = (
    # PIA
    Field("voltage", 0x1000, "u16be", scale=0.01),
    Field("current", 0x1001, "s16be", scale=0.01),  # + = charge
    Field("remaining", 0x1002, "u16be", scale=0.01),
    Field("capacity", 0x1003, "u16be", scale=0.01),  # full capacity, Ah
    Field("discharged_total", 0x1004, "u16be", scale=10.0),  # Ah (10 Ah steps)
    Field("soc", 0x1005, "u16be", scale=0.1),
    Field("soh", 0x1006, "u16be", scale=0.1),
    Field("cycles", 0x1007, "u16be"),
    Field("cell_average", 0x1008, "u16be", scale=0.001),
    Field("temperature_average", 0x1009, "u16be", scale=0.1, bias=KELVIN_0C),
    Field("cell_max", 0x100A, "u16be", scale=0.001),
    Field("cell_min", 0x100B, "u16be", scale=0.001),
    Field("temperature_max", 0x100C, "u16be", scale=0.1, bias=KELVIN_0C),
    Field("temperature_min", 0x100D, "u16be", scale=0.1, bias=KELVIN_0C),
    Field("max_discharge_current", 0x100F, "u16be"),  # A, the BMS's suggestion
    Field("max_charge_current", 0x1010, "u16be"),  # A
    # PIB
    Field("cells", 0x1100, "u16be", scale=0.001, count=CELLS),
    Field("cell_temperatures", 0x1110, "u16be", scale=0.1, bias=KELVIN_0C, count=PROBES),
    Field("ambient_temperature", 0x1118, "u16be", scale=0.1, bias=KELVIN_0C),
    Field("mosfet_temperature", 0x1119, "u16be", scale=0.1, bias=KELVIN_0C),
    # SPA (settings)
    Field("ntc_count", 0x1300, "u16be"),
    Field("cell_count", 0x1301, "u16be"),
    Field("rated_capacity", 0x1358, "u16be", scale=0.01),
    Field("charge_voltage_limit", 0x1365, "u16be", scale=0.01),
    Field("charge_current_limit", 0x1366, "u16be"),  # A
    Field("discharge_current_limit", 0x1367, "s16be"),  # A, negative on the wire
)
STATUS = 0x1240  # first coil of TB09 .. TB15
#: every FC01 coil the family reads (offset = coil number)
COILS: tuple[Field, ...] = (
    Field("cell_low_voltage", 0x1200, "bit", count=CELLS),  # per-cell warnings
    Field("cell_high_voltage", 0x1210, "bit", count=CELLS),
    Field("probe_low_temperature", 0x1220, "bit", count=8),
    Field("probe_high_temperature", 0x1228, "bit", count=8),
    Field("balancing", 0x1230, "bit", count=CELLS),
    Field("status", STATUS, "bit", count=80),  # bit k = coil 0x1240 + k
)
DISCHARGE_FET, CHARGE_FET = 0x1278, 0x1279  # TB07 bits 0/1

#: coil -> alarm name, "alarm" bits (reported as warnings)
WARNING_COILS: dict[int, str] = {
    0x1248: "high_cell_voltage",  # TB02 b0 cell high voltage alarm
    0x124A: "low_cell_voltage",  # b2
    0x124C: "high_voltage",  # b4 pack
    0x124E: "low_voltage",  # b6 pack
    0x1250: "high_charge_temperature",  # TB03 b0
    0x1252: "low_charge_temperature",  # b2
    0x1254: "high_temperature",  # b4 discharge
    0x1256: "low_temperature",  # b6 discharge
    0x1258: "high_temperature",  # TB04 b0 ambient
    0x125A: "low_temperature",  # b2 ambient
    0x125C: "high_internal_temperature",  # b4 power (MOSFET)
    0x1260: "high_charge_current",  # TB05 b0
    0x1263: "high_discharge_current",  # b3
    0x1272: "low_soc",  # TB06 b2 SOC alarm
    0x1274: "cell_imbalance",  # b4 cell difference alarm
    0x1280: "low_soc",  # TB08 b0 low SOC alarm
}
#: coil -> alarm name, "protect" bits and hard faults (reported as alarms)
PROTECTION_COILS: dict[int, str] = {
    0x1249: "high_cell_voltage",  # TB02 b1 cell overvoltage protection
    0x124B: "low_cell_voltage",  # b3
    0x124D: "high_voltage",  # b5 pack
    0x124F: "low_voltage",  # b7 pack
    0x1251: "high_charge_temperature",  # TB03 b1
    0x1253: "low_charge_temperature",  # b3
    0x1255: "high_temperature",  # b5 discharge
    0x1257: "low_temperature",  # b7 discharge
    0x1259: "high_temperature",  # TB04 b1 ambient
    0x125B: "low_temperature",  # b3 ambient
    0x125D: "high_internal_temperature",  # b5 power (MOSFET)
    0x1261: "high_charge_current",  # TB05 b1
    0x1262: "high_charge_current",  # b2 second level
    0x1264: "high_discharge_current",  # b4
    0x1265: "high_discharge_current",  # b5 second level
    0x1266: "short_circuit",  # b6 output short circuit
    0x1268: "short_circuit",  # TB16 b0 short circuit latch-up
    0x126A: "high_charge_current",  # b2 second-level charge latch-up
    0x126B: "high_discharge_current",  # b3 second-level discharge latch-up
    0x1273: "low_soc",  # TB06 b3 SOC protection
    0x1285: "low_soc",  # TB08 b5 under-SOC protection
    0x1288: "internal_failure",  # TB15 b0 NTC fault
    0x1289: "internal_failure",  # b1 AFE
    0x128A: "internal_failure",  # b2 charge MOSFET
    0x128B: "internal_failure",  # b3 discharge MOSFET
    0x128C: "cell_imbalance",  # b4 cell fault (large voltage difference)
    0x128D: "internal_failure",  # b5 broken sense wire
    0x128E: "internal_failure",  # b6 key
    0x128F: "internal_failure",  # b7 aerosol
}
#: the same tables as bit numbers of ``status``
WARNING_BITS = {coil - STATUS: name for coil, name in WARNING_COILS.items()}
PROTECTION_BITS = {coil - STATUS: name for coil, name in PROTECTION_COILS.items()}
#: fields a state needs (PIA, PIB, PIC)
NEEDED = ("voltage", "current", "remaining", "capacity", "soc", "cycles", "cells",
          "cell_temperatures", "balancing", "status")  # fmt: skip


def read_request(address: int, function: int, start: int, count: int) -> bytes:
    """The FC01/FC04 request for ``count`` coils or input registers from ``start``."""
    return modbus_read(address, function, start, count)


def parse_request(request: bytes) -> tuple[int, int, int, int] | None:
    """(address, function, start, count) of an FC01/FC04 read request, or None."""
    return parse_modbus_read(request, tuple(GENERIC))


def reply_size(function: int, count: int) -> int:
    """Data bytes of the reply to a read of ``count`` registers (FC04) or coils (FC01)."""
    return 2 * count if function == FC_INPUTS else (count + 7) // 8


def as_int(flags: Sequence[int]) -> int:
    """A list of coils (first = bit 0) as an integer."""
    return sum(bit << i for i, bit in enumerate(flags))


class Family(Plugin):
    """Seplos v3: PIA, PIB and PIC every cycle, SPA every ``settings_every`` cycles."""

    info = INFO
    #: the documents give no timing; a margin above Modbus RTU's 3.5 characters (1.8 ms)
    command_gap: ClassVar[float] = 0.05
    reply_timeout: ClassVar[float] = 0.5  # serialbattery waits 0.4 s
    framing = ModbusRtu(functions=(FC_COILS, FC_INPUTS))
    layouts: ClassVar[Mapping[str, Layout]] = {
        **{part: Layout(REGISTERS, 3, -2, "registers") for part in ("pia", "pib", "spa",
                                                                   "registers")},
        **{part: Layout(COILS, 3, -2, "coils") for part in ("pic", "coils")},
    }  # fmt: skip
    address_at = 0

    def queries(self, address: int) -> Sequence[Query]:
        """PIA, PIB, PIC (required) and the SPA settings (optional, now and then)."""
        every = self.options["settings_every"]
        return tuple(
            Query(part, read_request(address, *BLOCKS[part]),
                  every=every if part == "spa" else 1, required=part != "spa")
            for part in ("pia", "pib", "pic", "spa")
        )  # fmt: skip

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part and first register (coil) of a reply, from the request it answers.

        Raises:
            FrameError: no request or not a read request ("unexpected"), a reply from another
                address than asked ("address"), another function or byte count ("malformed").

        """
        function, start, _count = answered_read(self.name, payload, request, tuple(GENERIC),
                                                reply_size)  # fmt: skip
        return PART_AT.get((function, start), GENERIC[function]), start

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
        cells, temperatures = list(f["cells"]), list(f["cell_temperatures"])
        if isinstance(f.get("cell_count"), int) and 1 <= f["cell_count"] <= CELLS:
            cells = cells[: f["cell_count"]]
        if isinstance(f.get("ntc_count"), int) and f["ntc_count"] <= PROBES:
            temperatures = temperatures[: f["ntc_count"]]
        status = as_int(f["status"])
        alarms = graded_alarms(status, PROTECTION_BITS, WARNING_BITS)
        return {
            "voltage": f["voltage"],
            "current": f["current"],
            "soc": f["soc"],
            "soh": f.get("soh"),
            "capacity": f["capacity"],
            "remaining": f["remaining"],
            "cycles": f["cycles"],
            "cells": cells,
            "balancing": list(f["balancing"][: len(cells)]),
            "temperatures": temperatures,
            "mosfet_temperature": f.get("mosfet_temperature"),
            "charge_fet": bool(f["status"][CHARGE_FET - STATUS]),
            "discharge_fet": bool(f["status"][DISCHARGE_FET - STATUS]),
            "bms_ccl": f.get("max_charge_current"),
            "bms_dcl": f.get("max_discharge_current"),
            "bms_cvl": f.get("charge_voltage_limit"),
            "alarms": alarms,
        }
