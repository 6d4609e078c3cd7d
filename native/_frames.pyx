# cython: language_level=3
"""Compiled protocol toolkit: checks, framers, field tables and TLV tables.

Same public API and results as :mod:`bmsbank.native._frames_py`; the data (formats, checks,
framer and layout specs) comes from :mod:`bmsbank.native.spec`, which both read. Every index into
a received buffer is range-checked before use and bounds checking stays on (see setup.py).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport free, malloc
from libc.string cimport memchr

from bmsbank.errors import FrameError
from bmsbank.native.spec import (
    BAD,
    CHECKS,
    CHECK_FORMATS,
    EXCEPTION,
    FORMAT_CODES,
    FORMATS,
    FRAME,
    MODBUS_READS,
    MODES,
    NONE,
    PARTIAL,
    REASON_CHECKSUM,
    REASON_HEX,
    REASON_LENGTH,
    REASON_LENGTH_CHECK,
    REASON_NOT_TEXT,
    REASON_TRAILER,
    SKIP,
    STR_CODE,
    TEXT_BYTES,
    AsciiHex,
    Binary,
    Fixed,
    FrameThenAck,
    ModbusRtu,
    TextLine,
    validate_fields,
    validate_tags,
)

IMPLEMENTATION = "cython"

cdef int C_FRAME = FRAME
cdef int C_PARTIAL = PARTIAL
cdef int C_BAD = BAD
cdef int C_NONE = NONE
cdef int C_EXCEPTION = EXCEPTION
cdef int C_SKIP = SKIP
cdef int C_STR = STR_CODE
cdef int R_LENGTH = REASON_LENGTH
cdef int R_TRAILER = REASON_TRAILER
cdef int R_CHECKSUM = REASON_CHECKSUM
cdef int R_HEX = REASON_HEX
cdef int R_LENGTH_CHECK = REASON_LENGTH_CHECK
cdef int R_NOT_TEXT = REASON_NOT_TEXT

# The check table is spec.CHECKS; the C dispatch binds to its entries by name.
cdef int A_NONE = CHECKS.index("none")
cdef int A_SUM8 = CHECKS.index("sum8")
cdef int A_SUM16 = CHECKS.index("sum16")
cdef int A_NEGSUM16 = CHECKS.index("negsum16")
cdef int A_CRC16 = CHECKS.index("crc16_modbus")
cdef int A_XOR8 = CHECKS.index("xor8")
cdef int A_CRC8 = CHECKS.index("crc8_smbus")
cdef int F_HEX4 = CHECK_FORMATS.index("hex4")
cdef int M_FIXED = MODES.index("fixed")
cdef int M_CURSOR = MODES.index("cursor")
cdef int M_REGISTERS = MODES.index("registers")
cdef int M_COILS = MODES.index("coils")
cdef int O_LITTLE = 0, O_BIG = 1

ctypedef const unsigned char[:] Bytes

# CRC tables, one step per byte instead of eight (the twin builds the same ones).
cdef unsigned int CRC16_TABLE[256]
cdef unsigned int CRC8_TABLE[256]


cdef void _fill_crc_tables() noexcept:
    cdef unsigned int v, w
    cdef int i, k
    for i in range(256):
        v = i
        w = i
        for k in range(8):
            v = (v >> 1) ^ 0xA001 if v & 1 else v >> 1
            w = ((w << 1) ^ 0x07) & 0xFF if w & 0x80 else (w << 1) & 0xFF
        CRC16_TABLE[i] = v
        CRC8_TABLE[i] = w


_fill_crc_tables()


cdef inline void _span(Bytes mv, Py_ssize_t start, object end, Py_ssize_t* a, Py_ssize_t* b) except *:
    cdef Py_ssize_t n = mv.shape[0]
    cdef Py_ssize_t stop = n if end is None else <Py_ssize_t>end
    if start < 0 or stop > n or start > stop:
        raise ValueError(f"range {start}:{stop} outside buffer of {n} bytes")
    a[0] = start
    b[0] = stop


cdef unsigned long long _algo(int algo, Bytes mv, Py_ssize_t a, Py_ssize_t b):
    cdef unsigned long long s = 0
    cdef unsigned int crc
    cdef Py_ssize_t i
    if algo == A_SUM8 or algo == A_SUM16 or algo == A_NEGSUM16:
        for i in range(a, b):
            s += mv[i]
        if algo == A_SUM8:
            return s & 0xFF
        if algo == A_SUM16:
            return s & 0xFFFF
        return (0x10000 - (s & 0xFFFF)) & 0xFFFF
    if algo == A_CRC16:
        crc = 0xFFFF
        for i in range(a, b):
            crc = (crc >> 8) ^ CRC16_TABLE[(crc ^ mv[i]) & 0xFF]
        return crc
    if algo == A_XOR8:
        for i in range(a, b):
            s ^= mv[i]
        return s
    if algo == A_CRC8:
        crc = 0
        for i in range(a, b):
            crc = CRC8_TABLE[crc ^ mv[i]]
        return crc
    return 0


def checksum(algorithm, buf, Py_ssize_t start=0, end=None):
    """The check value of ``buf[start:end]`` with ``algorithm`` (a name of ``spec.CHECKS``)."""
    if algorithm not in CHECKS:
        raise ValueError(f"unknown check {algorithm!r}")
    cdef Bytes mv = buf
    cdef Py_ssize_t a, b
    _span(mv, start, end, &a, &b)
    return _algo(CHECKS.index(algorithm), mv, a, b)


def sum8(buf, Py_ssize_t start=0, end=None):
    """Sum of bytes modulo 256."""
    return checksum("sum8", buf, start, end)


def negsum16(buf, Py_ssize_t start=0, end=None):
    """JBD / Pylon check value: 0x10000 minus the byte sum, modulo 0x10000."""
    return checksum("negsum16", buf, start, end)


def crc16_modbus(buf, Py_ssize_t start=0, end=None):
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    return checksum("crc16_modbus", buf, start, end)


cdef inline int _hexval(unsigned char c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef long long _hex_number(Bytes mv, Py_ssize_t pos, int digits):
    cdef long long value = 0
    cdef int i, d
    for i in range(digits):
        d = _hexval(mv[pos + i])
        if d < 0:
            return -1
        value = (value << 4) | d
    return value


cdef inline long long _raw(Bytes mv, Py_ssize_t p, int size, bint is_signed, int order):
    cdef unsigned long long u = 0
    cdef int i
    if order == O_BIG:
        for i in range(size):
            u = (u << 8) | mv[p + i]
    elif order == O_LITTLE:
        for i in range(size - 1, -1, -1):
            u = (u << 8) | mv[p + i]
    else:  # 32-bit, big-endian words, low word first
        u = (<unsigned long long>mv[p + 2] << 24) | (<unsigned long long>mv[p + 3] << 16)
        u |= (<unsigned long long>mv[p] << 8) | mv[p + 1]
    if is_signed and (u >> (8 * size - 1)) & 1:
        return <long long>u - (<long long>1 << (8 * size))
    return <long long>u


cdef struct CheckC:
    int algo
    Py_ssize_t start, end, at
    int fmt  # index in CHECK_FORMATS
    int size
    int order
    int bits


cdef void _load_check(CheckC* c, chk) except *:
    c.algo = CHECKS.index(chk.algorithm)
    c.start = chk.start
    c.end = chk.end
    c.at = chk.at
    c.fmt = CHECK_FORMATS.index(chk.fmt)
    c.size = chk.size
    if c.fmt == F_HEX4:
        c.order = O_BIG
        c.bits = 16
    else:
        c.order = FORMATS[chk.fmt][2]
        c.bits = 8 * c.size


cdef bint _check_ok(CheckC* c, Bytes mv, Py_ssize_t p, Py_ssize_t e):
    cdef Py_ssize_t lo = p + c.start
    cdef Py_ssize_t hi = e + c.end
    cdef Py_ssize_t at = e + c.at
    cdef long long stored
    cdef unsigned long long value, mask
    if c.algo == A_NONE:
        return True
    if lo > hi or at < p or at + c.size > e:
        return False
    value = _algo(c.algo, mv, lo, hi)
    if c.fmt == F_HEX4:
        stored = _hex_number(mv, at, 4)
    else:
        stored = _raw(mv, at, c.size, False, c.order)
    mask = (<unsigned long long>1 << c.bits) - 1
    return stored == <long long>(value & mask)


# -- field tables ---------------------------------------------------------------------------
cdef struct FieldC:
    Py_ssize_t offset
    int code
    int size
    Py_ssize_t step
    bint is_signed
    int order
    bint has_scale
    double scale
    double bias
    Py_ssize_t count
    int count_from
    bint scalar
    bint has_unknown
    long long unknown


cdef class FieldTable:
    """A compiled field table; :meth:`decode` turns a payload region into a dict."""

    cdef readonly tuple fields
    cdef readonly str mode
    cdef int cmode
    cdef list names
    cdef FieldC* c
    cdef int n

    def __cinit__(self, fields, mode="fixed"):
        self.c = NULL
        self.n = 0

    def __init__(self, fields, mode="fixed"):
        self.fields = tuple(fields)
        self.mode = mode
        validate_fields(self.fields, mode)
        self.cmode = MODES.index(mode)
        self.n = len(self.fields)
        self.c = <FieldC*>malloc(max(1, self.n) * sizeof(FieldC))
        if self.c == NULL:
            raise MemoryError()
        self.names = [f.name for f in self.fields]
        index = {name: i for i, name in enumerate(self.names)}
        cdef int i
        for i, f in enumerate(self.fields):
            size, is_signed, order = FORMATS[f.fmt]
            self.c[i].offset = f.offset
            self.c[i].code = FORMAT_CODES[f.fmt]
            self.c[i].size = size
            self.c[i].step = f.step
            self.c[i].is_signed = is_signed
            self.c[i].order = order
            self.c[i].has_scale = f.scale is not None
            self.c[i].scale = f.scale if f.scale is not None else 1.0
            self.c[i].bias = f.bias
            self.c[i].count = f.count
            self.c[i].count_from = index[f.count_from] if f.count_from is not None else -1
            self.c[i].scalar = f.count == 1 and f.count_from is None
            self.c[i].has_unknown = f.unknown is not None
            self.c[i].unknown = f.unknown if f.unknown is not None else 0

    def __dealloc__(self):
        free(self.c)

    def decode(self, buf, Py_ssize_t start=0, end=None, Py_ssize_t origin=0):
        """Decode the fields of the table from ``buf[start:end]``; see the twin for the contract.

        Raises:
            FrameError: a field lies outside the region or a count is impossible (fixed and
                cursor mode).
        """
        cdef Bytes mv = buf
        cdef Py_ssize_t a, b
        _span(mv, start, end, &a, &b)
        return self._decode(mv, a, b, origin)

    cdef dict _decode(self, Bytes mv, Py_ssize_t a, Py_ssize_t b, Py_ssize_t origin):
        cdef Py_ssize_t pos, k, nval, cursor = a
        cdef FieldC* f
        cdef list values
        cdef dict out = {}
        cdef int i
        cdef bint windowed = self.cmode == M_REGISTERS or self.cmode == M_COILS
        for i in range(self.n):
            f = &self.c[i]
            if self.cmode == M_FIXED:
                pos = a + f.offset
            elif self.cmode == M_CURSOR:
                pos = cursor + f.offset
            elif self.cmode == M_REGISTERS:
                pos = a + (f.offset - origin) * 2
            else:
                pos = f.offset - origin
            if windowed and pos < (0 if self.cmode == M_COILS else a):
                continue
            if f.code == C_STR:
                nval = f.count if f.count else (b - pos if b > pos else 0)
                if pos + nval > b:
                    if windowed:
                        continue
                    raise FrameError(f"field {self.names[i]!r} beyond end of frame", bytes(mv[a:b]))
                out[self.names[i]] = _ascii(mv, pos, nval)
                cursor = pos + nval
                continue
            if self.cmode == M_COILS:
                self._coils(mv, a, b, f, i, pos, out)
                continue
            if f.count_from >= 0:
                if self.names[f.count_from] not in out:
                    continue
                nval = _fit(out[self.names[f.count_from]], b - pos)
            elif f.count == 0:
                nval = (b - pos - f.size) // f.step + 1 if b - pos >= f.size else 0
            else:
                nval = f.count
            if nval < 0 or (nval > 0 and pos + (nval - 1) * f.step + f.size > b):
                if windowed:
                    continue
                raise FrameError(
                    f"field {self.names[i]!r} ({nval} x {f.size} B at {f.offset}) beyond end of frame",
                    bytes(mv[a:b]),
                )
            cursor = pos + nval * f.step
            if f.scalar:
                out[self.names[i]] = _value(f, _raw(mv, pos, f.size, f.is_signed, f.order))
                continue
            values = []
            for k in range(nval):
                values.append(_value(f, _raw(mv, pos + k * f.step, f.size, f.is_signed, f.order)))
            out[self.names[i]] = values
        return out

    cdef void _coils(self, Bytes mv, Py_ssize_t a, Py_ssize_t b, FieldC* f, int i,
                     Py_ssize_t bit, dict out) except *:
        cdef Py_ssize_t nval, k, idx
        cdef list values
        nval = f.count if f.count else (b - a) * 8 - bit
        if f.count_from >= 0:
            if self.names[f.count_from] not in out:
                return
            nval = _fit(out[self.names[f.count_from]], (b - a) * 8 - bit)
        if nval < 0 or (nval > 0 and a + (bit + nval - 1) // 8 >= b):
            return
        values = []
        for k in range(nval):
            idx = bit + k
            values.append((mv[a + idx // 8] >> (idx % 8)) & 1)
        if f.scalar:
            out[self.names[i]] = values[0]
        else:
            out[self.names[i]] = values


cdef inline Py_ssize_t _fit(object count, Py_ssize_t room) except? -2:
    """A count read from the frame, as a Py_ssize_t that the bounds checks cannot overflow.

    A u32 count need not fit a Py_ssize_t (32 bits on armv7: OverflowError), and count x stride
    could wrap. More elements than ``room`` (bytes or bits left, each element at least one) never
    fit, so such a count becomes room + 1 (or 1 when nothing is left): "beyond the end", the
    FrameError the twin raises with Python's unbounded integers.
    """
    if count < 0:
        return -1
    if count <= room or count == 0:
        return <Py_ssize_t>count
    return room + 1 if room >= 0 else 1


cdef inline object _value(FieldC* f, long long raw):
    if f.has_unknown and raw == f.unknown:
        return None
    if f.has_scale:
        return <double>raw * f.scale + f.bias
    return raw


cdef str _ascii(Bytes mv, Py_ssize_t pos, Py_ssize_t count):
    cdef Py_ssize_t i, stop = pos + count
    cdef unsigned char c
    cdef list chars = []
    for i in range(pos, stop):
        c = mv[i]
        if c == 0:
            break
        if 32 <= c < 127:
            chars.append(chr(c))
    return "".join(chars).strip()


cdef class TlvTable:
    """A compiled TLV table: a sequence of ``tag value`` entries, sizes from the table."""

    cdef readonly tuple tags
    cdef list tables
    cdef int index[256]
    cdef Py_ssize_t size[256]
    cdef int prefix[256]  # bytes of the length prefix (0: fixed size)

    def __init__(self, tags):
        self.tags = tuple(tags)
        validate_tags(self.tags)
        self.tables = []
        cdef int i
        for i in range(256):
            self.index[i] = -1
        for i, t in enumerate(self.tags):
            self.index[t.tag] = i
            self.size[t.tag] = t.size
            self.prefix[t.tag] = FORMATS[t.prefix][0] if t.prefix else 0
            self.tables.append(FieldTable(t.fields))

    def decode(self, buf, Py_ssize_t start=0, end=None):
        """Decode every entry of ``buf[start:end]``; see the twin for the contract.

        Raises:
            FrameError(kind="tlv"): an unknown tag or a value that runs past the region.
        """
        cdef Bytes mv = buf
        cdef Py_ssize_t a, b, p, size
        cdef int tag, width
        cdef FieldTable table
        cdef dict out = {}
        _span(mv, start, end, &a, &b)
        p = a
        while p < b:
            tag = mv[p]
            if self.index[tag] < 0:
                raise FrameError(f"unknown TLV tag 0x{tag:02X} at {p - a}", bytes(mv[a:b]),
                                 kind="tlv")
            p += 1
            size = self.size[tag]
            width = self.prefix[tag]
            if width:
                if p + width > b:
                    raise FrameError(f"TLV tag 0x{tag:02X}: length beyond the payload",
                                     bytes(mv[a:b]), kind="tlv")
                size = _raw(mv, p, width, False, O_BIG)
                p += width
            if p + size > b:
                raise FrameError(f"TLV tag 0x{tag:02X}: {size}-byte value beyond the payload",
                                 bytes(mv[a:b]), kind="tlv")
            table = self.tables[self.index[tag]]
            try:
                out.update(table._decode(mv, p, p + size, 0))
            except FrameError as exc:
                raise FrameError(f"TLV tag 0x{tag:02X}: {exc.reason}", exc.raw,
                                 kind="tlv") from None
            p += size
        return out


# -- framers ---------------------------------------------------------------------------------
cdef struct ScanC:
    int status  # FRAME, PARTIAL, ...; NOT_CANDIDATE inside the Modbus scan only
    Py_ssize_t begin, end
    int reason


cdef int NOT_CANDIDATE = -1


cdef inline ScanC _found(int status, Py_ssize_t begin, Py_ssize_t end, int reason):
    cdef ScanC r
    r.status = status
    r.begin = begin
    r.end = end
    r.reason = reason
    return r


cdef bytes _copy(Bytes mv, Py_ssize_t a, Py_ssize_t b):
    """``mv[a:b]`` as bytes, in one copy (the range checked)."""
    if a < 0 or b > mv.shape[0] or a > b:
        raise ValueError(f"range {a}:{b} outside buffer of {mv.shape[0]} bytes")
    if a == b:
        return b""
    return PyBytes_FromStringAndSize(<const char*>&mv[a], b - a)


cdef bytes _frame_bytes(buf, Py_ssize_t begin, object end):
    """``buf[begin:end]`` as bytes, the range checked (what binary framers hand the layouts)."""
    cdef Bytes mv = buf
    cdef Py_ssize_t a, b
    _span(mv, begin, end, &a, &b)
    return _copy(mv, a, b)


cdef Py_ssize_t _find_byte(Bytes mv, Py_ssize_t start, Py_ssize_t stop, unsigned char c):
    """First position in ``start:stop`` holding ``c``, -1 when none (memchr where contiguous)."""
    cdef const void* hit
    cdef Py_ssize_t q
    if start >= stop:
        return -1
    if mv.strides[0] == 1:
        hit = memchr(&mv[start], c, stop - start)
        return -1 if hit == NULL else <const unsigned char*>hit - &mv[0]
    for q in range(start, stop):
        if mv[q] == c:
            return q
    return -1


cdef inline Py_ssize_t _pad_run(Bytes mv, Py_ssize_t start, int pad):
    cdef Py_ssize_t n = mv.shape[0], q = start
    if pad < 0:
        return 0
    while q < n and mv[q] == pad:
        q += 1
    return q - start


cdef class _Framer:
    """What the compiled framers share: a scan in C that :func:`take` loops over without Python.

    ``_scan`` expects ``0 <= start <= len``; the public :meth:`scan` checks it.
    """

    cdef readonly object spec

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        raise NotImplementedError

    cdef Py_ssize_t _resync(self, Py_ssize_t n, ScanC* r):
        """Bytes to drop after the corrupt candidate ``r``: its first (a frame may start inside)."""
        return 1

    def scan(self, buf, Py_ssize_t start=0):
        """Look for the first frame in ``buf[start:]``; see the twin for the result contract."""
        cdef Bytes mv = buf
        cdef ScanC r
        if start < 0 or start > mv.shape[0]:
            raise ValueError(f"start {start} outside buffer of {mv.shape[0]} bytes")
        r = self._scan(mv, start)
        return r.status, r.begin, r.end, r.reason

    def payload(self, buf, Py_ssize_t begin=0, end=None):
        """The bytes the layouts read: the frame as received (see the twin)."""
        return _frame_bytes(buf, begin, end)


cdef class BinaryFramer(_Framer):
    """Finds and checks :class:`~bmsbank.native.spec.Binary` frames in a byte stream."""

    cdef bytes header
    cdef bytes trailer
    cdef Py_ssize_t hlen, tlen, fixed_length, length_offset, length_adjust, max_length
    cdef int length_size, length_order, pad
    cdef CheckC check

    def __init__(self, spec):
        self.spec = spec
        self.header = bytes(spec.header)
        self.trailer = bytes(spec.trailer)
        self.hlen = len(self.header)
        self.tlen = len(self.trailer)
        self.fixed_length = spec.fixed_length
        self.length_offset = spec.length_offset
        self.length_adjust = spec.length_adjust
        self.max_length = spec.max_length
        size, _signed, order = FORMATS[spec.length_fmt]
        self.length_size = size
        self.length_order = order
        self.pad = spec.pad
        _load_check(&self.check, spec.check)

    cdef Py_ssize_t _header_at(self, Bytes mv, Py_ssize_t start):
        """First position of the header at or after ``start``, -1 when none."""
        cdef Py_ssize_t last = mv.shape[0] - self.hlen, q, j
        cdef const unsigned char* hdr = self.header
        q = start
        while q <= last:
            q = _find_byte(mv, q, last + 1, hdr[0])
            if q < 0:
                return -1
            for j in range(1, self.hlen):
                if mv[q + j] != hdr[j]:
                    break
            else:
                return q
            q += 1
        return -1

    cdef Py_ssize_t _prefix_at(self, Bytes mv, Py_ssize_t start):
        """Where a header cut short by the end of the bytes begins (the end when none)."""
        cdef Py_ssize_t n = mv.shape[0], q, j
        cdef const unsigned char* hdr = self.header
        q = n - self.hlen + 1
        if q < start:
            q = start
        while q < n:
            for j in range(n - q):
                if mv[q + j] != hdr[j]:
                    break
            else:
                return q
            q += 1
        return n

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        cdef Py_ssize_t p, q, run
        cdef ScanC first, later
        run = _pad_run(mv, start, self.pad)
        if run:
            return _found(C_SKIP, start, start + run, 0)
        p = self._header_at(mv, start)
        if p < 0:
            p = self._prefix_at(mv, start)  # keep a possible header prefix at the end
            return _found(C_NONE, p, p, 0)
        first = self._candidate(mv, p)
        if first.status != C_PARTIAL or self.fixed_length:
            return first
        # A start whose length runs past the bytes may be noise hiding a whole frame after it
        # (never so with a fixed length): the first complete frame within its span wins.
        q = self._header_at(mv, p + 1)
        while q >= 0:
            later = self._candidate(mv, q)
            if later.status == C_FRAME:
                return later
            q = self._header_at(mv, q + 1)
        return first

    cdef ScanC _candidate(self, Bytes mv, Py_ssize_t p):
        """The frame that the header at ``p`` announces, checked."""
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t total, e, j
        cdef const unsigned char* trl = self.trailer
        if self.fixed_length:
            total = self.fixed_length
        else:
            if p + self.length_offset + self.length_size > n:
                return _found(C_PARTIAL, p, -1, 0)
            total = _raw(mv, p + self.length_offset, self.length_size, False, self.length_order)
            total += self.length_adjust
        if total < self.hlen + self.tlen or total > self.max_length:
            return _found(C_BAD, p, p + 1, R_LENGTH)
        e = p + total
        if e > n:
            return _found(C_PARTIAL, p, e, 0)
        for j in range(self.tlen):
            if mv[e - self.tlen + j] != trl[j]:
                return _found(C_BAD, p, e, R_TRAILER)
        if not _check_ok(&self.check, mv, p, e):
            return _found(C_BAD, p, e, R_CHECKSUM)
        return _found(C_FRAME, p, e, 0)


cdef class ModbusFramer(_Framer):
    """Finds and checks :class:`~bmsbank.native.spec.ModbusRtu` frames (no header to look for)."""

    cdef bint functions[256]
    cdef bint longs[256]  # function codes whose frames carry a u16 data length at bytes 6-7
    cdef int lo, hi
    cdef bint requests
    cdef Py_ssize_t max_length

    def __init__(self, spec):
        self.spec = spec
        cdef int i
        for i in range(256):
            self.functions[i] = False
            self.longs[i] = False
        for i in spec.functions:
            self.functions[i] = True
        for i in spec.long_functions:
            self.longs[i] = True
        self.lo, self.hi = spec.addresses
        self.requests = spec.requests
        self.max_length = spec.max_length

    cdef bint _starts(self, Bytes mv, Py_ssize_t q):
        cdef int fc
        if not self.lo <= mv[q] <= self.hi:
            return False
        if q + 1 >= mv.shape[0]:
            return True
        fc = mv[q + 1]
        if fc & 0x80:
            return not self.requests and self.functions[fc & 0x7F]
        return self.functions[fc]

    cdef Py_ssize_t _total(self, Bytes mv, Py_ssize_t p):
        cdef Py_ssize_t n = mv.shape[0]
        cdef int fc
        if p + 1 >= n:
            return -1
        fc = mv[p + 1]
        if fc & 0x80:
            return 5
        if self.longs[fc]:  # addr fc start end n:u16be data[n] crc
            return 10 + ((mv[p + 6] << 8) | mv[p + 7]) if p + 7 < n else -1
        if self.requests:
            if fc == 15 or fc == 16:
                return 9 + mv[p + 6] if p + 6 < n else -1
            return 8
        if 1 <= fc <= 4:
            return 5 + mv[p + 2] if p + 2 < n else -1
        return 8

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        # One pass: every position is looked at once (see the twin for the order of preference).
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t p
        cdef ScanC found, pending, bad
        pending = _found(NOT_CANDIDATE, 0, 0, 0)
        bad = pending
        for p in range(start, n):
            if not self._starts(mv, p):
                continue
            found = self._candidate(mv, p)
            if found.status == NOT_CANDIDATE:
                continue
            if found.status == C_FRAME or found.status == C_EXCEPTION:
                return found
            if found.status == C_PARTIAL or found.end == n:
                if pending.status == NOT_CANDIDATE:
                    pending = found
            elif bad.status == NOT_CANDIDATE:
                bad = found
        if pending.status != NOT_CANDIDATE:
            return pending
        if bad.status != NOT_CANDIDATE:
            return bad
        return _found(C_NONE, n, n, 0)

    cdef ScanC _candidate(self, Bytes mv, Py_ssize_t p):
        cdef Py_ssize_t total = self._total(mv, p)
        cdef Py_ssize_t e
        if total == 5 and not mv[p + 1] & 0x80:
            return _found(NOT_CANDIDATE, p, p, 0)  # a read reply of no data: not a frame
        if total < 0:
            return _found(C_PARTIAL, p, -1, 0)
        if total > self.max_length:
            return _found(C_BAD, p, p + 1, R_LENGTH)
        e = p + total
        if e > mv.shape[0]:
            return _found(C_PARTIAL, p, e, 0)
        if _algo(A_CRC16, mv, p, e - 2) != (mv[e - 2] | (mv[e - 1] << 8)):
            return _found(C_BAD, p, e, R_CHECKSUM)
        if mv[p + 1] & 0x80:
            return _found(C_EXCEPTION, p, e, 0)
        return _found(C_FRAME, p, e, 0)

    cdef Py_ssize_t _resync(self, Py_ssize_t n, ScanC* r):
        """A corrupt candidate that ends before the bytes do comes from a buffer with nothing
        better in it: drop it all. One ending where the bytes end: drop its first byte."""
        return n - r.begin if r.end < n else 1


cdef class AsciiFramer(_Framer):
    """Finds and checks :class:`~bmsbank.native.spec.AsciiHex` frames; unhexlifies them once."""

    cdef unsigned char soi, eoi
    cdef unsigned char is_soi[256]  # several start bytes: 1 for each
    cdef int sois, head
    cdef Py_ssize_t max_info

    def __init__(self, spec):
        cdef int i
        self.spec = spec
        self.soi = spec.soi[0]
        self.sois = len(spec.soi)
        for i in range(256):
            self.is_soi[i] = 0
        for i in spec.soi:
            self.is_soi[i] = 1
        self.eoi = spec.eoi[0]
        self.head = spec.head
        self.max_info = spec.max_info

    cdef Py_ssize_t _soi_at(self, Bytes mv, Py_ssize_t start):
        """First SOI at or after ``start``, -1 when none."""
        cdef Py_ssize_t q
        if self.sois == 1:
            return _find_byte(mv, start, mv.shape[0], self.soi)
        for q in range(start, mv.shape[0]):
            if self.is_soi[mv[q]]:
                return q
        return -1

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t p, q
        cdef ScanC first, later
        p = self._soi_at(mv, start)
        if p < 0:
            return _found(C_NONE, n, n, 0)
        first = self._candidate(mv, p)
        if first.status != C_PARTIAL:
            return first
        q = self._soi_at(mv, p + 1)  # a whole frame after an SOI cut short wins (as binary)
        while q >= 0:
            later = self._candidate(mv, q)
            if later.status == C_FRAME:
                return later
            q = self._soi_at(mv, q + 1)
        return first

    cdef ScanC _candidate(self, Bytes mv, Py_ssize_t p):
        """The frame that the SOI at ``p`` announces, checked."""
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t lat, e, i
        cdef long long length
        cdef int lenid
        lat = p + 1 + self.head
        if lat + 4 > n:
            for i in range(p + 1, n):
                if _hexval(mv[i]) < 0:
                    return _found(C_BAD, p, p + 1, R_HEX)
            return _found(C_PARTIAL, p, -1, 0)
        if self.head and _hex_number(mv, p + 1, self.head) < 0:
            return _found(C_BAD, p, p + 1, R_HEX)
        length = _hex_number(mv, lat, 4)
        if length < 0:
            return _found(C_BAD, p, p + 1, R_HEX)
        lenid = length & 0xFFF
        if ((-((lenid >> 8) + ((lenid >> 4) & 0xF) + (lenid & 0xF))) & 0xF) != (length >> 12):
            return _found(C_BAD, p, p + 1, R_LENGTH_CHECK)
        if lenid % 2 or lenid > self.max_info:
            return _found(C_BAD, p, p + 1, R_LENGTH)
        e = lat + 4 + lenid + 4 + 1
        if e > n:
            return _found(C_PARTIAL, p, e, 0)
        if mv[e - 1] != self.eoi:
            return _found(C_BAD, p, e, R_TRAILER)
        for i in range(lat + 4, e - 1):
            if _hexval(mv[i]) < 0:
                return _found(C_BAD, p, e, R_HEX)
        if <long long>_algo(A_NEGSUM16, mv, p + 1, e - 5) != _hex_number(mv, e - 5, 4):
            return _found(C_BAD, p, e, R_CHECKSUM)
        return _found(C_FRAME, p, e, 0)

    def payload(self, buf, Py_ssize_t begin=0, end=None):
        """The frame between SOI and CHKSUM as bytes: VER ADR CID1 CID2 LENGTH(2) INFO.

        Raises:
            FrameError(kind="hex"): the region is not whole hex bytes.
        """
        cdef Bytes mv = buf
        cdef Py_ssize_t a, b, i, m
        cdef int hi, lo
        _span(mv, begin, end, &a, &b)
        m = b - 5 - (a + 1)
        if m < 0 or m % 2:
            raise FrameError("not an ASCII-hex frame", bytes(mv[a:b]), kind="hex")
        out = bytearray(m // 2)
        cdef unsigned char[:] o = out
        for i in range(m // 2):
            hi = _hexval(mv[a + 1 + 2 * i])
            lo = _hexval(mv[a + 2 + 2 * i])
            if hi < 0 or lo < 0:
                raise FrameError("not an ASCII-hex frame", bytes(mv[a:b]), kind="hex")
            o[i] = (hi << 4) | lo
        return bytes(out)


cdef class AckFramer(_Framer):
    """Finds :class:`~bmsbank.native.spec.FrameThenAck` replies: a frame, then its ack."""

    cdef BinaryFramer frame
    cdef Py_ssize_t ack_length
    cdef tuple pattern
    cdef CheckC ack_check
    cdef int pad

    def __init__(self, spec):
        self.spec = spec
        self.frame = BinaryFramer(spec.frame)
        self.ack_length = spec.ack_length
        self.pattern = tuple(-1 if e is None else e for e in spec.ack_pattern)
        _load_check(&self.ack_check, spec.ack_check)
        self.pad = spec.frame.pad

    cdef bint _ack_shape(self, Bytes mv, Py_ssize_t q):
        cdef Py_ssize_t i, n = mv.shape[0]
        cdef int e
        for i in range(len(self.pattern)):
            if q + i >= n:
                break
            e = self.pattern[i]
            if e >= 0 and mv[q + i] != e:
                return False
        return True

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t p, e, q, end
        cdef ScanC found = self.frame._scan(mv, start)
        if found.status != C_FRAME:
            return found
        p = found.begin
        e = found.end
        q = e + 1 if e < n and self.pad >= 0 and mv[e] == self.pad else e
        if q >= n:
            return _found(C_PARTIAL, p, -1, 0)
        if not self._ack_shape(mv, q):
            return _found(C_FRAME, p, e, 0)
        end = q + self.ack_length
        if end > n:
            return _found(C_PARTIAL, p, end, 0)
        if not _check_ok(&self.ack_check, mv, q, end):
            return _found(C_BAD, p, end, R_CHECKSUM)
        if end < n and self.pad >= 0 and mv[end] == self.pad:
            end += 1
        return _found(C_FRAME, p, end, 0)


cdef class FixedFramer(_Framer):
    """Takes :class:`~bmsbank.native.spec.Fixed` frames: the first ``length`` bytes, unchecked."""

    cdef Py_ssize_t length

    def __init__(self, spec):
        self.spec = spec
        self.length = spec.length

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t e = start + self.length
        if e <= n:
            return _found(C_FRAME, start, e, 0)
        if n > start:
            return _found(C_PARTIAL, start, e, 0)
        return _found(C_NONE, n, n, 0)


cdef class TextLineFramer(_Framer):
    """Finds :class:`~bmsbank.native.spec.TextLine` lines: text, then the terminator (see the
    twin for what is noise, corrupt or skipped)."""

    cdef unsigned char is_text[256]
    cdef unsigned char end
    cdef Py_ssize_t max_length
    cdef frozenset skip

    def __init__(self, spec):
        cdef int i
        self.spec = spec
        for i in range(256):
            self.is_text[i] = 0
        for i in TEXT_BYTES:
            self.is_text[i] = 1
        self.end = spec.end[0]
        self.max_length = spec.max_length
        self.skip = frozenset(spec.skip)

    cdef bint _is_reply(self, Bytes mv, Py_ssize_t p, Py_ssize_t q) except -1:
        """Whether the text ``mv[p:q]`` is a reply: not blank, not a skipped line."""
        cdef Py_ssize_t i, last = q
        cdef bint blank = True
        while last > p and mv[last - 1] == 13:  # CR before the terminator
            last -= 1
        for i in range(p, last):
            if mv[i] != 32 and mv[i] != 9 and mv[i] != 13:
                blank = False
                break
        if blank:
            return False
        return _copy(mv, p, last) not in self.skip

    cdef ScanC _scan(self, Bytes mv, Py_ssize_t start) except *:
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t pos = start, p, q, e
        while True:
            p = pos
            while p < n and not self.is_text[mv[p]] and mv[p] != self.end:
                p += 1  # noise between lines
            if p == n:
                return _found(C_NONE, n, n, 0)
            q = p
            while q < n and self.is_text[mv[q]]:
                q += 1
            if q == n:
                if q - p >= self.max_length:
                    return _found(C_BAD, p, n, R_LENGTH)
                return _found(C_PARTIAL, p, -1, 0)
            if mv[q] != self.end:
                return _found(C_BAD, p, q, R_NOT_TEXT)
            e = q + 1
            if e - p > self.max_length:
                return _found(C_BAD, p, e, R_LENGTH)
            if self._is_reply(mv, p, q):
                return _found(C_FRAME, p, e, 0)
            if p == start:
                return _found(C_SKIP, p, e, 0)  # a blank line or an echo: dropped uncounted
            pos = e  # after noise: counted with it

    cdef Py_ssize_t _resync(self, Py_ssize_t n, ScanC* r):
        """A corrupt line goes whole (up to the byte that cut it): its text starts no frame."""
        return r.end - r.begin if r.end - r.begin > 1 else 1


def framer(spec):
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


cdef bytes _take(_Framer framer, Bytes mv, ScanC* r, Py_ssize_t* noise, Py_ssize_t* cut):
    """The scan loop over positions of ``mv``; sets what to report and how many bytes to cut."""
    cdef Py_ssize_t pos = 0, drop
    while True:
        r[0] = framer._scan(mv, pos)
        if r.status != C_SKIP:
            break
        pos = r.end  # line padding: dropped, not counted
    noise[0] = r.begin - pos
    if r.status == C_FRAME or r.status == C_EXCEPTION:
        cut[0] = r.end
        return _copy(mv, r.begin, r.end)
    if r.status == C_BAD:
        drop = framer._resync(mv.shape[0], r)
        noise[0] += drop - 1
        cut[0] = r.begin + drop
        return _copy(mv, r.begin, r.end if r.end > r.begin else r.begin + 1)
    cut[0] = r.begin
    return b""


def take(_Framer framer not None, bytearray buf not None):
    """Take the first frame out of ``buf``: the scan loop every family's ``extract`` runs.

    See the twin for the contract. The loop runs in C over positions in ``buf`` (every index
    checked) and the consumed bytes are deleted once, when the view on ``buf`` is released.
    """
    cdef ScanC r
    cdef Py_ssize_t noise = 0, cut = 0
    cdef bytes data = _take(framer, buf, &r, &noise, &cut)
    if cut:
        del buf[:cut]
    return r.status, noise, data, r.reason
