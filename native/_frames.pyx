# cython: language_level=3
"""Compiled frame codec: checksums, frame scanning and field-table decoding.

Same public API and results as :mod:`bmsbank.native._frames_py`. Every index into a received
buffer is range-checked before use and bounds checking stays on (see setup.py).
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

from bmsbank.errors import FrameError
from bmsbank.native.spec import (
    FORMATS,
    STR_CODE,
    FORMAT_CODES,
    validate_fields,
    BAD,
    FRAME,
    NONE,
    PARTIAL,
    REASON_CHECKSUM,
    REASON_LENGTH,
    REASON_TRAILER,
)

IMPLEMENTATION = "cython"

cdef int C_FRAME = FRAME
cdef int C_PARTIAL = PARTIAL
cdef int C_BAD = BAD
cdef int C_NONE = NONE
cdef int C_STR = STR_CODE

ctypedef const unsigned char[:] Bytes


cdef inline void _span(Bytes mv, Py_ssize_t start, object end, Py_ssize_t* a, Py_ssize_t* b) except *:
    cdef Py_ssize_t n = mv.shape[0]
    cdef Py_ssize_t stop = n if end is None else <Py_ssize_t>end
    if start < 0 or stop > n or start > stop:
        raise ValueError(f"range {start}:{stop} outside buffer of {n} bytes")
    a[0] = start
    b[0] = stop


cdef inline unsigned int _sum(Bytes mv, Py_ssize_t a, Py_ssize_t b):
    cdef unsigned int s = 0
    cdef Py_ssize_t i
    for i in range(a, b):
        s += mv[i]
    return s


cdef inline unsigned int _crc(Bytes mv, Py_ssize_t a, Py_ssize_t b):
    cdef unsigned int crc = 0xFFFF
    cdef Py_ssize_t i
    cdef int k
    for i in range(a, b):
        crc ^= mv[i]
        for k in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def sum8(buf, Py_ssize_t start=0, end=None):
    """Sum of bytes modulo 256."""
    cdef Bytes mv = buf
    cdef Py_ssize_t a, b
    _span(mv, start, end, &a, &b)
    return _sum(mv, a, b) & 0xFF


def negsum16(buf, Py_ssize_t start=0, end=None):
    """JBD check value: 0x10000 minus the byte sum, modulo 0x10000."""
    cdef Bytes mv = buf
    cdef Py_ssize_t a, b
    _span(mv, start, end, &a, &b)
    return (0x10000 - _sum(mv, a, b)) & 0xFFFF


def crc16_modbus(buf, Py_ssize_t start=0, end=None):
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    cdef Bytes mv = buf
    cdef Py_ssize_t a, b
    _span(mv, start, end, &a, &b)
    return _crc(mv, a, b)


cdef inline long long _raw(Bytes mv, Py_ssize_t p, int size, bint signed, bint big):
    cdef unsigned long long u = 0
    cdef int i
    if big:
        for i in range(size):
            u = (u << 8) | mv[p + i]
    else:
        for i in range(size - 1, -1, -1):
            u = (u << 8) | mv[p + i]
    if signed and (u >> (8 * size - 1)) & 1:
        return <long long>u - (<long long>1 << (8 * size))
    return <long long>u


cdef struct FieldC:
    Py_ssize_t offset
    int code
    int size
    bint is_signed
    bint big
    bint has_scale
    double scale
    double bias
    Py_ssize_t count
    int count_from
    bint scalar


cdef class FieldTable:
    """A compiled field table; :meth:`decode` turns a frame region into a dict."""

    cdef readonly tuple fields
    cdef list names
    cdef FieldC* c
    cdef int n

    def __cinit__(self, fields):
        self.c = NULL
        self.n = 0

    def __init__(self, fields):
        self.fields = tuple(fields)
        validate_fields(self.fields)
        self.n = len(self.fields)
        self.c = <FieldC*>malloc(max(1, self.n) * sizeof(FieldC))
        if self.c == NULL:
            raise MemoryError()
        self.names = [f.name for f in self.fields]
        index = {name: i for i, name in enumerate(self.names)}
        cdef int i
        for i, f in enumerate(self.fields):
            size, signed, big = FORMATS[f.fmt]
            self.c[i].offset = f.offset
            self.c[i].code = FORMAT_CODES[f.fmt]
            self.c[i].size = size
            self.c[i].is_signed = signed
            self.c[i].big = big
            self.c[i].has_scale = f.scale is not None
            self.c[i].scale = f.scale if f.scale is not None else 1.0
            self.c[i].bias = f.bias
            self.c[i].count = f.count
            self.c[i].count_from = index[f.count_from] if f.count_from is not None else -1
            self.c[i].scalar = f.count == 1 and f.count_from is None

    def __dealloc__(self):
        free(self.c)

    def decode(self, buf, Py_ssize_t start=0, end=None):
        """Decode every field of the table from ``buf[start:end]``.

        Raises:
            FrameError: a field lies outside the region or a count is impossible.
        """
        cdef Bytes mv = buf
        cdef Py_ssize_t a, b, pos, k, nval
        cdef FieldC* f
        cdef long long raw
        cdef list values
        cdef dict out = {}
        cdef int i
        _span(mv, start, end, &a, &b)
        for i in range(self.n):
            f = &self.c[i]
            pos = a + f.offset
            if f.code == C_STR:
                if pos + f.count > b:
                    raise FrameError(f"field {self.names[i]!r} beyond end of frame", bytes(mv[a:b]))
                out[self.names[i]] = _ascii(mv, pos, f.count)
                continue
            if f.count_from >= 0:
                nval = out[self.names[f.count_from]]
            elif f.count == 0:
                nval = (b - pos) // f.size if b > pos else 0
            else:
                nval = f.count
            if nval < 0 or pos + nval * f.size > b:
                raise FrameError(
                    f"field {self.names[i]!r} ({nval} x {f.size} B at {f.offset}) beyond end of frame",
                    bytes(mv[a:b]),
                )
            if f.scalar:
                raw = _raw(mv, pos, f.size, f.is_signed, f.big)
                if f.has_scale:
                    out[self.names[i]] = <double>raw * f.scale + f.bias
                else:
                    out[self.names[i]] = raw
                continue
            values = []
            for k in range(nval):
                raw = _raw(mv, pos + k * f.size, f.size, f.is_signed, f.big)
                if f.has_scale:
                    values.append(<double>raw * f.scale + f.bias)
                else:
                    values.append(raw)
            out[self.names[i]] = values
        return out


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


cdef class Scanner:
    """Finds and checks frames of one :class:`Framing` in a byte stream."""

    cdef readonly object framing
    cdef bytes header
    cdef bytes trailer
    cdef Py_ssize_t hlen, tlen, fixed_length, length_offset, length_adjust, max_length
    cdef int length_size
    cdef bint length_big
    cdef int check
    cdef Py_ssize_t check_from, check_end, check_at

    def __init__(self, framing):
        self.framing = framing
        self.header = bytes(framing.header)
        self.trailer = bytes(framing.trailer)
        self.hlen = len(self.header)
        self.tlen = len(self.trailer)
        self.fixed_length = framing.fixed_length
        self.length_offset = framing.length_offset
        self.length_adjust = framing.length_adjust
        self.max_length = framing.max_length
        size, _signed, big = FORMATS[framing.length_fmt]
        self.length_size = size
        self.length_big = big
        self.check = ("none", "sum8", "negsum16be", "crc16le").index(framing.check)
        self.check_from = framing.check_from
        self.check_end = framing.check_end
        self.check_at = framing.check_at

    cdef bint _checked(self, Bytes mv, Py_ssize_t p, Py_ssize_t e):
        cdef Py_ssize_t lo = p + self.check_from
        cdef Py_ssize_t hi = e + self.check_end
        cdef Py_ssize_t at = e + self.check_at
        if self.check == 0:
            return True
        if lo > hi or at < p:
            return False
        if self.check == 1:
            return (_sum(mv, lo, hi) & 0xFF) == mv[at]
        if self.check == 2:
            return ((0x10000 - _sum(mv, lo, hi)) & 0xFFFF) == ((mv[at] << 8) | mv[at + 1])
        return _crc(mv, lo, hi) == (mv[at] | (mv[at + 1] << 8))

    def scan(self, buf, Py_ssize_t start=0):
        """Look for the first frame in ``buf[start:]``; see the twin for the result contract."""
        cdef Bytes mv = buf
        cdef Py_ssize_t n = mv.shape[0]
        cdef Py_ssize_t p, q, total, e, j, m
        cdef const unsigned char* hdr = self.header
        cdef const unsigned char* trl = self.trailer
        cdef bint match
        if start < 0 or start > n:
            raise ValueError(f"start {start} outside buffer of {n} bytes")
        p = -1
        for q in range(start, n - self.hlen + 1):
            if mv[q] == hdr[0]:
                match = True
                for j in range(1, self.hlen):
                    if mv[q + j] != hdr[j]:
                        match = False
                        break
                if match:
                    p = q
                    break
        if p < 0:
            q = n - self.hlen + 1
            if q < start:
                q = start
            while q < n:
                m = n - q
                match = True
                for j in range(m):
                    if mv[q + j] != hdr[j]:
                        match = False
                        break
                if match:
                    return C_NONE, q, q, 0
                q += 1
            return C_NONE, n, n, 0
        if self.fixed_length:
            total = self.fixed_length
        else:
            if p + self.length_offset + self.length_size > n:
                return C_PARTIAL, p, -1, 0
            total = _raw(mv, p + self.length_offset, self.length_size, False, self.length_big)
            total += self.length_adjust
        if total < self.hlen + self.tlen or total > self.max_length:
            return C_BAD, p, p + 1, REASON_LENGTH
        e = p + total
        if e > n:
            return C_PARTIAL, p, e, 0
        for j in range(self.tlen):
            if mv[e - self.tlen + j] != trl[j]:
                return C_BAD, p, e, REASON_TRAILER
        if not self._checked(mv, p, e):
            return C_BAD, p, e, REASON_CHECKSUM
        return C_FRAME, p, e, 0
