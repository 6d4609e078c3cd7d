"""Declarative frame specifications shared by the compiled codec and its pure-Python twin.

A plugin describes its fields and framing as data; :class:`FieldTable` and :class:`Scanner` (from
``bmsbank.native.frames``) compile them once. Validation happens here, at load time, so a bad table
fails when a plugin is imported, never while decoding a frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: fmt -> (size in bytes, signed, big endian). "str" is ASCII text of ``count`` bytes.
FORMATS: dict[str, tuple[int, bool, bool]] = {
    "u8": (1, False, True),
    "s8": (1, True, True),
    "u16be": (2, False, True),
    "s16be": (2, True, True),
    "u16le": (2, False, False),
    "s16le": (2, True, False),
    "u32be": (4, False, True),
    "s32be": (4, True, True),
    "u32le": (4, False, False),
    "s32le": (4, True, False),
    "str": (1, False, True),
}
FORMAT_CODES: dict[str, int] = {name: code for code, name in enumerate(FORMATS)}
STR_CODE = FORMAT_CODES["str"]

CHECKS = ("none", "sum8", "negsum16be", "crc16le")

# Scanner results: (status, begin, end, reason)
FRAME, PARTIAL, BAD, NONE = 0, 1, 2, 3
#: reason codes for BAD
REASON_LENGTH, REASON_TRAILER, REASON_CHECKSUM = 1, 2, 3
REASONS = {REASON_LENGTH: "length", REASON_TRAILER: "trailer", REASON_CHECKSUM: "checksum"}


@dataclass(frozen=True)
class Field:
    """One value in a frame.

    Attributes:
        name: key in the decoded dict (use the state-message name when it maps 1:1).
        offset: byte offset from the start of the decoded region.
        fmt: a key of :data:`FORMATS`.
        scale: multiply the raw integer by this; ``None`` keeps the raw integer (flags, counts).
        bias: added after scaling (for example -273.15 for 0.1 K temperatures).
        count: 1 for a scalar, n > 1 for a list of n, 0 for "as many as fit before the end";
            for ``str`` the number of bytes.
        count_from: name of an earlier raw-integer scalar giving the list length.

    """

    name: str
    offset: int
    fmt: str
    scale: float | None = None
    bias: float = 0.0
    count: int = 1
    count_from: str | None = None

    @property
    def size(self) -> int:
        """Size in bytes of one element."""
        return FORMATS[self.fmt][0]


def validate_fields(fields: tuple[Field, ...] | list[Field]) -> None:
    """Reject an inconsistent field table (raises ValueError naming the field)."""
    seen: dict[str, Field] = {}
    for f in fields:
        if f.fmt not in FORMATS:
            raise ValueError(f"field {f.name!r}: unknown fmt {f.fmt!r}")
        if f.offset < 0 or f.count < 0:
            raise ValueError(f"field {f.name!r}: offset and count must be >= 0")
        if f.name in seen:
            raise ValueError(f"field {f.name!r}: duplicate name")
        if f.fmt == "str" and (f.count < 1 or f.count_from or f.scale is not None):
            raise ValueError(f"field {f.name!r}: str needs a fixed byte count and no scale")
        if f.count_from is not None:
            src = seen.get(f.count_from)
            if src is None or src.count != 1 or src.scale is not None or src.fmt == "str":
                raise ValueError(
                    f"field {f.name!r}: count_from must name an earlier raw integer scalar"
                )
        seen[f.name] = f


@dataclass(frozen=True)
class Framing:
    """How frames of one protocol are delimited and checked.

    Attributes:
        header: bytes every frame starts with.
        fixed_length: total frame length when constant (0 when a length field gives it).
        length_offset: offset of the length byte(s) from the frame start (when not fixed).
        length_fmt: fmt of the length field ("u8", "u16be", "u16le").
        length_adjust: total frame length = length value + this.
        max_length: longest frame accepted; a longer length field means a corrupt frame.
        check: one of :data:`CHECKS`.
        check_from: first byte covered by the check, from the frame start.
        check_end: end (exclusive) of the covered bytes, counted back from the frame end (<= 0).
        check_at: offset of the check value, counted back from the frame end (< 0).
        trailer: bytes every frame ends with.

    """

    header: bytes
    fixed_length: int = 0
    length_offset: int = 0
    length_fmt: str = "u8"
    length_adjust: int = 0
    max_length: int = 512
    check: str = "none"
    check_from: int = 0
    check_end: int = 0
    check_at: int = -1
    trailer: bytes = b""

    def __post_init__(self) -> None:
        if not self.header:
            raise ValueError("framing: header must not be empty")
        if self.check not in CHECKS:
            raise ValueError(f"framing: unknown check {self.check!r}")
        if self.length_fmt not in ("u8", "u16be", "u16le"):
            raise ValueError(f"framing: unsupported length_fmt {self.length_fmt!r}")
        if self.check_end > 0 or (self.check != "none" and self.check_at >= 0):
            raise ValueError("framing: check_end and check_at count back from the end")
        minimum = len(self.header) + len(self.trailer)
        if self.fixed_length and self.fixed_length < minimum:
            raise ValueError("framing: fixed_length shorter than header and trailer")
        if self.max_length < minimum:
            raise ValueError("framing: max_length shorter than header and trailer")


def encode(fields: Iterable[Field], values: Mapping[str, Any]) -> bytes:
    """Encode ``values`` with a field table: the inverse of ``FieldTable.decode``.

    Used by simulators to build replies from the same tables the plugins decode with.

    Scaled values are rounded to the nearest raw step and clamped to the format's range.
    """
    out = bytearray()
    for f in fields:
        size, signed, big = FORMATS[f.fmt]
        value = values[f.name]
        items = value if f.count != 1 or f.count_from is not None else [value]
        bits = 8 * size
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        end = f.offset + size * len(items)
        out.extend(bytes(max(0, end - len(out))))
        for i, item in enumerate(items):
            raw = int(item) if f.scale is None else round((item - f.bias) / f.scale)
            raw = min(high, max(low, raw))
            pos = f.offset + i * size
            out[pos : pos + size] = raw.to_bytes(size, "big" if big else "little", signed=signed)
    return bytes(out)
