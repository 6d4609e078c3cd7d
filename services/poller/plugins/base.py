"""The engine every BMS family runs on: a family is data plus a few named hooks.

A family (``plugins/<name>/family.py``, class ``Family``) declares

- ``info``: its :class:`~bmsbank.services.poller.plugins.info.FamilyInfo` (metadata, options);
- ``framing``: one framer spec of :mod:`bmsbank.native.spec` (Binary, ModbusRtu, AsciiHex,
  FrameThenAck), compiled once into ``self.framer``;
- ``layouts``: reply part -> :class:`~bmsbank.native.spec.Layout` (fixed offsets, cursor, TLV,
  register or coil map), compiled once into ``self.tables``;
- ``queries(address)``: the requests of one poll cycle, how often each runs, and which collect
  several frames (:class:`Collect`);

and implements the hooks it needs: :meth:`Plugin.identify` (which part a reply is: by default
the byte at ``key_at``), :meth:`Plugin.refine` (what a table cannot express), :meth:`Plugin.state`
(the mapping to the state message), :meth:`Plugin.responder` (the address a reply comes from)
and :meth:`Plugin.control` (writes). It is transport-independent and never computes derived
values (power, min/max cell, delta): :func:`bmsbank.state.derive` does, for every BMS.

:func:`run_query` is how a request is exchanged and its reply (all its frames) decoded: the
poller, the control path and the tests all go through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bmsbank.errors import LINK_COUNTERS, ControlError, FrameError, LinkTimeout
from bmsbank.native.frames import (
    BAD,
    EXCEPTION,
    FRAME,
    REASON_TEXT,
    REASONS,
    FieldTable,
    TlvTable,
    crc16_modbus,
    framer,
    negsum16,
    take,
)
from bmsbank.native.spec import FrameSpec, Layout
from bmsbank.schema import ALARM, WARNING
from bmsbank.services.poller.plugins.info import FromInfo


@dataclass(frozen=True)
class Collect:
    """A request answered by several frames, each carrying its number (1 first).

    Attributes:
        index: the decoded field holding a frame's number.
        per_frame: items one frame carries (cells, sensors).
        count_from: (part, field) of an earlier reply giving the number of items; the frames
            expected are ceil(items / per_frame).
        frames: a fixed number of frames, when ``count_from`` is None.
        until: instead of a count, a decoded field that is non-zero on the last frame (at most
            ``frames`` frames, then the reply is incomplete).

    """

    index: str
    per_frame: int = 1
    count_from: tuple[str, str] | None = None
    frames: int = 0
    until: str | None = None

    def expected(self, parts: Mapping[str, Mapping[str, Any]]) -> int | None:
        """Frames to collect (the most, with ``until``), or None while the count is unknown."""
        if self.count_from is None:
            return self.frames
        part, name = self.count_from
        items = parts.get(part, {}).get(name)
        if not isinstance(items, int) or items < 0:
            return None
        return max(1, math.ceil(items / self.per_frame))


@dataclass(frozen=True)
class Query:
    """One request of a poll cycle.

    Attributes:
        part: name of the reply part this request asks for.
        request: the bytes to send.
        every: send on every n-th cycle; 0 means once, until it has succeeded.
        required: the state cannot be built without this part.
        expects_reply: False for a request nobody answers (a wake-up burst).
        collect: how the frames of a multi-frame reply are gathered (None: one frame).

    """

    part: str
    request: bytes
    every: int = 1
    required: bool = True
    expects_reply: bool = True
    collect: Collect | None = None


class LinkStats:
    """Error counters of one link: the declared set :data:`bmsbank.errors.LINK_COUNTERS`."""

    __slots__ = LINK_COUNTERS
    ok: int
    timeout: int
    truncated: int
    checksum: int
    length_check: int
    hex: int
    malformed: int
    tlv: int
    exception: int
    sequence: int
    address: int
    unexpected: int
    noise_bytes: int
    port_errors: int

    def __init__(self) -> None:
        for name in LINK_COUNTERS:
            setattr(self, name, 0)

    def count(self, kind: str, n: int = 1) -> None:
        """Count ``n`` events of ``kind``.

        Raises:
            ValueError: ``kind`` is not a declared counter (a bug, caught by the tests).

        """
        if kind not in LINK_COUNTERS:
            raise ValueError(f"unknown link counter {kind!r}")
        setattr(self, kind, getattr(self, kind) + n)

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict for the state message."""
        return {name: getattr(self, name) for name in LINK_COUNTERS}


class Link(Protocol):
    """A serial link as a family sees it (the poller's, or a simulator's in tests)."""

    #: seconds the link waits for a reply
    timeout: float

    def exchange(self, request: bytes, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """Send ``request`` and return the first reply ``extract`` takes out of what arrives.

        Raises:
            LinkTimeout: nothing (or only part of a reply) arrived within ``timeout``.
            FrameError: ``extract`` found a corrupt reply.
            TransportError: the port failed.

        """
        ...

    def receive(self, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """Return the next reply of the same exchange (a multi-frame reply); raises as above."""
        ...


ControlLink = Link  # the name the write hooks use


class Plugin(FromInfo):
    """Base class of a BMS family. Subclasses set the class attributes and the hooks they need.

    Name, title, speed, bus sharing, addresses and writes come from ``info`` (:class:`FromInfo`).
    """

    #: silence the bus needs between the end of a reply and the next request [s]
    command_gap: ClassVar[float] = 0.0
    #: how long to wait for a complete reply [s]
    reply_timeout: ClassVar[float] = 0.5
    #: how frames are delimited and checked
    framing: ClassVar[FrameSpec]
    #: reply part -> where its fields are; compiled once into ``self.tables``
    layouts: ClassVar[Mapping[str, Layout]] = {}
    #: payload offset of the byte that says which part a reply is (-1: no such byte), and its
    #: values (used by the default :meth:`identify`)
    key_at: ClassVar[int] = -1
    keys: ClassVar[Mapping[int, str]] = {}
    #: payload offset of the responder's address (-1: replies do not say; see :meth:`responder`)
    address_at: ClassVar[int] = -1

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        #: per-port options, validated, every declared one present
        self.options = self.info.option_values(options or {})
        self.framer = framer(self.framing)
        self.tables: dict[str, Any] = {
            part: TlvTable(layout.fields) if layout.mode == "tlv"  # type: ignore[arg-type]
            else FieldTable(layout.fields, layout.mode)  # type: ignore[arg-type]
            for part, layout in self.layouts.items()
        }  # fmt: skip

    # -- requests ---------------------------------------------------------------------------
    def queries(self, address: int) -> Sequence[Query]:
        """The requests of one poll cycle for the pack at ``address``, in order."""
        raise NotImplementedError

    def collecting(self, part: str) -> Collect | None:
        """How the frames of ``part`` are collected (None: one frame per reply)."""
        for q in self.queries(self.default_address):
            if q.part == part:
                return q.collect
        return None

    # -- replies ----------------------------------------------------------------------------
    def extract(self, buf: bytearray, stats: LinkStats) -> bytes | None:
        """Take the first complete frame out of ``buf``.

        Consumed bytes are deleted from ``buf``; skipped noise is counted in ``stats``.

        Returns:
            The frame, or None when more bytes are needed.

        Raises:
            FrameError: the bytes at the head of ``buf`` form a corrupt frame (one byte of it
                removed to resynchronise) or a Modbus exception reply (removed whole); its
                ``kind`` says which counter it belongs to.

        """
        status, noise, data, reason = take(self.framer, buf)  # the scan loop, compiled
        if noise:
            stats.noise_bytes += noise
        if status == FRAME:
            return data
        if status == EXCEPTION:
            raise FrameError(f"{self.name}: exception reply, code {data[2]}", data,
                             kind="exception")  # fmt: skip
        if status == BAD:
            raise FrameError(f"{self.name}: {REASON_TEXT[reason]}", data, kind=REASONS[reason])
        return None

    def parse(
        self, frame: bytes, request: bytes | None = None, address: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Decode one reply frame into ``(part, fields)``.

        Args:
            frame: a frame :meth:`extract` returned.
            request: the request it answers (needed where replies do not say what they
                answer, as in Modbus); None when unknown.
            address: the address asked, or None to accept any.

        Raises:
            FrameError: another responder ("address"), a reply for no known part
                ("unexpected"), or content the tables reject.

        """
        payload = self.framer.payload(frame)
        if address is not None:
            responder = self.responder(payload)
            if responder is not None and responder != address:
                said = f"address {responder}" if responder >= 0 else "an unknown responder"
                raise FrameError(f"{self.name}: reply from {said}, asked {address}", frame,
                                 kind="address")  # fmt: skip
        part, origin = self.identify(payload, request)
        if part not in self.layouts:
            return part, self.refine(part, {}, payload)
        return part, self.refine(part, self.decode(part, payload, origin), payload)

    def decode(self, part: str, payload: bytes, origin: int = 0) -> dict[str, Any]:
        """Decode ``part``'s fields from ``payload`` with its compiled table.

        Raises:
            FrameError: a field lies outside the payload, or a bad TLV entry.

        """
        start, end = self.layouts[part].region(payload)
        table = self.tables[part]
        if isinstance(table, TlvTable):
            return table.decode(payload, start, end)
        return table.decode(payload, start, end, origin)

    def identify(self, payload: bytes, request: bytes | None) -> tuple[str, int]:
        """Which part ``payload`` is, and the register its data starts at (register maps).

        The default reads the byte at ``key_at`` and looks it up in ``keys``.

        Raises:
            FrameError(kind="unexpected"): no part has this key.

        """
        key = payload[self.key_at] if 0 <= self.key_at < len(payload) else None
        part = self.keys.get(key) if key is not None else None
        if part is None:
            raise FrameError(f"{self.name}: reply of an unknown kind ({key})", payload,
                             kind="unexpected")  # fmt: skip
        return part, 0

    def expect(self, part: str | None) -> None:
        """Hear which part the replies :func:`run_query` waits for now are (None: any part).

        A hook for devices that stream records of several kinds unasked (JK BLE), whose
        :meth:`extract` then passes over complete records of other kinds; the default ignores it.
        """

    def refine(self, part: str, fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Add what the tables cannot express to ``fields`` (a hook; the default adds nothing).

        Raises:
            FrameError: the content is inconsistent.

        """
        return fields

    def responder(self, payload: bytes) -> int | None:
        """The address a reply comes from (None: the reply does not say)."""
        if 0 <= self.address_at < len(payload):
            return payload[self.address_at]
        return None

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Build the family's state fields from the decoded parts of one poll cycle.

        Returns the fields of the state message that come from the BMS (voltage, current, soc,
        soh, capacity, remaining, cycles, cells, balancing, temperatures, mosfet_temperature,
        charge_fet, discharge_fet, bms_ccl, bms_dcl, bms_cvl, alarms, hardware); everything else
        (ids, counters, derived values) is added by the poller.
        """
        raise NotImplementedError

    # -- writes ---------------------------------------------------------------------------
    def control(
        self,
        link: Link,
        address: int,
        action: str,
        value: Any,
        parts: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Carry out ``action`` with ``value`` on the pack at ``address`` and check the ack.

        Args:
            link: the serial link (the poller's, between two requests of its poll cycle).
            address: the pack's address.
            action: an action of ``controls``.
            value: the request's value (see ``bmsbank.schema.CONTROL_ACTIONS``).
            parts: the pack's latest decoded reply parts (read-modify-write context).

        Raises:
            ControlError: the action is not supported or the BMS refused it.
            LinkTimeout, FrameError, TransportError: from the link.

        """
        raise ControlError(f"{self.name} does not support {action}")


def run_query(
    plugin: Plugin,
    link: Link,
    q: Query,
    address: int,
    parts: Mapping[str, Mapping[str, Any]],
    stats: LinkStats,
) -> dict[str, Any]:
    """Send ``q`` over ``link`` and decode its reply, collecting every frame of a multi-frame one.

    Args:
        plugin: the family.
        link: the serial link.
        q: the request.
        address: the pack asked.
        parts: the pack's latest parts (a collecting query's count comes from them).
        stats: the link's counters (noise skipped between frames).

    Raises:
        LinkTimeout: no (complete) reply.
        FrameError: a corrupt, foreign or unexpected reply; a multi-frame reply with a missing,
            repeated or out-of-order frame ("sequence"); a collecting query whose count is not
            known yet ("truncated").

    """
    plugin.expect(q.part)
    try:
        return _run_query(plugin, link, q, address, parts, stats)
    finally:
        plugin.expect(None)


def _run_query(
    plugin: Plugin,
    link: Link,
    q: Query,
    address: int,
    parts: Mapping[str, Mapping[str, Any]],
    stats: LinkStats,
) -> dict[str, Any]:
    extract: Callable[[bytearray], bytes | None] = lambda buf: plugin.extract(buf, stats)  # noqa: E731
    if not q.expects_reply:
        link.exchange(q.request, lambda buf: b"")  # sent; nothing to wait for
        return {}
    if q.collect is None:
        part, fields = plugin.parse(link.exchange(q.request, extract), q.request, address)
        _check_part(plugin, q, part)
        return fields
    total = q.collect.expected(parts)
    if total is None:
        raise FrameError(f"{plugin.name}: {q.part} needs {q.collect.count_from} first",
                         kind="truncated")  # fmt: skip
    frames = []
    for number in range(1, total + 1):
        try:
            frame = link.exchange(q.request, extract) if number == 1 else link.receive(extract)
        except LinkTimeout:
            if number == 1:
                raise
            raise FrameError(f"{plugin.name}: {q.part} frame {number} of {total} missing",
                             kind="sequence") from None  # fmt: skip
        part, fields = plugin.parse(frame, q.request, address)
        _check_part(plugin, q, part)
        if fields.get(q.collect.index) != number:
            raise FrameError(f"{plugin.name}: {q.part} frame {fields.get(q.collect.index)} "
                             f"where {number} of {total} was due", frame,
                             kind="sequence")  # fmt: skip
        frames.append(fields)
        if q.collect.until is not None and fields.get(q.collect.until):
            break  # the frame that says it is the last
    else:
        if q.collect.until is not None:
            raise FrameError(f"{plugin.name}: {q.part}: no last frame within {total}",
                             kind="sequence")  # fmt: skip
    return merge_frames(frames, q.collect.index)


def _check_part(plugin: Plugin, q: Query, part: str) -> None:
    if part != q.part:
        raise FrameError(f"{plugin.name}: a {part} reply to a {q.part} request", kind="unexpected")


def merge_frames(frames: Sequence[Mapping[str, Any]], index: str) -> dict[str, Any]:
    """One part from the frames of a multi-frame reply, in order: lists joined, scalars first.

    Raises:
        FrameError(kind="sequence"): the frame numbers are not 1, 2, ... n.

    """
    numbers = [f.get(index) for f in frames]
    if numbers != list(range(1, len(frames) + 1)):
        raise FrameError(f"frames numbered {numbers}", kind="sequence")
    out: dict[str, Any] = {"frames": len(frames)}
    for fields in frames:
        for key, value in fields.items():
            if key == index:
                continue
            if isinstance(value, list):
                out.setdefault(key, []).extend(value)
            else:
                out.setdefault(key, value)
    return out


def modbus_frame(body: bytes) -> bytes:
    """``body`` followed by its CRC-16/MODBUS, low byte first (a Modbus RTU request or reply)."""
    return bytes(body) + crc16_modbus(body).to_bytes(2, "little")


def modbus_read(address: int, function: int, start: int, count: int) -> bytes:
    """A Modbus RTU read request: ``count`` registers (or coils) from ``start``."""
    return modbus_frame(
        bytes((address, function)) + start.to_bytes(2, "big") + count.to_bytes(2, "big")
    )


def length_field(chars: int) -> int:
    """LENGTH of an ASCII-hex frame for ``chars`` INFO characters: the LCHKSUM nibble, then LENID.

    The Pylontech-style frames of Seplos v2 (PDF20 §3.2), Pace and Daren/BASEN (§4.2).
    """
    lchksum = -((chars >> 8) + (chars >> 4 & 0xF) + (chars & 0xF)) & 0xF
    return lchksum << 12 | chars


def ascii_hex_frame(soi: bytes, head: bytes, info: bytes = b"") -> bytes:
    """An ASCII-hex frame, as :func:`length_field`'s families build their requests.

    ``soi``, then ``head`` (VER ADR CID1 CID2), LENGTH and ``info`` in upper-case hex, the negated
    16-bit sum of those characters and CR.
    """
    text = (head + length_field(2 * len(info)).to_bytes(2, "big") + info).hex().upper()
    data = text.encode("ascii")
    return soi + data + b"%04X\r" % negsum16(data)


def counted_length(info: bytes, steps: Sequence[tuple[int, int]]) -> int:
    """INFO length the counts in ``info`` announce (-1: cut short).

    ``steps``: per counted list, (bytes skipped before its count byte, bytes per element).
    """
    pos = 0
    for skip, size in steps:
        pos += skip
        if pos >= len(info):
            return -1
        pos += 1 + size * info[pos]
    return pos


def parse_modbus_read(request: bytes, functions: Sequence[int]) -> tuple[int, int, int, int] | None:
    """(address, function, start, count) of a read request with one of ``functions``, or None."""
    if len(request) != 8 or request[1] not in functions:
        return None
    if crc16_modbus(request, 0, 6) != request[6] | request[7] << 8:
        return None
    return request[0], request[1], request[2] << 8 | request[3], request[4] << 8 | request[5]


def answered_read(
    name: str,
    payload: bytes,
    request: bytes | None,
    functions: Sequence[int],
    size: Callable[[int, int], int] = lambda function, count: 2 * count,
) -> tuple[int, int, int]:
    """(function, start, count) of the read a Modbus reply answers: the reply says none of it.

    ``size(function, count)``: the data bytes a read answers with (registers: 2 each).

    Raises:
        FrameError: no request, or not a read of ``functions`` ("unexpected"); a reply from
            another address than asked ("address"); another function or byte count
            ("malformed").

    """
    read = parse_modbus_read(request, functions) if request is not None else None
    if read is None:
        asked = "no request" if request is None else f"request {request.hex(' ')}"
        raise FrameError(f"{name}: a reply is decoded with the read it answers ({asked})",
                         payload, kind="unexpected")  # fmt: skip
    address, function, start, count = read
    if payload[0] != address:
        raise FrameError(f"{name}: reply from address {payload[0]} to a request for {address}",
                         payload, kind="address")  # fmt: skip
    if payload[1] != function or payload[2] != size(function, count):
        raise FrameError(f"{name}: function {payload[1]} with {payload[2]} bytes does not answer "
                         f"a read of {count} from 0x{start:04X}", payload)  # fmt: skip
    return function, start, count


def bits(value: int, count: int) -> list[int]:
    """The lowest ``count`` bits of ``value`` as a list of 0/1, bit 0 first."""
    return [(value >> i) & 1 for i in range(count)]


def alarms_from_bits(value: int, table: Mapping[int, str], level: int = ALARM) -> dict[str, int]:
    """Map protection/alarm bits to alarm levels.

    Args:
        value: the BMS's bit field.
        table: bit number -> alarm name (several bits may map to one name).
        level: level to give an alarm whose bit is set.

    Returns:
        {alarm name: level} with every name of the table present (0 when no bit is set), so a
        receiver can tell "supported and OK" from "not supported".

    """
    out = dict.fromkeys(table.values(), 0)
    for bit, name in table.items():
        if (value >> bit) & 1:
            out[name] = level
    return out


def graded_alarms(
    value: int, alarms: Mapping[int, str], warnings: Mapping[int, str]
) -> dict[str, int]:
    """Alarm levels from one bit field whose bits are alarms (protections) or warnings.

    Every name of both tables is present; a name with a set bit in both tables gets the higher
    level (:data:`ALARM` over :data:`WARNING`).
    """
    out = alarms_from_bits(value, warnings, WARNING)
    for name, level in alarms_from_bits(value, alarms).items():
        out[name] = max(level, out.get(name, 0))
    return out


def swap_current_alarms(alarms: dict[str, int]) -> dict[str, int]:
    """``alarms`` with the charge and discharge over-current alarms exchanged, in place.

    For firmware whose current sign is inverted (the family's ``invert_current``): its
    "charge over-current" bit is then the discharge one.
    """
    alarms["high_charge_current"], alarms["high_discharge_current"] = (
        alarms["high_discharge_current"], alarms["high_charge_current"])  # fmt: skip
    return alarms


def require(parts: Mapping[str, Mapping[str, Any]], *names: str) -> None:
    """Raise FrameError when a part the state needs is missing."""
    missing = [n for n in names if n not in parts]
    if missing:
        raise FrameError(f"missing reply part(s): {', '.join(missing)}", kind="truncated")
