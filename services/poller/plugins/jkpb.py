"""JK BMS "PB" models (JK-PB2A16S20P and kin) on the RS485 bus master protocol, 115200 baud 8N1.

Up to 15 packs share a bus at DIP-switch addresses 1-15 (0 makes a pack the bus master). Each is
polled with a Modbus FC16 "trigger" ``<addr> 10 16 <reg> 00 01 02 00 00 <crc16 lo hi>`` and answers
with a 300-byte frame ``55 AA EB 90 <type> <counter> ... <sum8 of bytes 0-298>``, maybe a 0x00,
then the ack ``<addr> 10 16 <reg> 00 01 <crc16>``, maybe a 0x00. :meth:`JkPbPlugin.extract` returns
frame (+ pad) + ack. Facts and their public sources (repository + path):

- Registers 0x1620 cell info (type 2), 0x161E settings (1), 0x161C device info (3); request and ack
  bytes; type in byte 4 only (byte 5 counts); sum8 at 299: mr-manuel/venus-os_dbus-serialbattery
  dbus-serialbattery/bms/jkbms_pb.py (``EXPECTED_FTYPE``, ``_verify_checksum``, ``_verify_ack``),
  tests/bms/test_jkbms_pb.py and bms-docs/JKBMS-PB.md ("Protocol 2", "Checksums").
- The frame has no responder address; the ack has, and is the only way to check it (JKBMS-PB.md).
  Wire form payload + 00 + ack + 00 (JKBMS-PB.md); ack right after the payload in a JK BMS Monitor
  capture (shining-man/bsc_fw issue #118) and in the 308-byte replies of serialbattery PR #428.
- Half-duplex CH341 adapters echo the trigger (JKBMS-PB.md "CH341 quirks", ``test_tx_echo_prefix``):
  the echo is dropped here without counting it as noise.
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
:mod:`bmsbank.services.poller.plugins.jkpb_control`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.errors import FrameError
from bmsbank.native.frames import BAD, crc16_modbus, sum8
from bmsbank.native.spec import Field, Framing
from bmsbank.services.poller.plugins.base import (
    ControlLink,
    Layout,
    LinkStats,
    Plugin,
    Query,
    alarms_from_bits,
    require,
)
from bmsbank.services.poller.plugins.jkpb_control import SWITCH_REGISTERS, ack_of, write_switch

HEADER = b"\x55\xaa\xeb\x90"
FRAME_LENGTH = 300
ACK_LENGTH = 8  # addr 10 reg_hi reg_lo 00 01 crc_lo crc_hi
REQUEST_LENGTH = 11  # addr 10 reg_hi reg_lo 00 01 02 00 00 crc_lo crc_hi
FC16 = 0x10
#: first bytes shared by acks and triggers (None: any)
FC16_PATTERN = (None, FC16, 0x16, None, 0x00, 0x01)
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
    body = bytes((address, FC16, register >> 8, register & 0xFF)) + tail
    return body + crc16_modbus(body).to_bytes(2, "little")


def trigger(address: int, register: int) -> bytes:
    """Build the 11-byte FC16 trigger for ``register`` at ``address`` (CRC16 low byte first)."""
    return _fc16(address, register, b"\x00\x01\x02\x00\x00")


def ack(address: int, register: int) -> bytes:
    """Build the 8-byte FC16 ack a pack at ``address`` sends after its frame for ``register``."""
    return _fc16(address, register, b"\x00\x01")


def decode_trigger(msg: bytes | bytearray) -> tuple[int, int] | None:
    """``(address, register)`` of a complete, valid trigger request, else None."""
    msg = bytes(msg)
    if len(msg) != REQUEST_LENGTH or msg[1] != FC16:
        return None
    register = msg[2] << 8 | msg[3]
    return (msg[0], register) if trigger(msg[0], register) == msg else None


def _fc16_shape(buf: bytes | bytearray) -> bool:
    """Whether ``buf`` starts like an ack or trigger: ``<addr> 10 16 <reg> 00 01`` (a prefix)."""
    return all(e is None or b == e for b, e in zip(buf, FC16_PATTERN, strict=False))


def _starts_reply(buf: bytes | bytearray) -> bool:
    """Whether ``buf`` may start with a frame, an ack or a trigger echo."""
    return bytes(buf[: len(HEADER)]) == HEADER[: len(buf)] or _fc16_shape(buf)


def _noise_length(buf: bytearray) -> int:
    """Bytes before the next place a frame, pad, ack or trigger may start (the last byte may)."""
    for i in range(1, len(buf) - 1):
        if buf[i] in (HEADER[0], 0) or buf[i + 1] == FC16:
            return i
    return max(1, len(buf) - 1)


def _fc16_length(buf: bytearray) -> int:
    """Length of the valid ack (8) or trigger (11) at the head of ``buf``; 0: none; -1: unsure."""
    if not _fc16_shape(buf):
        return 0
    if len(buf) < ACK_LENGTH:
        return -1
    if ack(buf[0], buf[2] << 8 | buf[3]) == buf[:ACK_LENGTH]:
        return ACK_LENGTH
    if len(buf) < REQUEST_LENGTH:
        return -1
    return REQUEST_LENGTH if decode_trigger(buf[:REQUEST_LENGTH]) else 0


class JkPbPlugin(Plugin):
    """JK BMS PB model: cell info every cycle, settings now and then, device info once."""

    name: ClassVar[str] = "jkpb"
    title: ClassVar[str] = "JKBMS PB Model"
    baudrate: ClassVar[int] = 115200
    multidrop: ClassVar[bool] = True
    addresses: ClassVar[range] = range(1, 16)
    default_address: ClassVar[int] = 1
    #: silence between the end of a reply and the next trigger: the reference driver's 120 ms
    #: (>= 100 ms keeps address filtering clean on CH341 adapters; < 50 ms causes cross-talk)
    command_gap: ClassVar[float] = 0.12
    #: a reply takes 35-50 ms, but the BMS pauses > 10 ms mid-reply; the reference waits 0.5 s
    reply_timeout: ClassVar[float] = 0.5
    framing: ClassVar[Framing] = Framing(
        header=HEADER, fixed_length=FRAME_LENGTH, check="sum8", check_end=-1, check_at=-1
    )
    #: settings change rarely; re-read every 60 cycles (once a minute at 1 s) for the limits
    settings_every: ClassVar[int] = 60
    controls: ClassVar[frozenset[str]] = frozenset(SWITCH_REGISTERS)
    layouts: ClassVar[Mapping[str, Layout]] = {
        CELL_INFO: Layout(CELL_FIELDS, 0, FRAME_LENGTH),
        SETTINGS: Layout(SETTINGS_FIELDS, 0, FRAME_LENGTH),
        DEVICE_INFO: Layout(DEVICE_FIELDS, 0, FRAME_LENGTH),
    }

    def queries(self, address: int) -> Sequence[Query]:
        """Cell info (required, every cycle), settings (every 60), device info (once).

        Raises:
            ValueError: ``address`` is not 1-15.

        """
        if address not in self.addresses:
            raise ValueError(f"jkpb: address {address} outside 1-15 (0 is the bus master)")
        return (
            Query(CELL_INFO, trigger(address, PARTS[CELL_INFO][0])),
            Query(
                SETTINGS, trigger(address, PARTS[SETTINGS][0]), self.settings_every, required=False
            ),
            Query(DEVICE_INFO, trigger(address, PARTS[DEVICE_INFO][0]), every=0, required=False),
        )

    def extract(self, buf: bytearray, address: int | None, stats: LinkStats) -> bytes | None:
        """Take the first reply (frame, optional 0x00, ack) out of ``buf``.

        The echo of a trigger to ``address`` (any trigger when ``address`` is None) and a lone
        0x00 line pad are dropped silently; stray acks, other triggers and garbage are counted as
        noise. The reply is complete only with its ack: until it arrives this returns None and the
        poller's timeout decides.

        Raises:
            FrameError: bad sum8 ("checksum", one byte dropped to resynchronise), bad ack CRC
                ("checksum"), ack from another address or no ack after the frame ("address"),
                ack for another register than the frame type ("malformed").

        """
        while buf:
            if bytes(buf[: len(HEADER)]) == HEADER[: len(buf)]:
                return self._take_reply(buf, address)
            if buf[0] == 0 and (len(buf) == 1 or _starts_reply(buf[1:])):
                del buf[0]  # the 0x00 a pack sends after its ack, read late
                continue
            n = _fc16_length(buf)
            if n < 0:
                return None
            if n == 0:
                n = _noise_length(buf)
                stats.noise_bytes += n
            elif not (n == REQUEST_LENGTH and address in (None, buf[0])):
                stats.noise_bytes += n  # a stray ack or another master's trigger
            del buf[:n]
        return None

    def _take_reply(self, buf: bytearray, address: int | None) -> bytes | None:
        """Take frame (+ pad) + ack from the head of ``buf``; None while bytes are missing."""
        if len(buf) < FRAME_LENGTH:
            return None
        if self.scanner.scan(buf)[0] == BAD:
            raw = bytes(buf[:FRAME_LENGTH])
            del buf[:1]
            raise FrameError(f"{self.name}: bad sum8", raw, kind="checksum")
        start = FRAME_LENGTH + int(buf[FRAME_LENGTH : FRAME_LENGTH + 1] == b"\x00")  # pad
        tail = bytes(buf[start : start + ACK_LENGTH])
        if not tail or (_fc16_shape(tail) and len(tail) < ACK_LENGTH):
            return None
        end = FRAME_LENGTH  # no ack follows the frame
        if _fc16_shape(tail):
            end = start + ACK_LENGTH
            if ack(tail[0], tail[2] << 8 | tail[3]) != tail:
                del buf[:end]
                raise FrameError(f"{self.name}: bad ack CRC", tail, kind="checksum")
        reply = bytes(buf[:end])
        del buf[: end + int(end > FRAME_LENGTH and buf[end : end + 1] == b"\x00")]  # pad
        self.check_address(reply, address)
        if end > FRAME_LENGTH and TYPE_OF_REGISTER.get(tail[2] << 8 | tail[3]) != reply[TYPE_AT]:
            raise FrameError(f"{self.name}: ack for another register", reply, kind="malformed")
        return reply

    def check_address(self, frame: bytes, address: int | None) -> None:
        """Raise FrameError(kind="address") unless the reply's ack comes from ``address``."""
        if address is None:
            return
        if len(frame) < FRAME_LENGTH + ACK_LENGTH:
            raise FrameError(f"{self.name}: frame without ack, responder unknown", frame,
                             kind="address")  # fmt: skip
        if frame[-ACK_LENGTH] != address:
            raise FrameError(f"{self.name}: reply from address {frame[-ACK_LENGTH]}, asked "
                             f"{address}", frame, kind="address")  # fmt: skip

    def parse(self, frame: bytes) -> tuple[str, dict[str, Any]]:
        """Decode one reply (frame, optional pad and ack) into ``(part, fields)``.

        Raises:
            FrameError: shorter than a frame, bad header or sum8, or an unknown frame type.

        """
        frame = bytes(frame)
        if len(frame) < FRAME_LENGTH or not frame.startswith(HEADER):
            raise FrameError(f"{self.name}: not a 55 AA EB 90 frame", frame)
        if sum8(frame, 0, FRAME_LENGTH - 1) != frame[FRAME_LENGTH - 1]:
            raise FrameError(f"{self.name}: bad sum8", frame, kind="checksum")
        part = PART_OF_TYPE.get(frame[TYPE_AT])
        if part is None:
            raise FrameError(f"{self.name}: unknown frame type 0x{frame[TYPE_AT]:02X}", frame,
                             kind="unexpected")  # fmt: skip
        fields = self.decode_part(part, frame)
        if part == CELL_INFO:
            cell_info_hook(fields)
        return part, fields

    def control(self, link: ControlLink, address: int, action: str, value: Any,
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
        }


def cell_info_hook(fields: dict[str, Any]) -> None:
    """Add what the table cannot express: enabled cells, balancing, present temperature probes.

    ``cells`` keeps the voltages whose bit is set in ``cell_mask``. JK's active balancer moves
    charge from the highest to the lowest cell, so while ``balancing_action`` is non-zero both
    the BMS's reported max and min cell are flagged. A probe counts when its ``sensor_mask`` bit is
    set and it does not read -200.0 °C; the MOSFET reading is None otherwise.
    """
    slots = [i for i in range(CELL_SLOTS) if fields["cell_mask"] >> i & 1]
    fields["cells"] = [fields["cell_voltages"][i] for i in slots]
    active = {fields["max_cell_index"], fields["min_cell_index"]}
    working = fields["balancing_action"] != 0
    fields["balancing"] = [1 if working and i in active else 0 for i in slots]
    mask = fields["sensor_mask"]
    fields["temperatures"] = [
        fields[name]
        for name, bit in BATTERY_SENSORS
        if mask >> bit & 1 and abs(fields[name] - ABSENT_SENSOR) > 0.05
    ]
    mos = fields["mosfet_temperature"]
    if not mask >> MOSFET_SENSOR_BIT & 1 or abs(mos - ABSENT_SENSOR) < 0.05:
        fields["mosfet_temperature"] = None
    fields["charge_fet"] = fields["charge_fet"] != 0
    fields["discharge_fet"] = fields["discharge_fet"] != 0
