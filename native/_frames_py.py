"""Pure-Python twin of :mod:`bmsbank.native._frames` (same API, same results, same errors)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bmsbank.errors import FrameError
from bmsbank.native.spec import (
    BAD,
    BIG,
    CHECKS,
    EXCEPTION,
    FORMATS,
    FRAME,
    LITTLE,
    MODBUS_READS,
    NONE,
    PARTIAL,
    REASON_CHECKSUM,
    REASON_HEX,
    REASON_LENGTH,
    REASON_LENGTH_CHECK,
    REASON_NOT_TEXT,
    REASON_TRAILER,
    SKIP,
    TEXT_BYTES,
    AsciiHex,
    Binary,
    Check,
    Field,
    Fixed,
    FrameThenAck,
    ModbusRtu,
    Tag,
    TextLine,
    validate_fields,
    validate_tags,
)

IMPLEMENTATION = "python"

Buffer = bytes | bytearray | memoryview
HEX_DIGITS = b"0123456789abcdefABCDEF"


def _span(buf: Buffer, start: int, end: int | None) -> tuple[int, int]:
    n = len(buf)
    stop = n if end is None else end
    if start < 0 or stop > n or start > stop:
        raise ValueError(f"range {start}:{stop} outside buffer of {n} bytes")
    return start, stop


# -- checks (one function per entry of spec.CHECKS, same order) ------------------------------
def _none(buf: Buffer, a: int, b: int) -> int:
    return 0


def _sum8(buf: Buffer, a: int, b: int) -> int:
    return sum(buf[a:b]) & 0xFF


def _sum16(buf: Buffer, a: int, b: int) -> int:
    return sum(buf[a:b]) & 0xFFFF


def _negsum16(buf: Buffer, a: int, b: int) -> int:
    return (0x10000 - sum(buf[a:b])) & 0xFFFF


def _crc_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """CRC-16/MODBUS and CRC-8/SMBus of every byte value: one table step per byte, not eight."""
    crc16, crc8 = [], []
    for i in range(256):
        v = w = i
        for _ in range(8):
            v = (v >> 1) ^ 0xA001 if v & 1 else v >> 1
            w = ((w << 1) ^ 0x07) & 0xFF if w & 0x80 else (w << 1) & 0xFF
        crc16.append(v)
        crc8.append(w)
    return tuple(crc16), tuple(crc8)


_CRC16_TABLE, _CRC8_TABLE = _crc_tables()


def _crc16_modbus(buf: Buffer, a: int, b: int) -> int:
    crc = 0xFFFF
    table = _CRC16_TABLE
    for c in buf[a:b]:
        crc = (crc >> 8) ^ table[(crc ^ c) & 0xFF]
    return crc


def _xor8(buf: Buffer, a: int, b: int) -> int:
    x = 0
    for i in range(a, b):
        x ^= buf[i]
    return x


def _crc8_smbus(buf: Buffer, a: int, b: int) -> int:
    crc = 0
    table = _CRC8_TABLE
    for c in buf[a:b]:
        crc = table[crc ^ c]
    return crc


_CHECK_FUNCTIONS = {
    "none": _none, "sum8": _sum8, "sum16": _sum16, "negsum16": _negsum16,
    "crc16_modbus": _crc16_modbus, "xor8": _xor8, "crc8_smbus": _crc8_smbus,
}  # fmt: skip
assert tuple(_CHECK_FUNCTIONS) == CHECKS


def checksum(algorithm: str, buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """The check value of ``buf[start:end]`` with ``algorithm`` (a name of ``spec.CHECKS``)."""
    try:
        fn = _CHECK_FUNCTIONS[algorithm]
    except KeyError:
        raise ValueError(f"unknown check {algorithm!r}") from None
    a, b = _span(buf, start, end)
    return fn(buf, a, b)


def sum8(buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """Sum of bytes modulo 256."""
    return checksum("sum8", buf, start, end)


def negsum16(buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """JBD / Pylon check value: 0x10000 minus the byte sum, modulo 0x10000."""
    return checksum("negsum16", buf, start, end)


def crc16_modbus(buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    return checksum("crc16_modbus", buf, start, end)


def _hexval(c: int) -> int:
    """Value of one ASCII hex digit, -1 for any other byte."""
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


def _hex_number(buf: Buffer, pos: int, digits: int) -> int:
    """The number written as ``digits`` hex characters at ``pos``; -1 when one is not hex."""
    value = 0
    for i in range(digits):
        d = _hexval(buf[pos + i])
        if d < 0:
            return -1
        value = value << 4 | d
    return value


def _stored(buf: Buffer, at: int, fmt: str) -> int:
    if fmt == "hex4":
        return _hex_number(buf, at, 4)
    return _raw(buf, at, fmt)


def _check_ok(chk: Check, buf: Buffer, p: int, e: int) -> bool:
    """Whether the frame ``buf[p:e]`` carries the right check value."""
    if chk.algorithm == "none":
        return True
    lo, hi, at = p + chk.start, e + chk.end, e + chk.at
    if lo > hi or at < p or at + chk.size > e:
        return False
    value = _CHECK_FUNCTIONS[chk.algorithm](buf, lo, hi)
    bits = 16 if chk.fmt == "hex4" else 8 * chk.size
    return _stored(buf, at, chk.fmt) == value & ((1 << bits) - 1)


# -- field decoding -------------------------------------------------------------------------
def _raw(buf: Buffer, pos: int, fmt: str) -> int:
    size, signed, order = FORMATS[fmt]
    data = bytes(buf[pos : pos + size])
    if order == LITTLE:
        return int.from_bytes(data, "little", signed=signed)
    if order == BIG:
        return int.from_bytes(data, "big", signed=signed)
    return int.from_bytes(data[2:] + data[:2], "big", signed=signed)


def _ascii(buf: Buffer, pos: int, count: int) -> str:
    text = bytes(buf[pos : pos + count]).split(b"\0", 1)[0]
    return "".join(chr(c) for c in text if 32 <= c < 127).strip()


def _value(f: Field, raw: int) -> int | float | None:
    if f.unknown is not None and raw == f.unknown:
        return None
    return raw if f.scale is None else raw * f.scale + f.bias


class FieldTable:
    """A compiled field table; :meth:`decode` turns a payload region into a dict."""

    def __init__(self, fields: Sequence[Field], mode: str = "fixed") -> None:
        self.fields = tuple(fields)
        self.mode = mode
        validate_fields(self.fields, mode)

    def decode(self, buf: Buffer, start: int = 0, end: int | None = None, origin: int = 0) -> dict:
        """Decode the fields of the table from ``buf[start:end]``.

        Args:
            buf: the payload.
            start: first byte of the region.
            end: end of the region (None: the buffer's end).
            origin: register or coil number of the region's first byte (register and coil maps).

        Raises:
            FrameError: a field lies outside the region or a count is impossible (fixed and
                cursor mode; a register or coil map leaves fields outside its window out).

        """
        a, b = _span(buf, start, end)
        mode = self.mode
        windowed = mode in ("registers", "coils")
        out: dict = {}
        cursor = a
        for f in self.fields:
            if mode == "fixed":
                pos = a + f.offset
            elif mode == "cursor":
                pos = cursor + f.offset
            elif mode == "registers":
                pos = a + (f.offset - origin) * 2
            else:
                pos = f.offset - origin  # bit index
            if windowed and pos < (0 if mode == "coils" else a):
                continue
            if f.fmt == "str":
                count = f.count or max(0, b - pos)
                if pos + count > b:
                    if windowed:
                        continue
                    raise FrameError(f"field {f.name!r} beyond end of frame", bytes(buf[a:b]))
                out[f.name] = _ascii(buf, pos, count)
                cursor = pos + count
                continue
            if mode == "coils":
                self._coils(buf, a, b, f, pos, out)
                continue
            step, size = f.step, f.size
            if f.count_from is not None:
                if f.count_from not in out:
                    continue  # its count lies outside a register window
                n = out[f.count_from]
            elif f.count == 0:
                n = (b - pos - size) // step + 1 if b - pos >= size else 0
            else:
                n = f.count
            if n < 0 or (n > 0 and pos + (n - 1) * step + size > b):
                if windowed:
                    continue
                raise FrameError(
                    f"field {f.name!r} ({n} x {size} B at {f.offset}) beyond end of frame",
                    bytes(buf[a:b]),
                )
            values = [_value(f, _raw(buf, pos + i * step, f.fmt)) for i in range(n)]
            cursor = pos + n * step
            if f.count == 1 and f.count_from is None:
                out[f.name] = values[0]
            else:
                out[f.name] = values
        return out

    @staticmethod
    def _coils(buf: Buffer, a: int, b: int, f: Field, bit: int, out: dict) -> None:
        n = f.count if f.count else (b - a) * 8 - bit
        if f.count_from is not None:
            if f.count_from not in out:
                return
            n = out[f.count_from]
        if n < 0 or (n > 0 and a + (bit + n - 1) // 8 >= b):
            return
        values = [(buf[a + (bit + i) // 8] >> ((bit + i) % 8)) & 1 for i in range(n)]
        out[f.name] = values[0] if f.count == 1 and f.count_from is None else values


class TlvTable:
    """A compiled TLV table: a sequence of ``tag value`` entries, sizes from the table."""

    def __init__(self, tags: Sequence[Tag]) -> None:
        self.tags = tuple(tags)
        validate_tags(self.tags)
        self._by_tag = {t.tag: (t, FieldTable(t.fields)) for t in self.tags}

    def decode(self, buf: Buffer, start: int = 0, end: int | None = None) -> dict:
        """Decode every entry of ``buf[start:end]``.

        Raises:
            FrameError(kind="tlv"): an unknown tag (its size is unknown, so nothing after it can
                be read) or a value that runs past the region.

        """
        a, b = _span(buf, start, end)
        out: dict = {}
        p = a
        while p < b:
            entry = self._by_tag.get(buf[p])
            if entry is None:
                raise FrameError(f"unknown TLV tag 0x{buf[p]:02X} at {p - a}", bytes(buf[a:b]),
                                 kind="tlv")  # fmt: skip
            tag, table = entry
            p += 1
            size = tag.size
            if not size:
                width = FORMATS[tag.prefix][0]
                if p + width > b:
                    raise FrameError(f"TLV tag 0x{tag.tag:02X}: length beyond the payload",
                                     bytes(buf[a:b]), kind="tlv")  # fmt: skip
                size = _raw(buf, p, tag.prefix)
                p += width
            if p + size > b:
                raise FrameError(f"TLV tag 0x{tag.tag:02X}: {size}-byte value beyond the payload",
                                 bytes(buf[a:b]), kind="tlv")  # fmt: skip
            try:
                out.update(table.decode(buf, p, p + size))
            except FrameError as exc:
                raise FrameError(f"TLV tag 0x{tag.tag:02X}: {exc.reason}", exc.raw,
                                 kind="tlv") from None  # fmt: skip
            p += size
        return out


# -- framers ---------------------------------------------------------------------------------
def _frame_bytes(buf: Buffer, begin: int, end: int | None) -> bytes:
    """``buf[begin:end]`` as bytes, the range checked (what binary framers hand the layouts)."""
    a, b = _span(buf, begin, end)
    return bytes(buf[a:b])


def _searchable(buf: Buffer) -> bytes | bytearray:
    """``buf`` itself when ``find`` and regular expressions can search it, else a copy.

    A copy for a memoryview (maybe strided): not on the hot path, where ``take`` gets a bytearray.
    """
    return buf if isinstance(buf, (bytes, bytearray)) else bytes(buf)


def _find(buf: Buffer, needle: bytes, start: int) -> int:
    """``buf.find(needle, start)``, without copying a bytes or bytearray buffer."""
    return _searchable(buf).find(needle, start)


def _checked_start(buf: Buffer, start: int) -> int:
    n = len(buf)
    if start < 0 or start > n:
        raise ValueError(f"start {start} outside buffer of {n} bytes")
    return n


class _Framer:
    """What the framers share: ``scan`` and the resynchronisation :func:`take` uses."""

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first frame in ``buf[start:]`` (see :meth:`BinaryFramer.scan`)."""
        raise NotImplementedError

    def _resync(self, n: int, begin: int, end: int) -> int:
        """Bytes to drop after a corrupt candidate: its first (a frame may start inside it)."""
        return 1

    def payload(self, buf: Buffer, begin: int = 0, end: int | None = None) -> bytes:
        """The bytes the layouts read: the frame as received.

        That is frame, pad and ack for a frame-then-ack reply; a Modbus read reply's data
        starts at byte 3.
        """
        return _frame_bytes(buf, begin, end)


class BinaryFramer(_Framer):
    """Finds and checks :class:`~bmsbank.native.spec.Binary` frames in a byte stream."""

    def __init__(self, spec: Binary) -> None:
        self.spec = spec
        # the first byte that is not padding (a run of pads is skipped in one search)
        self._not_pad = re.compile(b"[^\\x%02x]" % spec.pad) if spec.pad >= 0 else None

    def _total(self, buf: Buffer, p: int) -> int:
        """Total frame length starting at p; -1 when not yet known."""
        fr = self.spec
        if fr.fixed_length:
            return fr.fixed_length
        size = FORMATS[fr.length_fmt][0]
        if p + fr.length_offset + size > len(buf):
            return -1
        return _raw(buf, p + fr.length_offset, fr.length_fmt) + fr.length_adjust

    def _pad_run(self, buf: Buffer, start: int) -> int:
        if self._not_pad is None:
            return 0
        found = self._not_pad.search(_searchable(buf), start)
        return (found.start() if found else len(buf)) - start

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first frame in ``buf[start:]``.

        Returns:
            ``(status, begin, end, reason)``, see ``spec.FRAME`` and its siblings: FRAME with
            the frame at ``buf[begin:end]`` (the first whole one: a start whose length runs
            past the bytes gives way to a whole frame after it, since it may be noise);
            PARTIAL when a frame starts at ``begin`` but is incomplete (``end`` is its end or
            -1) and no whole frame follows it; BAD when the candidate at ``begin`` is
            corrupt (``end`` is the candidate's end, or ``begin + 1`` when its length is
            impossible; resume at ``begin + 1``); NONE when no header is present (bytes before
            ``begin`` are noise); SKIP for line padding at ``start``.

        """
        fr = self.spec
        hdr = fr.header
        n = _checked_start(buf, start)
        run = self._pad_run(buf, start)
        if run:
            return SKIP, start, start + run, 0
        p = _find(buf, hdr, start)
        if p < 0:
            keep = max(start, n - len(hdr) + 1)  # keep a possible header prefix at the end
            for q in range(keep, n):
                if hdr.startswith(bytes(buf[q:n])):
                    return NONE, q, q, 0
            return NONE, n, n, 0
        first = self._candidate(buf, p)
        if first[0] != PARTIAL or fr.fixed_length:
            return first
        # A start whose length runs past the bytes may be noise hiding a whole frame after it
        # (never so with a fixed length): the first complete frame within its span wins.
        q = _find(buf, hdr, p + 1)
        while q >= 0:
            later = self._candidate(buf, q)
            if later[0] == FRAME:
                return later
            q = _find(buf, hdr, q + 1)
        return first

    def _candidate(self, buf: Buffer, p: int) -> tuple[int, int, int, int]:
        """The frame that the header at ``p`` announces, checked."""
        fr = self.spec
        hdr = fr.header
        n = len(buf)
        total = self._total(buf, p)
        if total < 0:
            return PARTIAL, p, -1, 0
        if total < len(hdr) + len(fr.trailer) or total > fr.max_length:
            return BAD, p, p + 1, REASON_LENGTH
        e = p + total
        if e > n:
            return PARTIAL, p, e, 0
        if fr.trailer and bytes(buf[e - len(fr.trailer) : e]) != fr.trailer:
            return BAD, p, e, REASON_TRAILER
        if not _check_ok(fr.check, buf, p, e):
            return BAD, p, e, REASON_CHECKSUM
        return FRAME, p, e, 0


class ModbusFramer(_Framer):
    """Finds and checks :class:`~bmsbank.native.spec.ModbusRtu` frames (no header to look for)."""

    def __init__(self, spec: ModbusRtu) -> None:
        self.spec = spec
        # A candidate start: an address in range, then an accepted function code (an exception
        # reply's too) or the end of the bytes. The regular expression finds them at C speed,
        # one byte at a time (its match is one byte long, so overlapping starts are all found).
        lo, hi = spec.addresses
        codes = set(spec.functions)
        if not spec.requests:
            codes |= {f | 0x80 for f in spec.functions}
        after = "".join(f"\\x{c:02x}" for c in sorted(codes))
        self._start_re = re.compile(f"[\\x{lo:02x}-\\x{hi:02x}](?=[{after}]|\\Z)".encode())
        self._long = frozenset(spec.long_functions)

    def _total(self, buf: Buffer, p: int) -> int:
        n = len(buf)
        if p + 1 >= n:
            return -1
        fc = buf[p + 1]
        if fc & 0x80:
            return 5
        if fc in self._long:  # addr fc start end n:u16be data[n] crc
            return 10 + (buf[p + 6] << 8 | buf[p + 7]) if p + 7 < n else -1
        if self.spec.requests:
            if fc in (15, 16):
                return 9 + buf[p + 6] if p + 6 < n else -1
            return 8
        if fc in MODBUS_READS:
            return 5 + buf[p + 2] if p + 2 < n else -1
        return 8

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first frame in ``buf[start:]`` (result as ``BinaryFramer.scan``).

        Modbus frames have no header, so any byte may look like a frame start: the first
        candidate that checks wins (FRAME, or EXCEPTION for a valid exception reply); failing
        that the first one still incomplete (PARTIAL: more bytes may complete it) or corrupt
        where the bytes end (BAD: a damaged reply), then the first corrupt one. A read reply
        with a byte count of 0 is not a candidate. One pass: each position is looked at once.
        """
        n = _checked_start(buf, start)
        pending = bad = None
        for match in self._start_re.finditer(_searchable(buf), start):
            found = self._candidate(buf, match.start())
            if found is None:
                continue
            if found[0] in (FRAME, EXCEPTION):
                return found
            if found[0] == PARTIAL or found[2] == n:
                pending = pending or found
            else:
                bad = bad or found
        return pending or bad or (NONE, n, n, 0)

    def _candidate(self, buf: Buffer, p: int) -> tuple[int, int, int, int] | None:
        total = self._total(buf, p)
        if total == 5 and not buf[p + 1] & 0x80:
            return None  # a read reply of no data: not a frame
        if total < 0:
            return PARTIAL, p, -1, 0
        if total > self.spec.max_length:
            return BAD, p, p + 1, REASON_LENGTH
        e = p + total
        if e > len(buf):
            return PARTIAL, p, e, 0
        if _crc16_modbus(buf, p, e - 2) != (buf[e - 2] | buf[e - 1] << 8):
            return BAD, p, e, REASON_CHECKSUM
        return (EXCEPTION if buf[p + 1] & 0x80 else FRAME), p, e, 0

    def _resync(self, n: int, begin: int, end: int) -> int:
        """Everything, after a corrupt candidate that ends before the bytes do.

        :meth:`scan` reports such a candidate only when no frame and no incomplete candidate
        lies anywhere after ``begin``: the bytes there cannot become a frame, whatever follows,
        and looking at them again for each false start would cost a pass per start. One that
        ends where the bytes end may be a damaged reply still growing: drop its first byte.
        """
        return n - begin if end < n else 1


class AsciiFramer(_Framer):
    """Finds and checks :class:`~bmsbank.native.spec.AsciiHex` frames; unhexlifies them once."""

    def __init__(self, spec: AsciiHex) -> None:
        self.spec = spec
        # several start bytes: the first of any of them (one: a plain find)
        self._sois = re.compile(b"[%s]" % b"".join(b"\\x%02x" % c for c in spec.soi))

    def _soi_at(self, buf: Buffer, start: int) -> int:
        """First SOI at or after ``start``, -1 when none."""
        if len(self.spec.soi) == 1:
            return _find(buf, self.spec.soi, start)
        found = self._sois.search(_searchable(buf), start)
        return found.start() if found else -1

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first frame in ``buf[start:]`` (result as ``BinaryFramer.scan``)."""
        n = _checked_start(buf, start)
        p = self._soi_at(buf, start)
        if p < 0:
            return NONE, n, n, 0
        first = self._candidate(buf, p)
        if first[0] != PARTIAL:
            return first
        q = self._soi_at(buf, p + 1)  # a whole frame after an SOI cut short wins (as binary)
        while q >= 0:
            later = self._candidate(buf, q)
            if later[0] == FRAME:
                return later
            q = self._soi_at(buf, q + 1)
        return first

    def _candidate(self, buf: Buffer, p: int) -> tuple[int, int, int, int]:
        """The frame that the SOI at ``p`` announces, checked."""
        sp = self.spec
        n = len(buf)
        lat = p + 1 + sp.head  # LENGTH's first character
        if lat + 4 > n:
            if any(_hexval(c) < 0 for c in buf[p + 1 : n]):
                return BAD, p, p + 1, REASON_HEX
            return PARTIAL, p, -1, 0
        if sp.head and _hex_number(buf, p + 1, sp.head) < 0:
            return BAD, p, p + 1, REASON_HEX
        length = _hex_number(buf, lat, 4)
        if length < 0:
            return BAD, p, p + 1, REASON_HEX
        lenid = length & 0xFFF
        if (-((lenid >> 8) + (lenid >> 4 & 0xF) + (lenid & 0xF))) & 0xF != length >> 12:
            return BAD, p, p + 1, REASON_LENGTH_CHECK
        if lenid % 2 or lenid > sp.max_info:
            return BAD, p, p + 1, REASON_LENGTH
        e = lat + 4 + lenid + 4 + 1
        if e > n:
            return PARTIAL, p, e, 0
        if buf[e - 1] != sp.eoi[0]:
            return BAD, p, e, REASON_TRAILER
        for i in range(lat + 4, e - 1):
            if _hexval(buf[i]) < 0:
                return BAD, p, e, REASON_HEX
        if _negsum16(buf, p + 1, e - 5) != _hex_number(buf, e - 5, 4):
            return BAD, p, e, REASON_CHECKSUM
        return FRAME, p, e, 0

    def payload(self, buf: Buffer, begin: int = 0, end: int | None = None) -> bytes:
        """The frame between SOI and CHKSUM as bytes: VER ADR CID1 CID2 LENGTH(2) INFO.

        Raises:
            FrameError(kind="hex"): the region is not whole hex bytes.

        """
        a, b = _span(buf, begin, end)
        text = bytes(buf[a + 1 : b - 5])
        if len(text) % 2 or any(_hexval(c) < 0 for c in text):
            raise FrameError("not an ASCII-hex frame", bytes(buf[a:b]), kind="hex")
        return bytes.fromhex(text.decode("ascii"))


class AckFramer(_Framer):
    """Finds :class:`~bmsbank.native.spec.FrameThenAck` replies: a frame, then its ack."""

    def __init__(self, spec: FrameThenAck) -> None:
        self.spec = spec
        self._frame = BinaryFramer(spec.frame)

    def _ack_shape(self, buf: Buffer, q: int) -> bool:
        """Whether the bytes at ``q`` (as many as there are) begin like an acknowledgement."""
        pattern = self.spec.ack_pattern
        return all(e is None or buf[q + i] == e for i, e in enumerate(pattern[: len(buf) - q]))

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first reply in ``buf[start:]`` (result as ``BinaryFramer.scan``).

        FRAME spans the frame, the pad and the ack (and a pad after it when present), or the
        frame alone when what follows is not an acknowledgement. A frame without anything
        after it yet is PARTIAL: its ack may still come.
        """
        status, p, e, reason = self._frame.scan(buf, start)
        if status != FRAME:
            return status, p, e, reason
        n = len(buf)
        pad = self.spec.frame.pad
        q = e + (1 if e < n and buf[e] == pad else 0)
        if q >= n:
            return PARTIAL, p, -1, 0
        if not self._ack_shape(buf, q):
            return FRAME, p, e, 0
        end = q + self.spec.ack_length
        if end > n:
            return PARTIAL, p, end, 0
        if not _check_ok(self.spec.ack_check, buf, q, end):
            return BAD, p, end, REASON_CHECKSUM
        return FRAME, p, end + (1 if end < n and buf[end] == pad else 0), 0


class FixedFramer(_Framer):
    """Takes :class:`~bmsbank.native.spec.Fixed` frames: the first ``length`` bytes, unchecked."""

    def __init__(self, spec: Fixed) -> None:
        self.spec = spec

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """FRAME of the ``length`` bytes at ``start``; PARTIAL while fewer; NONE when empty."""
        n = _checked_start(buf, start)
        e = start + self.spec.length
        if e <= n:
            return FRAME, start, e, 0
        return (PARTIAL, start, e, 0) if n > start else (NONE, n, n, 0)


_IS_TEXT = tuple(c in TEXT_BYTES for c in range(256))
_BLANK = b" \t\r"


class TextLineFramer(_Framer):
    """Finds :class:`~bmsbank.native.spec.TextLine` lines: text, then the terminator."""

    def __init__(self, spec: TextLine) -> None:
        self.spec = spec
        self.end = spec.end[0]
        self.skip = frozenset(spec.skip)

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first line in ``buf[start:]`` (the statuses of :meth:`BinaryFramer.scan`).

        BAD: a line cut by a byte that is not text (``end`` is that byte; the text before it
        goes whole) or longer than ``max_length``. SKIP: a blank or skipped line at ``start``.
        """
        n = _checked_start(buf, start)
        is_text, end, longest = _IS_TEXT, self.end, self.spec.max_length
        pos = start
        while True:
            p = pos
            while p < n and not is_text[buf[p]] and buf[p] != end:
                p += 1  # noise between lines
            if p == n:
                return NONE, n, n, 0
            q = p
            while q < n and is_text[buf[q]]:
                q += 1
            if q == n:
                return (BAD, p, n, REASON_LENGTH) if q - p >= longest else (PARTIAL, p, -1, 0)
            if buf[q] != end:
                return BAD, p, q, REASON_NOT_TEXT
            e = q + 1
            if e - p > longest:
                return BAD, p, e, REASON_LENGTH
            line = bytes(buf[p:q]).rstrip(b"\r")
            if line.strip(_BLANK) and line not in self.skip:
                return FRAME, p, e, 0
            if p == start:
                return SKIP, p, e, 0  # a blank line or an echo: dropped uncounted
            pos = e  # after noise: counted with it

    def _resync(self, n: int, begin: int, end: int) -> int:
        """A corrupt line goes whole (up to the byte that cut it): its text starts no frame."""
        return max(1, end - begin)


Framer = BinaryFramer | ModbusFramer | AsciiFramer | AckFramer | FixedFramer | TextLineFramer


def framer(spec: Binary | ModbusRtu | AsciiHex | FrameThenAck | Fixed | TextLine) -> Framer:
    """The framer for ``spec`` (a framer class of :mod:`bmsbank.native.spec`)."""
    if isinstance(spec, Binary):
        return BinaryFramer(spec)
    if isinstance(spec, ModbusRtu):
        return ModbusFramer(spec)
    if isinstance(spec, AsciiHex):
        return AsciiFramer(spec)
    if isinstance(spec, FrameThenAck):
        return AckFramer(spec)
    if isinstance(spec, Fixed):
        return FixedFramer(spec)
    if isinstance(spec, TextLine):
        return TextLineFramer(spec)
    raise TypeError(f"not a framing spec: {spec!r}")


def take(framer: Framer, buf: bytearray) -> tuple[int, int, bytes, int]:
    """Take the first frame out of ``buf``: the scan loop every family's ``extract`` runs.

    Line padding is dropped, noise before a frame start is dropped and counted, a frame is
    removed whole and returned, a Modbus exception reply too, and of a corrupt candidate one
    byte is dropped (to resynchronise; a Modbus candidate that ends before the bytes do takes
    all of them, see :meth:`ModbusFramer._resync`, the rest counted as noise) and its bytes
    returned. A frame start cut short by the end of the bytes is kept for the next call.

    The work is linear in the bytes consumed: the scan resumes where the last step ended and
    the consumed bytes are deleted once.

    Returns:
        (status, noise bytes dropped, data, reason): status FRAME or EXCEPTION with the frame,
        BAD with the corrupt candidate's bytes and its reason code, or NONE / PARTIAL (more bytes
        needed) with no bytes.
    """
    pos = 0
    while True:
        status, begin, end, reason = framer.scan(buf, pos)
        if status != SKIP:
            break
        pos = end  # line padding: dropped, not counted
    noise = begin - pos
    data = b""
    if status == FRAME or status == EXCEPTION:
        data, cut = bytes(buf[begin:end]), end
    elif status == BAD:
        drop = framer._resync(len(buf), begin, end)
        noise += drop - 1
        data, cut = bytes(buf[begin : max(begin + 1, end)]), begin + drop
    else:
        cut = begin
    if cut:
        del buf[:cut]
    return status, noise, data, reason


__all__ = [
    "BAD",
    "EXCEPTION",
    "FRAME",
    "IMPLEMENTATION",
    "NONE",
    "PARTIAL",
    "SKIP",
    "AckFramer",
    "AsciiFramer",
    "BinaryFramer",
    "FieldTable",
    "FixedFramer",
    "ModbusFramer",
    "TextLineFramer",
    "TlvTable",
    "checksum",
    "crc16_modbus",
    "framer",
    "negsum16",
    "sum8",
    "take",
]
