"""The protocol toolkit's data: checks, framers, layouts; read by the compiled codec and its twin.

A BMS family describes its wire format with these classes; ``bmsbank.native.frames`` compiles them
once (:func:`~bmsbank.native.frames.framer`, ``FieldTable``, ``TlvTable``). Validation happens here,
at load time, so a bad table fails when a family is imported, never while decoding a frame.

Framers (how frames are found and checked in a byte stream):

- :class:`Binary`: header, a length field or a fixed length, a check value, a trailer (JBD
  ``DD..77``, JK ``4E 57``, Daly's fixed 13-byte ``A5`` sentences, JK PB's ``55 AA EB 90``).
- :class:`ModbusRtu`: address, function, data, CRC-16/MODBUS; replies or requests; an exception
  reply ``fc | 0x80`` is reported as such; JBD's UP-series functions, whose frames carry a
  16-bit data length, as ``long_functions``.
- :class:`AsciiHex`: Pylon-style ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``CR``, every byte as
  two hex digits, LENGTH carrying its own check nibble (LCHKSUM).
- :class:`FrameThenAck`: a binary frame followed by a fixed-size acknowledgement (JK PB: the
  300-byte frame, then the FC16 ack that names the responder).
- :class:`Fixed`: fixed-length replies with no start byte, whose check value the family verifies
  (Sinowealth: the CRC covers the request, which only the family knows).
- :class:`TextLine`: ASCII text lines with no check value (HLPdata BMS4S); the family validates
  a line's structure.

Layouts (where values sit in a frame's payload): a :class:`Field` table read at fixed offsets, with
a sequential cursor, as a Modbus register or coil map (any read window decodes), or :class:`Tag`
entries of a TLV payload. Scale, bias, signedness and "this raw value means unknown" are data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: byte orders of FORMATS: little endian, big endian, 32-bit big-endian words low word first
LITTLE, BIG, WORDSWAP = 0, 1, 2

#: fmt -> (size in bytes, signed, byte order). "str" is ASCII text of ``count`` bytes; "bit" is
#: one coil of a Modbus coil map.
FORMATS: dict[str, tuple[int, bool, int]] = {
    "u8": (1, False, BIG),
    "s8": (1, True, BIG),
    "u16be": (2, False, BIG),
    "s16be": (2, True, BIG),
    "u16le": (2, False, LITTLE),
    "s16le": (2, True, LITTLE),
    "u32be": (4, False, BIG),
    "s32be": (4, True, BIG),
    "u32le": (4, False, LITTLE),
    "s32le": (4, True, LITTLE),
    "u32ws": (4, False, WORDSWAP),
    "s32ws": (4, True, WORDSWAP),
    "str": (1, False, BIG),
    "bit": (1, False, BIG),
}
FORMAT_CODES: dict[str, int] = {name: code for code, name in enumerate(FORMATS)}
STR_CODE = FORMAT_CODES["str"]
BIT_CODE = FORMAT_CODES["bit"]

#: The check algorithms, written once: the compiled codec and the twin both dispatch on the
#: position in this tuple (a test runs every entry through both).
#:   none          no check
#:   sum8          sum of the bytes modulo 256 (Daly, JK PB)
#:   sum16         sum of the bytes modulo 65536 (JK 4E57, ANT)
#:   negsum16      65536 minus the byte sum, modulo 65536 (JBD; Pylon ASCII "CHKSUM" over the
#:                 ASCII characters)
#:   crc16_modbus  CRC-16/MODBUS: reflected poly 0xA001, init 0xFFFF
#:   xor8          XOR of the bytes
#:   crc8_smbus    CRC-8/SMBus (PEC): poly 0x07, init 0
CHECKS: tuple[str, ...] = (
    "none", "sum8", "sum16", "negsum16", "crc16_modbus", "xor8", "crc8_smbus",
)  # fmt: skip
#: how a check value is written: binary in FORMATS' sense, or "hex4" = 4 ASCII hex digits
CHECK_FORMATS: tuple[str, ...] = ("u8", "u16be", "u16le", "u32be", "hex4")

#: Layout modes of a FieldTable
#:   fixed      offsets from the region start
#:   cursor     each field follows the previous one; ``offset`` is a gap to skip first
#:   registers  ``offset`` is a Modbus register number; the window's first register is given
#:              when decoding; fields outside the window are absent, not errors
#:   coils      ``offset`` is a coil number (fmt "bit"), bits LSB first in each byte
MODES: tuple[str, ...] = ("fixed", "cursor", "registers", "coils")

# Scanner results: (status, begin, end, reason)
#   FRAME      a checked frame at buf[begin:end]
#   PARTIAL    a frame starts at begin but is incomplete (end: its end when known, else -1)
#   BAD        the candidate at begin is corrupt (reason says why); drop one byte and go on
#   NONE       no frame start: bytes before begin are noise
#   EXCEPTION  a valid Modbus exception reply at buf[begin:end]
#   SKIP       buf[begin:end] is line padding the protocol sends: drop it without counting
FRAME, PARTIAL, BAD, NONE, EXCEPTION, SKIP = 0, 1, 2, 3, 4, 5
#: reason codes for BAD, with the link counter each is counted under
REASON_LENGTH, REASON_TRAILER, REASON_CHECKSUM, REASON_HEX, REASON_LENGTH_CHECK = 1, 2, 3, 4, 5
REASON_NOT_TEXT = 6
REASONS = {
    REASON_LENGTH: "malformed",
    REASON_TRAILER: "malformed",
    REASON_CHECKSUM: "checksum",
    REASON_HEX: "hex",
    REASON_LENGTH_CHECK: "length_check",
    REASON_NOT_TEXT: "malformed",
}
REASON_TEXT = {
    REASON_LENGTH: "impossible length",
    REASON_TRAILER: "wrong trailer",
    REASON_CHECKSUM: "bad check value",
    REASON_HEX: "non-hex character",
    REASON_LENGTH_CHECK: "bad LENGTH check nibble",
    REASON_NOT_TEXT: "a byte that is not text in a text line",
}


@dataclass(frozen=True)
class Field:
    """One value in a frame.

    Attributes:
        name: key in the decoded dict (use the state-message name when it maps 1:1).
        offset: byte offset from the region start (fixed mode), bytes to skip (cursor mode),
            register number (registers mode) or coil number (coils mode).
        fmt: a key of :data:`FORMATS`.
        scale: multiply the raw integer by this; ``None`` keeps the raw integer (flags, counts).
        bias: added after scaling (for example -273.15 for 0.1 K temperatures).
        count: 1 for a scalar, n > 1 for a list of n, 0 for "as many as fit before the end";
            for ``str`` the number of bytes (0: up to the end).
        count_from: name of an earlier raw-integer scalar giving the list length.
        stride: bytes from one list element to the next (0: the element size), for records
            such as JK's ``<cell no> <mV u16>``.
        unknown: a raw value the BMS sends for "no reading"; it decodes to None.

    """

    name: str
    offset: int
    fmt: str
    scale: float | None = None
    bias: float = 0.0
    count: int = 1
    count_from: str | None = None
    stride: int = 0
    unknown: int | None = None

    @property
    def size(self) -> int:
        """Size in bytes of one element."""
        return FORMATS[self.fmt][0]

    @property
    def step(self) -> int:
        """Bytes from one list element to the next."""
        return self.stride or self.size


def validate_fields(fields: Sequence[Field], mode: str = "fixed") -> None:
    """Reject an inconsistent field table (raises ValueError naming the field)."""
    if mode not in MODES:
        raise ValueError(f"unknown layout mode {mode!r}; one of {', '.join(MODES)}")
    seen: dict[str, Field] = {}
    for f in fields:
        if f.fmt not in FORMATS:
            raise ValueError(f"field {f.name!r}: unknown fmt {f.fmt!r}")
        if f.offset < 0 or f.count < 0 or f.stride < 0:
            raise ValueError(f"field {f.name!r}: offset, count and stride must be >= 0")
        if f.name in seen:
            raise ValueError(f"field {f.name!r}: duplicate name")
        if (f.fmt == "bit") != (mode == "coils"):
            raise ValueError(f"field {f.name!r}: fmt 'bit' belongs to coil maps, and only it")
        if mode in ("registers", "coils") and f.stride:
            raise ValueError(f"field {f.name!r}: register and coil maps have no stride")
        if mode == "registers" and f.size % 2 and f.fmt != "str":
            raise ValueError(f"field {f.name!r}: registers hold 16 or 32 bits")
        if f.fmt == "str" and (f.count_from or f.scale is not None or f.stride):
            raise ValueError(f"field {f.name!r}: str takes a byte count (0: to the end), no scale")
        if f.count_from is not None:
            src = seen.get(f.count_from)
            if (
                src is None
                or src.count != 1
                or src.scale is not None
                or src.fmt == "str"
                or src.unknown is not None
            ):
                raise ValueError(
                    f"field {f.name!r}: count_from must name an earlier raw integer scalar"
                )
        seen[f.name] = f


@dataclass(frozen=True)
class Tag:
    """One entry of a TLV payload: a one-byte tag, then its value.

    Attributes:
        tag: the tag byte.
        size: bytes of the value; 0 when a length prefix gives it.
        prefix: fmt of the length prefix ("u8" or "u16be") when ``size`` is 0.
        fields: fields at offsets within the value (fixed mode); empty: the value is skipped.

    """

    tag: int
    size: int = 0
    fields: tuple[Field, ...] = ()
    prefix: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 0xFF:
            raise ValueError(f"tag 0x{self.tag:X}: not one byte")
        if (self.size > 0) == bool(self.prefix) or self.prefix not in ("", "u8", "u16be"):
            raise ValueError(f"tag 0x{self.tag:02X}: give a size or a u8/u16be length prefix")
        validate_fields(self.fields)
        for f in self.fields:
            if self.size and f.count and f.offset + f.step * (f.count - 1) + f.size > self.size:
                raise ValueError(f"tag 0x{self.tag:02X}: field {f.name!r} beyond its value")


def validate_tags(tags: Sequence[Tag]) -> None:
    """Reject duplicate tags or field names across a TLV table."""
    names: set[str] = set()
    seen: set[int] = set()
    for t in tags:
        if t.tag in seen:
            raise ValueError(f"tag 0x{t.tag:02X}: duplicate")
        seen.add(t.tag)
        for f in t.fields:
            if f.name in names:
                raise ValueError(f"field {f.name!r}: duplicate name across tags")
            names.add(f.name)


# -- framers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """Where a frame's check value sits and what it covers.

    Attributes:
        algorithm: a name of :data:`CHECKS`.
        start: first covered byte, from the frame start.
        end: end (exclusive) of the covered bytes, counted back from the frame end (<= 0).
        at: where the value sits, counted back from the frame end (< 0).
        fmt: how the value is written, one of :data:`CHECK_FORMATS`.

    """

    algorithm: str = "none"
    start: int = 0
    end: int = 0
    at: int = -1
    fmt: str = "u8"

    def __post_init__(self) -> None:
        if self.algorithm not in CHECKS:
            raise ValueError(f"check: unknown algorithm {self.algorithm!r}")
        if self.fmt not in CHECK_FORMATS:
            raise ValueError(f"check: unknown fmt {self.fmt!r}")
        if self.end > 0 or self.at >= 0 or self.start < 0:
            raise ValueError("check: end and at count back from the frame end")

    @property
    def size(self) -> int:
        """Bytes the check value takes on the wire."""
        return 4 if self.fmt == "hex4" else FORMATS[self.fmt][0]


@dataclass(frozen=True)
class Binary:
    """Binary frames: header, fixed length or a length field, check value, trailer.

    Attributes:
        header: bytes every frame starts with.
        fixed_length: total frame length when constant (0 when a length field gives it).
        length_offset: offset of the length field from the frame start (when not fixed).
        length_fmt: fmt of the length field ("u8", "u16be", "u16le").
        length_adjust: total frame length = length value + this.
        max_length: longest frame accepted; a longer length field means a corrupt frame.
        check: the check value.
        trailer: bytes every frame ends with.
        pad: a byte value the BMS sends between frames (dropped silently), or -1.

    """

    header: bytes
    fixed_length: int = 0
    length_offset: int = 0
    length_fmt: str = "u8"
    length_adjust: int = 0
    max_length: int = 512
    check: Check = Check()
    trailer: bytes = b""
    pad: int = -1

    def __post_init__(self) -> None:
        if not self.header:
            raise ValueError("framing: header must not be empty")
        if self.length_fmt not in ("u8", "u16be", "u16le"):
            raise ValueError(f"framing: unsupported length_fmt {self.length_fmt!r}")
        minimum = len(self.header) + len(self.trailer)
        if self.fixed_length and self.fixed_length < minimum:
            raise ValueError("framing: fixed_length shorter than header and trailer")
        if self.max_length < minimum:
            raise ValueError("framing: max_length shorter than header and trailer")
        if not -1 <= self.pad <= 0xFF or self.pad == self.header[0]:
            raise ValueError("framing: pad must be a byte other than the header's first")


#: Modbus function codes whose reply carries a byte count (read coils/inputs/registers)
MODBUS_READS = (1, 2, 3, 4)
#: function codes whose reply echoes address and quantity in 8 bytes (single and multiple writes)
MODBUS_WRITES = (5, 6, 15, 16)


@dataclass(frozen=True)
class ModbusRtu:
    """Modbus RTU frames: ``addr fc ... crc16`` (CRC-16/MODBUS, low byte first).

    Replies: FC 1-4 ``addr fc n data[n] crc``; FC 5/6/15/16 eight bytes; an exception
    ``addr fc|0x80 code crc`` (reported as EXCEPTION). Requests (``requests=True``, what a
    simulator reads): FC 1-6 eight bytes; FC 15/16 ``addr fc start qty n data[n] crc``.
    Requests and replies of a function of ``long_functions``: ``addr fc start:u16 end:u16
    n:u16 data[n] crc``, 10 + n bytes (JBD UP series: 0x45, 0x78 read, 0x79 write).

    Attributes:
        functions: function codes accepted (others are not frame starts).
        addresses: first and last address accepted.
        requests: read requests instead of replies.
        max_length: longest frame (256 in the standard).
        long_functions: function codes (of ``functions``) whose frames give their data length
            as a big-endian u16 at bytes 6-7, whatever the direction.

    """

    functions: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 15, 16)
    addresses: tuple[int, int] = (0, 247)
    requests: bool = False
    max_length: int = 256
    long_functions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        known = MODBUS_READS + MODBUS_WRITES + self.long_functions
        if not self.functions or any(f not in known for f in self.functions):
            raise ValueError(f"modbus: functions must be among {known}")
        if any(not 0 < f < 0x80 or f in MODBUS_READS + MODBUS_WRITES for f in self.long_functions):
            raise ValueError("modbus: long_functions are other function codes, 0x01-0x7F")
        lo, hi = self.addresses
        if not 0 <= lo <= hi <= 255:
            raise ValueError("modbus: addresses must be 0 <= first <= last <= 255")


@dataclass(frozen=True)
class AsciiHex:
    """Pylon-style ASCII frames: ``~`` VER ADR CID1 CID2 LENGTH INFO CHKSUM ``CR``.

    Every byte between SOI and EOI travels as two hex digits. LENGTH is four digits: a check
    nibble LCHKSUM, then LENID (12 bits) = the number of INFO characters; LCHKSUM =
    (-(sum of LENID's three nibbles)) mod 16. CHKSUM is four digits: 65536 minus the sum of the
    ASCII characters after SOI and before CHKSUM (``negsum16``). Frames are unhexlified once:
    the payload is VER ADR CID1 CID2 LENGTH(2 bytes) INFO, as bytes.

    Attributes:
        soi: the start byte ("~"), or several bytes any of which starts a frame (a BMS asked
            with another start byte may answer with either: KS48100's ">" requests).
        eoi: the end byte.
        head: hex characters before LENGTH (8: VER ADR CID1 CID2).
        max_info: longest INFO accepted, in characters.

    """

    soi: bytes = b"~"
    eoi: bytes = b"\r"
    head: int = 8
    max_info: int = 4095

    def __post_init__(self) -> None:
        if not self.soi or len(set(self.soi)) != len(self.soi) or self.eoi in self.soi:
            raise ValueError("ascii: SOI is one or more distinct bytes, none of them the EOI")
        if len(self.eoi) != 1 or self.head % 2:
            raise ValueError("ascii: one-byte EOI, whole bytes before LENGTH")


@dataclass(frozen=True)
class FrameThenAck:
    """A binary frame followed by a fixed-size acknowledgement (which may be missing).

    Attributes:
        frame: the frame's own framing.
        ack_length: bytes of the acknowledgement.
        ack_pattern: its first bytes; ``None`` entries match any byte.
        ack_check: the acknowledgement's check value.

    The frame's ``pad`` byte may sit between frame and acknowledgement and after it.
    """

    frame: Binary
    ack_length: int
    ack_pattern: tuple[int | None, ...]
    ack_check: Check

    def __post_init__(self) -> None:
        if not 0 < len(self.ack_pattern) <= self.ack_length:
            raise ValueError("frame-then-ack: the pattern must fit in the acknowledgement")


@dataclass(frozen=True)
class Fixed:
    """Fixed-length frames with no start byte: the first ``length`` bytes are one frame.

    For a protocol whose reply has no header and whose check value covers bytes only the request
    holds (Sinowealth: a CRC-8 over ``0A cmd len`` + data): the framer cannot tell noise from a
    reply, so the family verifies the check when it parses the reply with its request, and a
    reply shifted by noise fails it there. One reply per request: the transport drains the line
    before each request.

    Attributes:
        length: bytes of every frame.

    """

    length: int

    def __post_init__(self) -> None:
        if not 0 < self.length <= 4096:
            raise ValueError("fixed: length must be 1-4096")


#: bytes a text line may hold besides its terminator: printable ASCII, TAB and CR
TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r"


@dataclass(frozen=True)
class TextLine:
    """ASCII text lines with no check value: printable text, then the ``end`` byte.

    Any other byte is noise between lines (skipped, counted), or corrupts the line it cuts
    (reported with the text before it, which is dropped whole). A line that is blank or one of
    ``skip`` (the echo of a command) is dropped uncounted when it comes first; after noise it is
    counted with the noise. A line longer than ``max_length`` is malformed. The frame is the
    line with its terminator; the family checks its structure (field count, numbers, ranges).

    Attributes:
        end: the terminator byte.
        skip: whole lines (without CR and the terminator) that are not replies.
        max_length: longest line accepted, terminator included.

    """

    end: bytes = b"\n"
    skip: tuple[bytes, ...] = ()
    max_length: int = 512

    def __post_init__(self) -> None:
        if len(self.end) != 1 or self.end[0] in TEXT_BYTES:
            raise ValueError("text line: the terminator is one byte that is not text")
        if not 2 <= self.max_length <= 65536:
            raise ValueError("text line: max_length must be 2-65536")
        if any(not line or any(c not in TEXT_BYTES for c in line) for line in self.skip):
            raise ValueError("text line: skipped lines are non-empty text")


FrameSpec = Binary | ModbusRtu | AsciiHex | FrameThenAck | Fixed | TextLine


# -- encoders (simulators and request builders; not on a hot path) ------------------------
def encode(fields: Iterable[Field], values: Mapping[str, Any], mode: str = "fixed") -> bytes:
    """Encode ``values`` with a field table: the inverse of ``FieldTable.decode``.

    Used by simulators to build replies from the same tables the families decode with. Scaled
    values are rounded to the nearest raw step and clamped to the format's range; None encodes
    the field's ``unknown`` value. Registers mode counts from register 0 (slice the result);
    fields missing from ``values`` are left zero in fixed and registers mode.
    """
    fields = list(fields)
    if mode == "coils":
        return _encode_coils(fields, values)
    out = bytearray()
    cursor = 0
    for f in fields:
        if f.name not in values:
            if mode == "cursor":
                raise KeyError(f.name)
            continue
        value = values[f.name]
        pos = {"fixed": f.offset, "cursor": cursor + f.offset, "registers": f.offset * 2}[mode]
        if f.fmt == "str":
            data = str(value).encode("ascii")
            data = data[: f.count].ljust(f.count, b"\0") if f.count else data
            _put(out, pos, data)
            cursor = pos + f.count
            continue
        items = value if f.count != 1 or f.count_from is not None else [value]
        for i, item in enumerate(items):
            _put(out, pos + i * f.step, _raw_bytes(f, item))
        cursor = pos + f.step * len(items) if items else pos
    return bytes(out)


def _put(out: bytearray, pos: int, data: bytes) -> None:
    end = pos + len(data)
    if end > len(out):
        out.extend(bytes(end - len(out)))
    out[pos:end] = data


def _raw_bytes(f: Field, item: Any) -> bytes:
    size, signed, order = FORMATS[f.fmt]
    bits = 8 * size
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if item is None:
        if f.unknown is None:
            raise ValueError(f"field {f.name!r}: None without an unknown value")
        raw = f.unknown
    else:
        raw = int(item) if f.scale is None else round((item - f.bias) / f.scale)
    raw = min(high, max(low, raw))
    data = raw.to_bytes(size, "little" if order == LITTLE else "big", signed=signed)
    return data[2:] + data[:2] if order == WORDSWAP else data


def _encode_coils(fields: list[Field], values: Mapping[str, Any]) -> bytes:
    bits: dict[int, int] = {}
    for f in fields:
        if f.name not in values:
            continue
        value = values[f.name]
        items = value if f.count != 1 or f.count_from is not None else [value]
        for i, item in enumerate(items):
            bits[f.offset + i] = 1 if item else 0
    out = bytearray((max(bits, default=-1) + 8) // 8)
    for n, b in bits.items():
        out[n // 8] |= b << (n % 8)
    return bytes(out)


def encode_tlv(tags: Sequence[Tag], values: Mapping[str, Any]) -> bytes:
    """Encode a TLV payload: every tag whose fields are all in ``values``, in table order."""
    out = bytearray()
    for t in tags:
        if not t.fields or any(f.name not in values for f in t.fields):
            continue
        value = bytearray(encode(t.fields, values))
        if t.size:
            value = value.ljust(t.size, b"\0")
            out += bytes((t.tag,)) + value
        else:
            out += bytes((t.tag,)) + len(value).to_bytes(FORMATS[t.prefix][0], "big") + value
    return bytes(out)


@dataclass(frozen=True)
class Layout:
    """Where the fields of one reply part sit in its payload.

    Attributes:
        fields: the field table, or the :class:`Tag` entries of a TLV payload.
        start: first byte of the decoded region.
        end: end of the region: negative counts back from the payload's end (before a check
            value and trailer), positive is an absolute offset, None is the payload's end.
        mode: one of :data:`MODES`, or "tlv" for a table of tags.

    """

    fields: tuple[Field, ...] | tuple[Tag, ...]
    start: int = 0
    end: int | None = None
    mode: str = "fixed"

    def region(self, payload: bytes | bytearray | memoryview) -> tuple[int, int]:
        """``(start, end)`` of the region in ``payload`` (empty when the payload is short)."""
        n = len(payload)
        if self.end is None:
            end = n
        else:
            end = n + self.end if self.end < 0 else min(self.end, n)
        start = min(self.start, n)
        return start, max(start, end)
