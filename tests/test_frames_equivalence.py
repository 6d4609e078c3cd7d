"""native._frames and its twin agree on generated input: every check, framer and layout mode."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.errors import FrameError
from bmsbank.native.spec import (
    CHECKS,
    FORMATS,
    AsciiHex,
    Binary,
    Check,
    Field,
    Fixed,
    FrameThenAck,
    ModbusRtu,
    Tag,
    TextLine,
)

NUMERIC = [f for f in FORMATS if f not in ("str", "bit")]
WORDS = [f for f in NUMERIC if FORMATS[f][0] % 2 == 0]


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except FrameError as exc:
        return ("FrameError", exc.kind, exc.raw)
    except ValueError as exc:
        return ("ValueError", str(exc))


@settings(max_examples=300, deadline=None)
@given(algorithm=st.sampled_from(CHECKS), buf=st.binary(max_size=80), a=st.integers(0, 90),
       b=st.integers(0, 90))  # fmt: skip
def test_checks_agree(frames_impls, algorithm, buf, a, b):
    compiled, twin = frames_impls
    assert _outcome(compiled.checksum, algorithm, buf, a, b) == _outcome(
        twin.checksum, algorithm, buf, a, b)  # fmt: skip


@st.composite
def tables(draw, mode: str):
    fields, names = [], []
    formats = {"registers": WORDS, "coils": ["bit"]}.get(mode, NUMERIC)
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["scalar", "list", "fill", "str", "count_from"]))
        name, fmt = f"f{i}", draw(st.sampled_from(formats))
        offset = draw(st.integers(0, 40))
        scale = None if mode == "coils" else draw(
            st.one_of(st.none(), st.sampled_from([0.001, 0.01, 0.1, 1.0, 10.0])))  # fmt: skip
        bias = draw(st.sampled_from([0.0, -273.15, -40.0]))
        stride = draw(st.sampled_from([0, 0, 3, 5])) if mode in ("fixed", "cursor") else 0
        unknown = draw(st.sampled_from([None, None, 0, -1, 0xFFFF]))
        if kind == "str" and mode != "coils":
            fields.append(Field(name, offset, "str", count=draw(st.integers(0, 12))))
        elif kind == "count_from" and names:
            fields.append(Field(name, offset, fmt, scale, bias, count_from=draw(st.sampled_from(
                names)), stride=stride, unknown=unknown))  # fmt: skip
        elif kind == "list":
            fields.append(Field(name, offset, fmt, scale, bias, draw(st.integers(2, 6)),
                                stride=stride, unknown=unknown))  # fmt: skip
        elif kind == "fill":
            fields.append(Field(name, offset, fmt, scale, bias, 0, stride=stride))
        else:
            fields.append(Field(name, offset, fmt, scale, bias, unknown=None if scale is None
                                else unknown))  # fmt: skip
            if scale is None:
                names.append(name)
    return fields


@settings(max_examples=300, deadline=None)
@given(data=st.data(), mode=st.sampled_from(["fixed", "cursor", "registers", "coils"]),
       buf=st.binary(max_size=64), start=st.integers(0, 8), cut=st.integers(0, 8),
       origin=st.integers(0, 12))  # fmt: skip
def test_field_tables_agree(frames_impls, data, mode, buf, start, cut, origin):
    compiled, twin = frames_impls
    fields = data.draw(tables(mode))
    end = max(start, len(buf) - cut)
    a = _outcome(compiled.FieldTable(fields, mode).decode, buf, start, end, origin)
    b = _outcome(twin.FieldTable(fields, mode).decode, buf, start, end, origin)
    assert a == b


@st.composite
def tlv_tables(draw):
    tags = []
    for i, tag in enumerate(draw(st.lists(st.integers(0, 255), min_size=1, max_size=6,
                                          unique=True))):  # fmt: skip
        fields = tuple(dataclasses.replace(f, name=f"t{i}{f.name}") for f in draw(tables("fixed"))
                       if f.fmt != "str" and f.count != 0 and f.count_from is None)  # fmt: skip
        if draw(st.booleans()):
            tags.append(Tag(tag, prefix=draw(st.sampled_from(["u8", "u16be"])), fields=fields))
        else:
            need = max((f.offset + f.step * (f.count - 1) + f.size for f in fields), default=1)
            tags.append(Tag(tag, need + draw(st.integers(0, 3)), fields))
    return tags


@settings(max_examples=200, deadline=None)
@given(data=st.data(), buf=st.binary(max_size=64))
def test_tlv_tables_agree(frames_impls, data, buf):
    compiled, twin = frames_impls
    tags = data.draw(tlv_tables())
    # start the stream with a known tag most of the time, so decoding gets somewhere
    if tags and data.draw(st.booleans()):
        buf = bytes((tags[0].tag,)) + buf
    assert _outcome(compiled.TlvTable(tags).decode, buf) == _outcome(twin.TlvTable(tags).decode,
                                                                     buf)  # fmt: skip


def _pylon(info: bytes) -> bytes:
    n = len(info)
    lchk = (-((n >> 8) + (n >> 4 & 0xF) + (n & 0xF))) & 0xF
    body = b"20014642" + f"{lchk:X}{n:03X}".encode() + info
    return b"~" + body + f"{(0x10000 - sum(body)) & 0xFFFF:04X}".encode() + b"\r"


def _modbus(body: bytes) -> bytes:
    from bmsbank.native._frames_py import crc16_modbus

    return body + crc16_modbus(body).to_bytes(2, "little")


FRAMINGS = [
    Binary(b"\xdd", length_offset=3, length_adjust=7, max_length=262,
           check=Check("negsum16", start=2, end=-3, at=-3, fmt="u16be"), trailer=b"\x77"),
    Binary(b"\x55\xaa\xeb\x90", fixed_length=300, check=Check("sum8", end=-1, at=-1), pad=0),
    Binary(b"\xa5", fixed_length=13, check=Check("sum8", end=-1, at=-1)),
    Binary(b"\x4e\x57", length_offset=2, length_fmt="u16be", length_adjust=2,
           check=Check("sum16", end=-4, at=-4, fmt="u32be")),
    Binary(b"\x7e", length_offset=1, length_fmt="u16le", check=Check("crc8_smbus", at=-1)),
    ModbusRtu(),
    ModbusRtu(functions=(1, 4), addresses=(0, 15)),
    ModbusRtu(functions=(3, 16), requests=True),
    # JBD UP series: a u16 data length at bytes 6-7, replies and requests alike
    ModbusRtu(functions=(0x45, 0x78, 0x79), addresses=(1, 15), long_functions=(0x45, 0x78, 0x79)),
    ModbusRtu(functions=(3, 0x78), requests=True, long_functions=(0x78,)),
    AsciiHex(),
    AsciiHex(soi=b"~>"),  # KS48100: replies read starting with either byte
    FrameThenAck(Binary(b"\x55\xaa\xeb\x90", fixed_length=300, check=Check("sum8", end=-1, at=-1),
                        pad=0), 8, (None, 0x10, 0x16, None, 0, 1),
                 Check("crc16_modbus", end=-2, at=-2, fmt="u16le")),
    Fixed(5),  # Sinowealth: five bytes, checked by the family with its request
    TextLine(skip=(b"m1", b"pv")),  # HLPdata BMS4S: text lines, the command's echo dropped
    TextLine(max_length=24),
]  # fmt: skip

chunks = st.one_of(
    st.binary(max_size=20),
    st.builds(lambda p: b"\xdd\x03\x00" + bytes([len(p)]) + p, st.binary(max_size=20)),
    st.builds(lambda p: _modbus(b"\x01\x04" + bytes([len(p)]) + p), st.binary(max_size=20)),
    st.builds(lambda p: _modbus(b"\x01\x84" + p[:1]), st.binary(min_size=1, max_size=1)),
    st.builds(
        lambda p: _modbus(b"\x02\x78\x10\x00\x10\xa0" + len(p).to_bytes(2, "big") + p),
        st.binary(max_size=20),
    ),  # fmt: skip
    st.just(_modbus(bytes.fromhex("0178100010a00000"))),  # a JBD UP read request
    st.builds(lambda p: _pylon(p.hex().encode()), st.binary(max_size=20)),
    st.builds(lambda p: _pylon(p), st.binary(max_size=12)),
    st.builds(lambda p: b">" + _pylon(p.hex().encode())[1:], st.binary(max_size=20)),
    st.just(b">"),
    st.just(b"\x55\xaa\xeb\x90" + bytes(295) + b"\x10"),
    st.just(_modbus(bytes.fromhex("031016200001"))),
    st.just(b"\x00"),
    st.just(b"~"),
    st.builds(lambda t: t.encode() + b"\r\n", st.text("0123456789.,- b", max_size=40)),
    st.sampled_from([b"m1\r\n", b"pv\n", b"\r\n", b" \t\r\n", b"\n", b"m1"]),
)


@settings(max_examples=500, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), parts=st.lists(chunks, max_size=5),
       start=st.integers(0, 4))  # fmt: skip
def test_framers_agree(frames_impls, framing, parts, start):
    compiled, twin = frames_impls
    buf = b"".join(parts)
    start = min(start, len(buf))
    a, b = compiled.framer(framing), twin.framer(framing)
    found = a.scan(buf, start)
    assert found == b.scan(buf, start)
    if found[0] in (0, 4):  # FRAME, EXCEPTION: the payload the layouts read
        assert _outcome(a.payload, buf, found[1], found[2]) == _outcome(
            b.payload, buf, found[1], found[2])  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), parts=st.lists(chunks, max_size=6))
def test_take_agrees_and_consumes_the_stream_alike(frames_impls, framing, parts):
    compiled, twin = frames_impls
    stream = b"".join(parts)
    a, b = compiled.framer(framing), twin.framer(framing)
    buf_a, buf_b = bytearray(stream), bytearray(stream)
    taken = 0
    for _ in range(len(stream) + 1):  # every call consumes, or says it needs more bytes
        got = compiled.take(a, buf_a)
        assert got == twin.take(b, buf_b)
        assert buf_a == buf_b
        status, _noise, data, _reason = got
        assert status != 5  # SKIP: padding is dropped inside take, never handed out
        if status in (0, 4):  # FRAME, EXCEPTION: the frame, as scan found it, removed whole
            assert data and stream.find(data, taken) >= 0
        if status not in (0, 2, 4):  # NONE, PARTIAL: what is left waits for more bytes
            assert data == b""
            break
        taken = len(stream) - len(buf_a)
    else:
        raise AssertionError("take never stopped")


#: line noise: runs of one byte (zeros, 0xFF, start bytes), random bytes, repeated false starts
noise = st.one_of(
    st.builds(lambda b, n: bytes([b]) * n, st.sampled_from([0x00, 0xFF, 0xDD, 0x55, 0xA5, 0x4E,
                                                           0x7E, 0x01]), st.integers(1, 700)),
    st.binary(min_size=1, max_size=1500),
    st.builds(lambda u, n: u * n, st.sampled_from([
        b"\x55\xaa\xeb\x90", b"~20014A42F000", b"~0000000000", bytes((1, 4, 0xF0)),
        bytes((1, 4, 2, 0, 0, 0, 0)), b"\xdd\xa5\x00\xff", b"\x4e\x57\xff\xff", b"\xa5\x01"]),
        st.integers(1, 200)),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), noises=st.lists(noise, min_size=1, max_size=3),
       parts=st.lists(chunks, max_size=3),
       cuts=st.lists(st.integers(1, 400), max_size=8))  # fmt: skip
def test_take_agrees_on_noise_read_in_pieces(frames_impls, framing, noises, parts, cuts):
    compiled, twin = frames_impls
    stream = b"".join(noises) + b"".join(parts)
    a, b = compiled.framer(framing), twin.framer(framing)
    buf_a, buf_b = bytearray(), bytearray()
    at, accounted = 0, 0
    for cut in [*cuts, len(stream)]:  # what each read of the port brings
        piece = stream[at : at + cut]
        at += len(piece)
        buf_a += piece
        buf_b += piece
        while True:
            before = len(buf_a)
            got = compiled.take(a, buf_a)
            assert got == twin.take(b, buf_b) and buf_a == buf_b
            status, dropped, data, _reason = got
            consumed = before - len(buf_a)
            kept = {0: len(data), 4: len(data), 2: 1}.get(status, 0)  # FRAME, EXCEPTION, BAD
            assert consumed >= dropped + kept  # the rest: padding, never counted
            accounted += consumed
            if status in (1, 3):  # PARTIAL, NONE: wait for the next piece
                break
    assert accounted + len(buf_a) == len(stream)


@settings(max_examples=300, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), parts=st.lists(st.one_of(chunks, noise), max_size=4),
       start=st.integers(0, 600))  # fmt: skip
def test_a_scan_from_start_is_the_scan_of_what_follows(frames_impls, framing, parts, start):
    # take() resumes the scan at a position instead of deleting bytes: it must not matter.
    buf = b"".join(parts)
    start = min(start, len(buf))
    for mod in frames_impls:
        status, begin, end, reason = mod.framer(framing).scan(buf, start)
        shifted = (status, begin - start, end - start if end >= 0 else -1, reason)
        assert shifted == mod.framer(framing).scan(buf[start:]), mod.IMPLEMENTATION


@settings(max_examples=200, deadline=None)
@given(framing=st.sampled_from(FRAMINGS), parts=st.lists(st.one_of(chunks, noise), max_size=4),
       step=st.sampled_from([2, -1, -2]))  # fmt: skip
def test_a_strided_view_scans_as_its_bytes(frames_impls, framing, parts, step):
    # The compiled search uses memchr where the bytes are contiguous, an index loop elsewhere.
    data = b"".join(parts)
    view = memoryview(data)[::step]
    for mod in frames_impls:
        assert mod.framer(framing).scan(view) == mod.framer(framing).scan(bytes(view))
