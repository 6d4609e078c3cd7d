"""Pure-Python twin of :mod:`bmsbank.native._frames` (same API, same results, same errors)."""

from __future__ import annotations

from collections.abc import Sequence

from bmsbank.errors import FrameError
from bmsbank.native.spec import (
    BAD,
    FORMATS,
    FRAME,
    NONE,
    PARTIAL,
    REASON_CHECKSUM,
    REASON_LENGTH,
    REASON_TRAILER,
    Field,
    Framing,
    validate_fields,
)

IMPLEMENTATION = "python"

Buffer = bytes | bytearray | memoryview


def _span(buf: Buffer, start: int, end: int | None) -> tuple[int, int]:
    n = len(buf)
    stop = n if end is None else end
    if start < 0 or stop > n or start > stop:
        raise ValueError(f"range {start}:{stop} outside buffer of {n} bytes")
    return start, stop


def sum8(buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """Sum of bytes modulo 256."""
    a, b = _span(buf, start, end)
    return sum(buf[a:b]) & 0xFF


def negsum16(buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """JBD check value: 0x10000 minus the byte sum, modulo 0x10000."""
    a, b = _span(buf, start, end)
    return (0x10000 - sum(buf[a:b])) & 0xFFFF


def crc16_modbus(buf: Buffer, start: int = 0, end: int | None = None) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    a, b = _span(buf, start, end)
    crc = 0xFFFF
    for i in range(a, b):
        crc ^= buf[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _raw(buf: Buffer, pos: int, fmt: str) -> int:
    size, signed, big = FORMATS[fmt]
    return int.from_bytes(buf[pos : pos + size], "big" if big else "little", signed=signed)


class FieldTable:
    """A compiled field table; :meth:`decode` turns a frame region into a dict."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields = tuple(fields)
        validate_fields(self.fields)

    def decode(self, buf: Buffer, start: int = 0, end: int | None = None) -> dict:
        """Decode every field of the table from ``buf[start:end]``.

        Raises:
            FrameError: a field lies outside the region or a count is impossible.

        """
        a, b = _span(buf, start, end)
        out: dict = {}
        for f in self.fields:
            size = f.size
            pos = a + f.offset
            if f.fmt == "str":
                if pos + f.count > b:
                    raise FrameError(f"field {f.name!r} beyond end of frame", bytes(buf[a:b]))
                text = bytes(buf[pos : pos + f.count]).split(b"\0", 1)[0]
                out[f.name] = "".join(chr(c) for c in text if 32 <= c < 127).strip()
                continue
            if f.count_from is not None:
                n = out[f.count_from]
            elif f.count == 0:
                n = max(0, (b - pos) // size)
            else:
                n = f.count
            if n < 0 or pos + n * size > b:
                raise FrameError(
                    f"field {f.name!r} ({n} x {size} B at {f.offset}) beyond end of frame",
                    bytes(buf[a:b]),
                )
            values = []
            for i in range(n):
                raw = _raw(buf, pos + i * size, f.fmt)
                values.append(raw if f.scale is None else raw * f.scale + f.bias)
            if f.count == 1 and f.count_from is None:
                out[f.name] = values[0]
            else:
                out[f.name] = values
        return out


class Scanner:
    """Finds and checks frames of one :class:`Framing` in a byte stream."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing

    def _total(self, buf: Buffer, p: int) -> int:
        """Total frame length starting at p; -1 when not yet known."""
        fr = self.framing
        if fr.fixed_length:
            return fr.fixed_length
        size = FORMATS[fr.length_fmt][0]
        if p + fr.length_offset + size > len(buf):
            return -1
        return _raw(buf, p + fr.length_offset, fr.length_fmt) + fr.length_adjust

    def _checked(self, buf: Buffer, p: int, e: int) -> bool:
        fr = self.framing
        lo, hi, at = p + fr.check_from, e + fr.check_end, e + fr.check_at
        if fr.check == "none":
            return True
        if lo > hi or at < p:
            return False
        if fr.check == "sum8":
            return sum8(buf, lo, hi) == buf[at]
        if fr.check == "negsum16be":
            return negsum16(buf, lo, hi) == (buf[at] << 8 | buf[at + 1])
        return crc16_modbus(buf, lo, hi) == (buf[at] | buf[at + 1] << 8)

    def scan(self, buf: Buffer, start: int = 0) -> tuple[int, int, int, int]:
        """Look for the first frame in ``buf[start:]``.

        Returns:
            ``(status, begin, end, reason)``: FRAME with the frame at ``buf[begin:end]``; PARTIAL
            when a frame starts at ``begin`` but is incomplete (``end`` is its total length end or
            -1); BAD when the candidate at ``begin`` is corrupt (``reason`` says why; ``end`` is
            the candidate's end, or ``begin + 1`` when its length is impossible; resume scanning
            at ``begin + 1``); NONE when no header is present (bytes before ``begin`` are noise).

        """
        fr = self.framing
        hdr = fr.header
        n = len(buf)
        if start < 0 or start > n:
            raise ValueError(f"start {start} outside buffer of {n} bytes")
        p = bytes(buf).find(hdr, start)
        if p < 0:
            # Keep a possible header prefix at the very end.
            keep = max(start, n - len(hdr) + 1)
            for q in range(keep, n):
                if hdr.startswith(bytes(buf[q:n])):
                    return NONE, q, q, 0
            return NONE, n, n, 0
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
        if not self._checked(buf, p, e):
            return BAD, p, e, REASON_CHECKSUM
        return FRAME, p, e, 0


__all__ = [
    "BAD",
    "FRAME",
    "IMPLEMENTATION",
    "NONE",
    "PARTIAL",
    "FieldTable",
    "Scanner",
    "crc16_modbus",
    "negsum16",
    "sum8",
]
