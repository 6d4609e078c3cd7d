r"""JK BMS over Bluetooth LE: the 300-byte ``55 AA EB 90`` records of the JK app protocol.

The same records the PB models send over RS485 (:mod:`~bmsbank.services.poller.plugins.jkpb`,
whose field tables this family imports), asked for with 20-byte requests written to the GATT
characteristic 0xFFE1 and streamed back as notifications of ~20 bytes (or the MTU) each, with
foreign bytes between records (the BLE module's ``AT\r\n``, the BMS's ``AA 55 90 EB C8 ...``
confirmation). Facts and their public sources (repository + path):

- Request ``AA 55 90 EB <cmd> <length> <value u32 LE> 00 x 9 <sum8 of bytes 0-18>``: 0x97 asks
  for the device-info record (type 0x03), 0x96 for cell info: the BMS answers with a settings
  record (0x01) and then streams cell-info records (0x02): syssi/esphome-jk-bms
  components/jk_bms_ble/jk_bms_ble.cpp (``build_frame``, ``COMMAND_CELL_INFO``,
  ``COMMAND_DEVICE_INFO``), fl4p/batmon-ha bmslib/models/jikong.py (``_jk_command``; "0x96 ->
  resp 0x01 & 0x02 ... after these 2 commands the bms will continuously send 0x02"),
  patman15/aiobmsble aiobmsble/bms/jikong_bms.py (``_cmd``, type at byte 4, sum8 at 299).
- Records are 300 bytes, the sum8 of bytes 0-298 at 299; the BLE module splices ``AT\r\n`` and
  the ``C8`` confirmation between records: aiobmsble tests/bms/test_jikong_bms.py, batmon-ha
  bmslib/test/test_jk_framing.py and bmslib/test/data/jk_issue377.py (issue #377 captures).
  The framer resyncs on the header; a device streams records unasked, so while
  :func:`~bmsbank.services.poller.plugins.base.run_query` waits for one part, complete records of
  the other kinds are passed over (uncounted: that is the device's normal traffic).
- Layouts (``protocol`` option): JK02_32S (firmware >= 11, 32 cell slots) is jkpb's cell-info
  table as is; JK02_24S (firmware < 11, 24 cell slots) has the cell-area fields 16 bytes earlier
  and the rest 32 bytes earlier, with the MOSFET probe s16 at 134 and a 16-bit alarm field at
  136 (esphome ``decode_jk02_cell_info_``: ``offset`` 0 vs 16, ``offset * 2``; aiobmsble
  ``_prot_offset = -32``, ``problem_code >> 16``); its probe mask (182) has T1 in bit 0, T2 in
  bit 1, the MOSFET in bit 2 (aiobmsble ``_temp_pos`` for firmware < 11; esphome's comment gives
  the 32S order MOSFET, T1, T2 - the 24S capture has all three bits set, so it cannot tell).
  JK04 (hardware <= 3.0, e.g. JK-B2A16S hw 3.0 sw 3.3.0; JK-B5A24S sw 8.0.3M): cells as IEEE
  float32 volts at 6 + 4n (24 slots), balancer action 220, balance current float32 222, no
  current, SoC or temperatures (esphome ``decode_jk04_cell_info_`` and
  esp32-ble-jk04-example-faker.yaml). A JK04 device decodes (``bmsbank decode``) but gives no
  state: without current and SoC it cannot be a bank pack.
- ``auto`` reads the layout off each cell-info record where it shows (:func:`layout_of_record`:
  JK04's float32 cells, the enabled-cell mask at 70 or 54 with empty slots after it), else takes
  it from the device-info record (asked once, first): software major >= 11 is JK02_32S
  (aiobmsble ``_sw_version < 11``, batmon-ha ``is_new_11fw_32s``), hardware major <= 3 is JK04
  (esphome-jk-bms README and example yaml: "JK04 ... <= hardware version 3.0"), else JK02_24S
  (JK-B5A24S, hw 8.X sw 8.0.3M, speaks JK04 - README, docs/b5a24s/ - which only its records
  show); else JK02_32S, today's firmware. ``protocol`` fixes the layout where the guess fails.
- JK02_32S probes T4/T5 (256/258) exist from firmware 14 (aiobmsble ``_temp_pos``; its 11.48
  capture sets their mask bits and reads 0.0 there): ignored before.
- Current + = charge on all three (aiobmsble 24S capture: +2.329 A "battery_charging"; batmon-ha
  negates it for its own + = discharge convention); alarms: jkpb's table (the same bits; 24S has
  only the low 16).

Writes (``controls``): charge 0x1D, discharge 0x1E, balancer 0x1F as a request with length 4
and value 1/0 (esphome components/jk_bms_ble/switch/__init__.py ``SWITCHES`` for JK02_24S and
JK02_32S; batmon-ha ``set_switch``). The BMS does not acknowledge a write: the family reads the
settings record back (0x96) and checks the switch bytes 118/122/126 (esphome
``decode_jk02_settings_``; batmon-ha reads the switches there). JK04 offers none.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from bmsbank.errors import ControlError, FrameError
from bmsbank.native.frames import sum8
from bmsbank.native.spec import Binary, Check, Field, Layout
from bmsbank.services.poller.plugins.base import Link, LinkStats, Query, require
from bmsbank.services.poller.plugins.jkbms_ble import INFO
from bmsbank.services.poller.plugins.jkpb import family as jkpb
from bmsbank.services.poller.plugins.jkpb.family import (
    CELL_FIELDS,
    CELL_INFO,
    DEVICE_FIELDS,
    DEVICE_INFO,
    FRAME_LENGTH,
    HEADER,
    PART_OF_TYPE,
    SETTINGS,
    SETTINGS_FIELDS,
    TYPE_AT,
    cell_info_hook,
)

REQUEST_HEADER = b"\xaa\x55\x90\xeb"
REQUEST_LENGTH = 20
CMD_CELL_INFO, CMD_DEVICE_INFO = 0x96, 0x97
JK02_24S, JK02_32S, JK04 = "JK02_24S", "JK02_32S", "JK04"
#: layout keys of the cell-info tables other than JK02_32S's (which is jkpb's, under CELL_INFO)
CELL_INFO_24S, CELL_INFO_JK04 = "cell_info_24s", "cell_info_jk04"
CELL_SLOTS_24S = 24
#: JK02 switches: control action -> register (value u32, 1 = on) and its byte in the settings
SWITCH_REGISTERS: dict[str, int] = {"charge": 0x1D, "discharge": 0x1E, "balance": 0x1F}
SWITCH_AT: dict[str, int] = {"charge": 118, "discharge": 122, "balance": 126}

FRAMING = Binary(HEADER, fixed_length=FRAME_LENGTH, check=Check("sum8", end=-1, at=-1))
REQUEST_FRAMING = Binary(REQUEST_HEADER, fixed_length=REQUEST_LENGTH,
                         check=Check("sum8", end=-1, at=-1))  # fmt: skip

#: JK02_24S probes: (field, bit of sensor_mask), and the MOSFET probe's bit (aiobmsble order)
SENSORS_24S = (("temperature_1", 0), ("temperature_2", 1))
MOSFET_BIT_24S = 2
_MOVED_24S = {
    "mosfet_temperature": Field("mosfet_temperature", 134, "s16le", scale=0.1),
    "alarm_bits": Field("alarm_bits", 136, "u16le"),
}
#: JK02_32S firmware before 14 has no T4/T5 at 256/258 (aiobmsble ``_temp_pos``)
T45_SINCE, T45_BITS = 14, 1 << 4 | 1 << 5
_CELL_AREA_END_32S = 128  # 32S offsets below this (past the cells) move 16 bytes, above 32


def _to_24s(f: Field) -> Field | None:
    """The JK02_24S place of a JK02_32S cell-info field (None: 24S has no such field)."""
    if f.name in _MOVED_24S:
        return _MOVED_24S[f.name]
    if f.name == "cell_voltages":
        return replace(f, count=CELL_SLOTS_24S)
    if f.offset >= 254:  # T4/T5 of newer firmware
        return None
    return replace(f, offset=f.offset - (16 if f.offset < _CELL_AREA_END_32S else 32))


CELL_FIELDS_24S: tuple[Field, ...] = tuple(
    g for g in (_to_24s(f) for f in CELL_FIELDS) if g is not None
)
CELL_FIELDS_JK04: tuple[Field, ...] = (
    Field("cell_bits", 6, "u32le", count=CELL_SLOTS_24S),  # IEEE float32 [V]
    Field("balancing_action", 220, "u8"),
    Field("balance_current_bits", 222, "u32le"),  # IEEE float32 [A]
)


def request(cmd: int, value: int = 0, length: int = 0) -> bytes:
    """The 20-byte request ``AA 55 90 EB <cmd> <length> <value u32 LE> 00... <sum8>``."""
    out = bytearray(REQUEST_LENGTH)
    out[:4] = REQUEST_HEADER
    out[4], out[5] = cmd, length
    out[6:10] = value.to_bytes(4, "little")
    out[-1] = sum8(out, 0, REQUEST_LENGTH - 1)
    return bytes(out)


def _major(version: str) -> int | None:
    match = re.match(r"\D{0,2}(\d+)", version)
    return int(match.group(1)) if match else None


def protocol_of(device: Mapping[str, Any]) -> str:
    """The record layout a device speaks, from its device-info record's versions."""
    sw, hw = _major(device.get("software_version", "")), _major(device.get("hardware_version", ""))
    if sw is not None and sw >= 11:
        return JK02_32S
    if (hw is not None and hw <= 3) or (sw is not None and sw <= 3):
        return JK04
    return JK02_24S if sw is not None or hw is not None else JK02_32S


def layout_of_record(payload: bytes) -> str | None:
    """The layout a cell-info record shows by itself, None when it does not tell.

    JK04: the upper half of cell 1's float32 is that of 1.0-5.0 V (0x3F80-0x409F), which as a
    JK02 cell 2 would be over 16 V. JK02: the enabled-cell mask (u32 at 70 for 32S, 54 for 24S)
    is 2^n - 1 and the voltage slots from n on are zero; each layout's mask position holds
    non-zero cell voltages or resistances in the other, so at most one of them fits.
    """
    if 0x3F80 <= int.from_bytes(payload[8:10], "little") < 0x40A0:
        return JK04
    for protocol, at, slots in ((JK02_32S, 70, 32), (JK02_24S, 54, CELL_SLOTS_24S)):
        mask = int.from_bytes(payload[at : at + 4], "little")
        n = mask.bit_length()
        if (
            mask
            and mask == (1 << n) - 1
            and n <= slots
            and not any(payload[6 + 2 * n : 6 + 2 * slots])
        ):
            return protocol
    return None


def _floats(raw: Sequence[int]) -> list[float]:
    return list(struct.unpack(f"<{len(raw)}f", struct.pack(f"<{len(raw)}I", *raw)))


class Family(jkpb.Family):
    """JK BMS BLE: device info once, settings now and then, cell info every cycle."""

    info = INFO
    #: batmon-ha waits 0.1 s before each request (``_q``)
    command_gap: ClassVar[float] = 0.1
    #: a record is ~15 notifications; aiobmsble's BMS timeout is 5 s
    reply_timeout: ClassVar[float] = 2.0
    framing = FRAMING  # type: ignore[assignment]  # jkpb's is frame-then-ack: BLE has no ack
    layouts: ClassVar[Mapping[str, Layout]] = {
        CELL_INFO: Layout(CELL_FIELDS, 0, FRAME_LENGTH),
        CELL_INFO_24S: Layout(CELL_FIELDS_24S, 0, FRAME_LENGTH),
        CELL_INFO_JK04: Layout(CELL_FIELDS_JK04, 0, FRAME_LENGTH),
        SETTINGS: Layout(SETTINGS_FIELDS, 0, FRAME_LENGTH),
        DEVICE_INFO: Layout(DEVICE_FIELDS, 0, FRAME_LENGTH),
    }
    key_at = TYPE_AT
    keys = PART_OF_TYPE

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        #: the layout the device-info record names (``protocol = "auto"``), its software major
        self.detected: str | None = None
        #: the layout of the last cell-info record (``protocol = "auto"``)
        self.seen: str | None = None
        self.software: int | None = None
        self._expected: str | None = None

    @property
    def protocol(self) -> str:
        """The record layout in use: the option, else the last record's, the device info's, 32S."""
        chosen = self.options["protocol"]
        return chosen if chosen != "auto" else self.seen or self.detected or JK02_32S

    def queries(self, address: int) -> Sequence[Query]:
        """Device info (once; required under ``auto``), settings now and then, cell info.

        Raises:
            ValueError: ``address`` is not 0 (a BLE device is one pack).

        """
        if address not in self.addresses:
            raise ValueError(f"jkbms_ble: address {address}: a BLE device is one pack (0)")
        auto, every = self.options["protocol"] == "auto", self.options["settings_every"]
        return (
            Query(DEVICE_INFO, request(CMD_DEVICE_INFO), every=0, required=auto),
            Query(SETTINGS, request(CMD_CELL_INFO), every, required=False),
            Query(CELL_INFO, request(CMD_CELL_INFO)),
        )

    def expect(self, part: str | None) -> None:
        """Remember the part being waited for: :meth:`extract` passes over the others."""
        self._expected = part

    def extract(self, buf: bytearray, stats: LinkStats) -> bytes | None:
        """The next complete record, passing over records of kinds nobody waits for now."""
        while (frame := super().extract(buf, stats)) is not None:
            if self._expected is None or PART_OF_TYPE.get(frame[TYPE_AT]) == self._expected:
                return frame
        return None

    def responder(self, payload: bytes) -> int | None:
        """None: a BLE record does not say who sent it (the connection does)."""
        return None

    def decode(self, part: str, payload: bytes, origin: int = 0) -> dict[str, Any]:
        """Decode ``part`` with the table of the layout in use (JK04 settings: not decoded)."""
        protocol = self.protocol
        if part == CELL_INFO and self.options["protocol"] == "auto":
            # direct evidence first; a record that shows none keeps the last one's layout
            self.seen = protocol = layout_of_record(payload) or self.protocol
        if part == CELL_INFO and protocol != JK02_32S:
            part = CELL_INFO_24S if protocol == JK02_24S else CELL_INFO_JK04
        elif part == SETTINGS and protocol == JK04:
            return {}
        return super().decode(part, payload, origin)

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Detect the layout (device info); add cells, balancing, probes (cell info).

        Raises:
            FrameError: a JK04 cell voltage that is not a finite number ("malformed").

        """
        if part == DEVICE_INFO:
            self.detected = protocol_of(fields)
            self.software = _major(fields["software_version"])
        elif part == CELL_INFO:
            protocol = fields["protocol"] = self.protocol
            if protocol == JK04:
                _jk04_hook(fields, payload)
            elif protocol == JK02_24S:
                cell_info_hook(fields, CELL_SLOTS_24S, SENSORS_24S, MOSFET_BIT_24S)
            else:
                if self.software is not None and self.software < T45_SINCE:
                    fields["sensor_mask"] &= ~T45_BITS  # 256/258 read 0 there, bits set or not
                cell_info_hook(fields)
        return fields

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The mapping of jkpb's state; a JK04 record has no current or SoC.

        Raises:
            FrameError: the cell info part is missing, or is JK04's ("truncated").

        """
        require(parts, CELL_INFO)
        if parts[CELL_INFO].get("protocol") == JK04:
            raise FrameError("jkbms_ble: JK04 cell info carries no current, SoC or temperatures",
                             kind="truncated")  # fmt: skip
        return super().state(parts)

    def control(self, link: Link, address: int, action: str, value: Any,
                parts: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """Write the switch of ``action``, read the settings back and check the switch.

        Raises:
            ControlError: JK04, an action without a switch, or the switch did not change.
            LinkTimeout, FrameError, TransportError: from the link.

        """
        register = SWITCH_REGISTERS.get(action)
        if register is None:
            raise ControlError(f"{self.name} does not support {action}")
        if self.protocol == JK04:
            raise ControlError(f"{self.name}: JK04 devices take no {action} switch")
        on = int(bool(value))
        link.exchange(request(register, on, 4), lambda buf: b"")  # no acknowledgement comes
        stats = LinkStats()
        self.expect(SETTINGS)
        try:
            record = link.exchange(request(CMD_CELL_INFO), lambda buf: self.extract(buf, stats))
        finally:
            self.expect(None)
        if record[SWITCH_AT[action]] != on:
            raise ControlError(f"{self.name}: the {action} switch still reads "
                               f"{record[SWITCH_AT[action]]} after writing {on}")  # fmt: skip


def _jk04_hook(fields: dict[str, Any], payload: bytes) -> None:
    """Cells and the balance current from their float32 bits; voltage = the cells' sum."""
    volts = _floats(fields.pop("cell_bits"))
    if not all(math.isfinite(v) and 0.0 <= v < 10.0 for v in volts):
        raise FrameError("jkbms_ble: JK04 cell voltage out of range", payload)
    fields["cell_voltages"] = volts
    fields["cells"] = [v for v in volts if v > 0]
    fields["balancing"] = [0] * len(fields["cells"])  # the record names no balancing cells
    fields["voltage"] = sum(fields["cells"])
    (current,) = _floats([fields.pop("balance_current_bits")])
    fields["balance_current"] = current if math.isfinite(current) else None
