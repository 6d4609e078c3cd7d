"""Sinowealth BMS (Daly 3S-10S "Sinowealth" boards) on its UART register protocol, 9600 8N1.

Every value is one register read: the host sends the three bytes ``0A cmd len`` and the BMS
answers ``len`` data bytes and one check byte, with no header and no address (one BMS per port).
This family asks ``len`` = 4 for every register; a two-byte register's value is in the first two
data bytes, big endian. Facts and their public sources ("SB" = Louisvdw/dbus-serialbattery
etc/dbus-serialbattery/bms/sinowealth.py, class ``Sinowealth``; "#1" = dreadnought/python-daly-bms
issue #1, https://github.com/dreadnought/python-daly-bms/issues/1, "#9" = the same repository's
issue #9):

- request ``0A cmd 04`` and a reply of four data bytes and one more: SB (``command_base``,
  ``generate_command``, ``read_serial_data_sinowealth``: utils.read_serial_data reads until more
  than ``length_fixed`` = 4 bytes arrived and the values are unpacked from ``data[:-1]``).
- the register map: SB's ``command_*`` constants and the BMSTool list quoted in
  jblance/mpp-solar issue #139: 0x01-0x0A cell 1-10 (u16 mV), 0x0B pack voltage (u16 mV),
  0x0C/0x0D external temperatures 1/2, 0x0E/0x0F IC temperatures 1/2 (u16 0.1 K), 0x10 current
  (s32 mA), 0x11 full charge capacity and 0x12 remaining capacity (s32 mAh), 0x13 SoC (%),
  0x14 cycle count, 0x15 pack status, 0x16 battery status, 0x17 pack config.
- the fifth byte is a CRC-8/SMBus (PEC: poly 0x07, init 0) over the request's three bytes and the
  data: not in SB (which ignores it) nor in the python-daly-bms code, but every capture fits it:
  #1 (dreadnought, 2021-05-22: ``0a0102`` -> ``0d03fd``, 3.331 V; ``0a0b02`` -> ``340d0f``,
  13.325 V) and #9 (hacksics, 2021-08-15: ``0a0102`` -> ``0e7dbf`` ... ``0a0502`` ->
  ``0e7fe9``). A CRC over the data alone does not fit them. These captures ask ``len`` = 2; the
  check over a ``len`` = 4 reply is assumed to follow the same rule (SMBus block-read PEC over
  everything on the wire). Since the check covers the request, the framer (``Fixed``) takes five
  bytes and the family checks them against the request it sent: a reply shifted by noise fails.
- pack status 0x15, low byte: bit 0 charge FET (CHGMOS), bit 1 discharge FET (DSGMOS); battery
  status 0x16: low byte bit 0 OV, 1 UV, 2 OC, 3 OCD; high byte bit 0 OTC, 1 OTD, 2 UTC, 3 UTD,
  4 AFE_OV, 5 AFE_SC (SB ``read_status_data`` / ``read_battery_status``, from the chip's status
  screens). OV/UV are read as cell protections (the chip measures cells), AFE_OV as one too,
  AFE_SC as a short circuit. SB also reads OC as a charge over-current.
- pack config 0x17: cells = (low byte & 7) + 3 (SB ``read_pack_config_data``, for the
  SH367303/305/306 and SH39F003/004 chips). Bit 6 of the low byte tells one or two external
  probes; SB's own test of it is garbled (``& ~(1 << 6)``, commented "one means two"): read here as
  bit 6 set = two probes, unconfirmed by any capture.
- temperatures in 0.1 K: SB (``kelvin_to_celsius(raw / 10)``, 273.1 there; 273.15 here). IC
  temperature 1 "seems to give a logical value", IC temperature 2 "a useless value" (SB): the first
  is reported as the BMS's own (MOSFET) temperature, the second is not read.
- the current's sign: SB takes the register as it is (+ = charge in its Battery class); no capture
  with a known condition contradicts or confirms it.

Not reported by the protocol: serial number, version string, balancing. No writes: SB has none.
No known limit on the reply time: SB waits up to ~0.25 s for the first byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.frames import checksum
from bmsbank.native.spec import Binary, Field, Fixed, Layout
from bmsbank.services.poller.plugins.base import Plugin, Query, alarms_from_bits, require
from bmsbank.services.poller.plugins.sinowealth import INFO

START = 0x0A  #: every request's first byte
DATA_LENGTH = 4  #: data bytes asked of every register
REPLY_LENGTH = DATA_LENGTH + 1
MAX_CELLS, MIN_CELLS = 10, 3
CELL_MASK = 0x07
TWO_PROBES = 1 << 6  #: pack config: bit 6 set = two external probes (see the docstring)
CHARGE_FET, DISCHARGE_FET = 1 << 0, 1 << 1

#: register -> reply part
REGISTERS: dict[int, str] = {
    **{n: f"cell{n}" for n in range(1, MAX_CELLS + 1)},
    0x0B: "voltage",
    0x0C: "probe1",
    0x0D: "probe2",
    0x0E: "ic_temperature",
    0x10: "current",
    0x11: "capacity",
    0x12: "remaining",
    0x13: "soc",
    0x14: "cycles",
    0x15: "pack_status",
    0x16: "battery_status",
    0x17: "config",
}
PART_REGISTER = {part: reg for reg, part in REGISTERS.items()}

#: the request as the BMS sees it: ``0A cmd len``, no check value
REQUEST_FRAMING = Binary(header=bytes((START,)), fixed_length=3)

#: part -> (field name, fmt, scale, bias); every value starts at the first data byte
VALUES: dict[str, tuple[str, str, float | None, float]] = {
    **{f"cell{n}": ("cell", "u16be", 0.001, 0.0) for n in range(1, MAX_CELLS + 1)},
    "voltage": ("voltage", "u16be", 0.001, 0.0),
    "probe1": ("temperature", "u16be", 0.1, -273.15),
    "probe2": ("temperature", "u16be", 0.1, -273.15),
    "ic_temperature": ("temperature", "u16be", 0.1, -273.15),
    "current": ("current", "s32be", 0.001, 0.0),  # A, + = charge
    "capacity": ("capacity", "s32be", 0.001, 0.0),  # Ah
    "remaining": ("remaining", "s32be", 0.001, 0.0),  # Ah
    "soc": ("soc", "u16be", None, 0.0),
    "cycles": ("cycles", "u16be", None, 0.0),
    "pack_status": ("pack_status", "u16be", None, 0.0),
    "battery_status": ("battery_status", "u16be", None, 0.0),
    "config": ("config", "u16be", None, 0.0),
}
LAYOUTS: dict[str, Layout] = {
    part: Layout((Field(name, 0, fmt, scale=scale, bias=bias),), 0, DATA_LENGTH)
    for part, (name, fmt, scale, bias) in VALUES.items()
}

#: battery status bit (low byte 0-7, high byte 8-15) -> alarm
ALARM_BITS: dict[int, str] = {
    0: "high_cell_voltage",  # OV
    1: "low_cell_voltage",  # UV
    2: "high_charge_current",  # OC
    3: "high_discharge_current",  # OCD
    8: "high_charge_temperature",  # OTC
    9: "high_temperature",  # OTD
    10: "low_charge_temperature",  # UTC
    11: "low_temperature",  # UTD
    12: "high_cell_voltage",  # AFE_OV, the analog front end's own over-voltage
    13: "short_circuit",  # AFE_SC
}

#: plausible ranges of decoded values: a reply whose check passed by chance is refused
CELL_RANGE = (0.0, 5.0)  # V
TEMPERATURE_RANGE = (-60.0, 150.0)  # °C
CURRENT_LIMIT = 2000.0  # A either way
CAPACITY_LIMIT = 10000.0  # Ah


def request(register: int) -> bytes:
    """The read request for ``register``: ``0A register 04``."""
    return bytes((START, register, DATA_LENGTH))


def cell_count(config: int) -> int:
    """Cells in series from the pack config register: low 3 bits + 3."""
    return (config & CELL_MASK) + MIN_CELLS


def probes(config: int) -> int:
    """External temperature probes from the pack config register (bit 6 set: two)."""
    return 2 if config & TWO_PROBES else 1


class Family(Plugin):
    """Sinowealth: one register per request, 5-byte replies checked against the request."""

    info = INFO
    command_gap: ClassVar[float] = 0.02  # no source gives one; a margin between exchanges
    #: 5 bytes take 5 ms at 9600 baud; SB gives the BMS ~0.25 s for the first byte
    reply_timeout: ClassVar[float] = 0.4
    framing = Fixed(REPLY_LENGTH)
    layouts: ClassVar[Mapping[str, Layout]] = LAYOUTS

    def queries(self, address: int) -> Sequence[Query]:
        """The register reads of one cycle, pack config first.

        The config read identifies the BMS (its reply's CRC covers our request); then SoC,
        status, voltage, current, the ten cell registers (cells 4-10 optional: a 3S board has
        three), temperatures, remaining capacity, cycles; config and capacity once.
        """
        q = [Query("config", request(PART_REGISTER["config"]), every=0)]
        for part in ("soc", "pack_status", "battery_status", "voltage", "current"):
            q.append(Query(part, request(PART_REGISTER[part])))
        for n in range(1, MAX_CELLS + 1):
            q.append(Query(f"cell{n}", request(n), required=n <= MIN_CELLS))
        for part in ("probe1", "probe2", "ic_temperature"):
            q.append(Query(part, request(PART_REGISTER[part]), required=part == "probe1"))
        q.append(Query("remaining", request(PART_REGISTER["remaining"])))
        q.append(Query("cycles", request(PART_REGISTER["cycles"])))
        q.append(Query("capacity", request(PART_REGISTER["capacity"]), every=0))
        return tuple(q)

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """The part a reply is, from the request it answers; its CRC checked against both.

        Raises:
            FrameError: no request, or not a read of a known register ("unexpected"); a CRC
                that does not match the request and data ("checksum").

        """
        if (request is None or len(request) != 3 or request[0] != START
                or request[2] != DATA_LENGTH or request[1] not in REGISTERS):  # fmt: skip
            asked = "no request" if request is None else f"request {request.hex(' ')}"
            raise FrameError(f"{self.name}: a reply is decoded with the read it answers "
                             f"({asked})", payload, kind="unexpected")  # fmt: skip
        if len(payload) != REPLY_LENGTH:
            raise FrameError(f"{self.name}: {len(payload)} bytes, not {REPLY_LENGTH}", payload)
        expected = checksum("crc8_smbus", request + payload[:DATA_LENGTH])
        if payload[DATA_LENGTH] != expected:
            raise FrameError(f"{self.name}: bad check value (CRC-8 {payload[DATA_LENGTH]:02X}, "
                             f"expected {expected:02X})", payload, kind="checksum")  # fmt: skip
        return REGISTERS[request[1]], 0

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Refuse values no pack has (a CRC-8 passes one corrupt reply in 256).

        Raises:
            FrameError: a value outside its plausible range ("malformed").

        """
        ((name, value),) = fields.items()
        low, high = {
            "cell": CELL_RANGE,
            "voltage": (0.0, CELL_RANGE[1] * MAX_CELLS),
            "temperature": TEMPERATURE_RANGE,
            "current": (-CURRENT_LIMIT, CURRENT_LIMIT),
            "capacity": (0.0, CAPACITY_LIMIT),
            "remaining": (0.0, CAPACITY_LIMIT),
            "soc": (0, 100),
        }.get(name, (0, 0xFFFF))
        if not low <= value <= high:
            raise FrameError(f"{self.name}: {part} reads {value}", payload)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map the register parts of one cycle to state fields.

        Raises:
            FrameError: a part the state needs is missing ("truncated").

        """
        require(parts, "config", "soc", "pack_status", "battery_status", "voltage", "current",
                "probe1", "remaining", "cycles", "capacity")  # fmt: skip
        config = parts["config"]["config"]
        count = cell_count(config)
        require(parts, *(f"cell{n}" for n in range(1, count + 1)))
        temperatures = [parts["probe1"]["temperature"]]
        if probes(config) == 2 and "probe2" in parts:
            temperatures.append(parts["probe2"]["temperature"])
        status = parts["pack_status"]["pack_status"]
        out = {
            "voltage": parts["voltage"]["voltage"],
            "current": parts["current"]["current"],
            "soc": float(parts["soc"]["soc"]),
            "capacity": parts["capacity"]["capacity"],
            "remaining": parts["remaining"]["remaining"],
            "cycles": parts["cycles"]["cycles"],
            "cells": [parts[f"cell{n}"]["cell"] for n in range(1, count + 1)],
            "balancing": [0] * count,  # not reported
            "temperatures": temperatures,
            "charge_fet": bool(status & CHARGE_FET),
            "discharge_fet": bool(status & DISCHARGE_FET),
            "alarms": alarms_from_bits(parts["battery_status"]["battery_status"], ALARM_BITS),
            "hardware": f"Sinowealth BMS {count}S",
            "serial": "",
        }
        if "ic_temperature" in parts:
            out["mosfet_temperature"] = parts["ic_temperature"]["temperature"]
        return out
