"""JK BMS "PB" models (JK-PB2A16S20P and kin) on the RS485 bus master protocol, 115200 baud 8N1.

Up to 15 packs share a bus at DIP-switch addresses 1-15 (0 makes a pack the bus master). Each is
polled with a Modbus FC16 "trigger" ``<addr> 10 16 <reg> 00 01 02 00 00 <crc16 lo hi>`` and answers
with a 300-byte frame ``55 AA EB 90 <type> <counter> ... <sum8 of bytes 0-298>``, maybe a 0x00,
then the ack ``<addr> 10 16 <reg> 00 01 <crc16>``, maybe a 0x00: the toolkit's frame-then-ack
framer returns frame (+ pad) + ack. Facts and their public sources (repository + path):

- Registers 0x1620 cell info (type 2), 0x161E settings (1), 0x161C device info (3); request and ack
  bytes; type in byte 4 only (byte 5 counts); sum8 at 299: mr-manuel/venus-os_dbus-serialbattery
  dbus-serialbattery/bms/jkbms_pb.py (``EXPECTED_FTYPE``, ``_verify_checksum``, ``_verify_ack``),
  tests/bms/test_jkbms_pb.py and bms-docs/JKBMS-PB.md ("Protocol 2", "Checksums").
- The frame has no responder address; the ack has, and is the only way to check it (JKBMS-PB.md).
  Wire form payload + 00 + ack + 00 (JKBMS-PB.md); ack right after the payload in a JK BMS Monitor
  capture (shining-man/bsc_fw issue #118) and in the 308-byte replies of serialbattery PR #428.
- Half-duplex CH341 adapters echo the trigger (JKBMS-PB.md "CH341 quirks", ``test_tx_echo_prefix``):
  the transport drops the echo of its own request (port option ``echo``).
- Cell info, little endian: cells u16 mV at 6 + 2n (32 slots), enabled-cell mask u32 at 70, max/min
  cell index (0-based) 78/79, MOSFET s16 0.1 °C 144, voltage u32 mV 150, current s32 mA 158
  (+ = charge), T1/T2 s16 0.1 °C 162/164, alarm bits u32 166, balance current s16 mA 170, balancing
  action u8 172 (0 off, 1/2 working), SoC 173, remaining s32 mAh 174, capacity u32 mAh 178, cycles
  u32 182, SoH 190, charge/discharge FET 198/199, probe mask u8 214 (bit 0 MOSFET, 1 T1, 2 T2, 4 T4
  at 256, 5 T5 at 258): JKBMS-PB.md (status map), jkbms_pb.py ``read_status_data``, syssi/esphome-
  jk-bms components/jk_bms_ble/jk_bms_ble.cpp (``decode_jk02_cell_info_``), patman15/aiobmsble
  aiobmsble/bms/jikong_bms.py (``_FIELDS``, ``_temp_pos``; -200.0 °C = probe absent). Bit 3 / 254
  repeats the MOSFET reading on PB packs (JKBMS-PB.md; aiobmsble types it MOSFET): not used.
- Settings: CurBatCOC u32 mA 50 and CurBatDcOC 62 (the BMS's own current limits, as jkbms_pb.py
  ``get_settings`` reads them), cells 114, capacity mAh 130, DevAddr 270: JKBMS-PB.md, jkbms_pb.py.
- Device info: model 6, hardware 22, software 30, name 46, serial 86: jkbms_pb.py, aiobmsble
  ``_fetch_device_info`` and tests/bms/test_jikong_bms.py. Alarm bits: JKBMS-PB.md (official map),
  jkbms_pb.py ``to_protection_bits``; bits 0 (wire resistance), 18 (GPS), 19 (password) raise none.
- Timing: jkbms_pb.py ``COMMAND_GAP = 0.12`` (50 ms let stale CH341 bytes through, 75 ms was clean
  on 4 packs, the bus master leaves ~180 ms); JKBMS-PB.md: < 50 ms bursts cause cross-talk.
- No wake-up burst: serialbattery PR #425 sent one for firmware >= 15.36; JKBMS-PB.md and the
  current jkbms_pb.py dropped it after logic-analyser captures showed single triggers answered and
  the wake-up's own reply leaking into the next read as the cause of cross-talk.

Writes (``controls``: charge, discharge, balance; no reset_soc) and their sources:
:mod:`bmsbank.services.poller.plugins.jkpb.control`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.spec import Binary, Check, Field, FrameThenAck, Layout
from bmsbank.services.poller.plugins.base import (
    Link,
    Plugin,
    Query,
    alarms_from_bits,
    modbus_frame,
    require,
)
from bmsbank.services.poller.plugins.jkpb import INFO
from bmsbank.services.poller.plugins.jkpb.control import SWITCH_REGISTERS, ack_of, write_switch

HEADER = b"\x55\xaa\xeb\x90"
FRAME_LENGTH = 300
ACK_LENGTH = 8  # addr 10 reg_hi reg_lo 00 01 crc_lo crc_hi
FC16 = 0x10
PAD = 0x00  # a pack may send one between frame and ack, and after the ack
TYPE_AT = 4
CELL_INFO, SETTINGS, DEVICE_INFO = "cell_info", "settings", "device_info"
#: part -> (trigger register, frame type)
PARTS: dict[str, tuple[int, int]] = {
    CELL_INFO: (0x1620, 0x02),
    SETTINGS: (0x161E, 0x01),
    DEVICE_INFO: (0x161C, 0x03),
}
PART_OF_TYPE = {ftype: part for part, (_, ftype) in PARTS.items()}
TYPE_OF_REGISTER = dict(PARTS.values())
ABSENT_SENSOR = -200.0  # °C, what an unplugged probe reads (aiobmsble)
CELL_SLOTS = 32

FRAMING = FrameThenAck(
    frame=Binary(HEADER, fixed_length=FRAME_LENGTH, check=Check("sum8", end=-1, at=-1), pad=PAD),
    ack_length=ACK_LENGTH,
    ack_pattern=(None, FC16, 0x16, None, 0x00, 0x01),
    ack_check=Check("crc16_modbus", end=-2, at=-2, fmt="u16le"),
)

CELL_FIELDS: tuple[Field, ...] = (
    Field("cell_voltages", 6, "u16le", scale=0.001, count=CELL_SLOTS),
    Field("cell_mask", 70, "u32le"),
    Field("max_cell_index", 78, "u8"),
    Field("min_cell_index", 79, "u8"),
    Field("mosfet_temperature", 144, "s16le", scale=0.1),
    Field("voltage", 150, "u32le", scale=0.001),
    Field("current", 158, "s32le", scale=0.001),
    Field("temperature_1", 162, "s16le", scale=0.1),
    Field("temperature_2", 164, "s16le", scale=0.1),
    Field("alarm_bits", 166, "u32le"),
    Field("balance_current", 170, "s16le", scale=0.001),
    Field("balancing_action", 172, "u8"),
    Field("soc", 173, "u8"),
    Field("remaining", 174, "s32le", scale=0.001),
    Field("capacity", 178, "u32le", scale=0.001),
    Field("cycles", 182, "u32le"),
    Field("soh", 190, "u8"),
    Field("charge_fet", 198, "u8"),
    Field("discharge_fet", 199, "u8"),
    Field("sensor_mask", 214, "u8"),
    Field("temperature_4", 256, "s16le", scale=0.1),
    Field("temperature_5", 258, "s16le", scale=0.1),
)
#: battery probes: (field, bit of sensor_mask); bit 0 is the MOSFET sensor, bit 3 (254) too
BATTERY_SENSORS = (("temperature_1", 1), ("temperature_2", 2), ("temperature_4", 4),
                   ("temperature_5", 5))  # fmt: skip
MOSFET_SENSOR_BIT = 0

SETTINGS_FIELDS: tuple[Field, ...] = (
    Field("cell_undervoltage", 10, "u32le", scale=0.001),
    Field("cell_overvoltage", 18, "u32le", scale=0.001),
    Field("charge_current_limit", 50, "u32le", scale=0.001),
    Field("discharge_current_limit", 62, "u32le", scale=0.001),
    Field("cell_count", 114, "u32le"),
    Field("balancer_enabled", 126, "u32le"),
    Field("capacity", 130, "u32le", scale=0.001),
    Field("device_address", 270, "u32le"),
)
DEVICE_FIELDS: tuple[Field, ...] = (
    Field("model", 6, "str", count=16),
    Field("hardware_version", 22, "str", count=8),
    Field("software_version", 30, "str", count=8),
    Field("name", 46, "str", count=16),
    Field("serial", 86, "str", count=8),
)

#: alarm bit (u32 at 166) -> alarm name (bmsbank.schema.ALARMS)
ALARM_BITS: dict[int, str] = {
    1: "high_internal_temperature",  # MOSFET over-temperature
    2: "internal_failure",  # cell count differs from the setting
    3: "internal_failure",  # current sensor error
    4: "high_cell_voltage",  # cell overvoltage protection
    5: "high_voltage",  # pack overvoltage protection
    6: "high_charge_current",  # charge overcurrent
    7: "short_circuit",  # charge short circuit
    8: "high_charge_temperature",  # charge over-temperature
    9: "low_charge_temperature",  # charge under-temperature
    10: "internal_failure",  # CPU aux communication error
    11: "low_cell_voltage",  # cell undervoltage protection
    12: "low_voltage",  # pack undervoltage protection
    13: "high_discharge_current",  # discharge overcurrent
    14: "short_circuit",  # discharge short circuit
    15: "high_temperature",  # discharge over-temperature
    16: "internal_failure",  # charge MOSFET fault
    17: "internal_failure",  # discharge MOSFET fault
    20: "internal_failure",  # discharge switch-on failed
    21: "high_temperature",  # battery over-temperature
    22: "internal_failure",  # temperature sensor anomaly
    23: "internal_failure",  # PLC module anomaly
}


def _fc16(address: int, register: int, tail: bytes) -> bytes:
    return modbus_frame(bytes((address, FC16, register >> 8, register & 0xFF)) + tail)


def trigger(address: int, register: int) -> bytes:
    """Build the 11-byte FC16 trigger for ``register`` at ``address`` (CRC16 low byte first)."""
    return _fc16(address, register, b"\x00\x01\x02\x00\x00")


def ack(address: int, register: int) -> bytes:
    """Build the 8-byte FC16 ack a pack at ``address`` sends after its frame for ``register``."""
    return _fc16(address, register, b"\x00\x01")


def ack_in(reply: bytes) -> bytes | None:
    """The acknowledgement inside a reply (after the frame and an optional pad), if any."""
    start = FRAME_LENGTH + int(reply[FRAME_LENGTH : FRAME_LENGTH + 1] == bytes((PAD,)))
    tail = reply[start : start + ACK_LENGTH]
    return tail if len(tail) == ACK_LENGTH else None


class Family(Plugin):
    """JK BMS PB model: cell info every cycle, settings now and then, device info once."""

    info = INFO
    #: silence between the end of a reply and the next trigger: the reference driver's 120 ms
    #: (>= 100 ms keeps address filtering clean on CH341 adapters; < 50 ms causes cross-talk)
    command_gap: ClassVar[float] = 0.12
    #: a reply takes 35-50 ms, but the BMS pauses > 10 ms mid-reply; the reference waits 0.5 s
    reply_timeout: ClassVar[float] = 0.5
    framing = FRAMING
    layouts: ClassVar[Mapping[str, Layout]] = {
        CELL_INFO: Layout(CELL_FIELDS, 0, FRAME_LENGTH),
        SETTINGS: Layout(SETTINGS_FIELDS, 0, FRAME_LENGTH),
        DEVICE_INFO: Layout(DEVICE_FIELDS, 0, FRAME_LENGTH),
    }
    key_at = TYPE_AT
    keys = PART_OF_TYPE

    def queries(self, address: int) -> Sequence[Query]:
        """Cell info (every cycle), settings (every ``settings_every`` cycles), device info (once).

        Raises:
            ValueError: ``address`` is not 1-15.

        """
        if address not in self.addresses:
            raise ValueError(f"jkpb: address {address} outside 1-15 (0 is the bus master)")
        every = self.options["settings_every"]
        return (
            Query(CELL_INFO, trigger(address, PARTS[CELL_INFO][0])),
            Query(SETTINGS, trigger(address, PARTS[SETTINGS][0]), every, required=False),
            Query(DEVICE_INFO, trigger(address, PARTS[DEVICE_INFO][0]), every=0, required=False),
        )

    def responder(self, payload: bytes) -> int | None:
        """The address in the ack; -1 when no ack follows the frame (responder unknown)."""
        tail = ack_in(payload)
        return tail[0] if tail else -1

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Check the ack answers this frame type; add cells, balancing, probes (cell info).

        Raises:
            FrameError: an ack for another register than the frame type ("malformed").

        """
        tail = ack_in(payload)
        if tail and TYPE_OF_REGISTER.get(tail[2] << 8 | tail[3]) != payload[TYPE_AT]:
            raise FrameError(f"{self.name}: ack for another register", payload)
        if part == CELL_INFO:
            cell_info_hook(fields)
        return fields

    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Write the switch of ``action``, wait for the FC16 ack (ControlError on a refusal)."""
        register = SWITCH_REGISTERS.get(action)
        if register is None:
            super().control(link, address, action, value, parts)
            return
        link.exchange(write_switch(address, register, bool(value)), ack_of(address, register))

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Map cell info (required), settings and device info (optional) to state fields.

        Raises:
            FrameError: the cell info part is missing.

        """
        require(parts, CELL_INFO)
        info = parts[CELL_INFO]
        settings = parts.get(SETTINGS)
        cells, balancing = info["cells"], info["balancing"]
        if not cells:  # no enabled-cell mask: fall back to the configured cell count
            count = settings["cell_count"] if settings else CELL_SLOTS
            cells = [v for v in info["cell_voltages"][:count] if v > 0]
            balancing = [0] * len(cells)
        device = parts.get(DEVICE_INFO)
        hardware = self.title
        if device:
            hardware = "{model} hw {hardware_version} sw {software_version}".format(**device)
        return {
            "voltage": info["voltage"],
            "current": info["current"],
            "soc": float(info["soc"]),
            "soh": float(info["soh"]),
            "capacity": info["capacity"],
            "remaining": info["remaining"],
            "cycles": info["cycles"],
            "cells": list(cells),
            "balancing": list(balancing),
            "temperatures": list(info["temperatures"]),
            "mosfet_temperature": info["mosfet_temperature"],
            "charge_fet": info["charge_fet"],
            "discharge_fet": info["discharge_fet"],
            "bms_ccl": settings["charge_current_limit"] if settings else None,
            "bms_dcl": settings["discharge_current_limit"] if settings else None,
            "alarms": alarms_from_bits(info["alarm_bits"], ALARM_BITS),
            "hardware": hardware,
            "serial": device.get("serial", "") if device else "",
        }


def cell_info_hook(
    fields: dict[str, Any], slots_n: int = CELL_SLOTS,
    sensors: Sequence[tuple[str, int]] = BATTERY_SENSORS, mosfet_bit: int = MOSFET_SENSOR_BIT,
) -> None:  # fmt: skip
    """Add what the table cannot express: enabled cells, balancing, present temperature probes.

    ``slots_n``, ``sensors`` (probe field, ``sensor_mask`` bit) and ``mosfet_bit``: the record
    layout's (32 cell slots here; the JK BLE 24S record has 24 and its own probe order).

    ``cells`` keeps the voltages whose bit is set in ``cell_mask``. JK's active balancer moves
    charge from the highest to the lowest cell, so while ``balancing_action`` is non-zero both
    the BMS's reported max and min cell are flagged. A probe counts when its ``sensor_mask`` bit is
    set and it does not read -200.0 °C; the MOSFET reading is None otherwise.
    """
    slots = [i for i in range(slots_n) if fields["cell_mask"] >> i & 1]
    fields["cells"] = [fields["cell_voltages"][i] for i in slots]
    active = {fields["max_cell_index"], fields["min_cell_index"]}
    working = fields["balancing_action"] != 0
    fields["balancing"] = [1 if working and i in active else 0 for i in slots]
    mask = fields["sensor_mask"]
    fields["temperatures"] = [
        fields[name]
        for name, bit in sensors
        if mask >> bit & 1 and abs(fields[name] - ABSENT_SENSOR) > 0.05
    ]
    mos = fields["mosfet_temperature"]
    if not mask >> mosfet_bit & 1 or abs(mos - ABSENT_SENSOR) < 0.05:
        fields["mosfet_temperature"] = None
    fields["charge_fet"] = fields["charge_fet"] != 0
    fields["discharge_fet"] = fields["discharge_fet"] != 0
