"""native._frames: known vectors on both implementations, and equivalence on generated input."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
)

JBD = Framing(
    header=b"\xdd",
    length_offset=3,
    length_adjust=7,
    max_length=262,
    check="negsum16be",
    check_from=2,
    check_end=-3,
    check_at=-3,
    trailer=b"\x77",
)
JK = Framing(header=b"\x55\xaa\xeb\x90", fixed_length=300, check="sum8", check_end=-1, check_at=-1)
MODBUS = Framing(
    header=b"\x01\x03", length_offset=2, length_adjust=5, check="crc16le", check_end=-2, check_at=-2
)


def test_implementations_are_distinct(frames_impls):
    compiled, twin = frames_impls
    assert compiled.IMPLEMENTATION == "cython" and twin.IMPLEMENTATION == "python"
    assert compiled.__file__.endswith(".so")


def test_checksum_vectors(frames_mod):
    assert frames_mod.crc16_modbus(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert frames_mod.sum8(b"\xff\x02") == 0x01
    # JBD request "read basic info": DD A5 03 00 FF FD 77, check over 03 00
    assert frames_mod.negsum16(bytes.fromhex("dda50300fffd77"), 2, 4) == 0xFFFD
    assert frames_mod.sum8(b"") == 0 and frames_mod.negsum16(b"") == 0
    with pytest.raises(ValueError):
        frames_mod.sum8(b"abc", 2, 5)


def test_field_table_decodes_scalars_lists_and_text(frames_mod):
    table = frames_mod.FieldTable([
        Field("voltage", 0, "u16be", 0.01),
        Field("current", 2, "s16be", 0.01),
        Field("n", 4, "u8"),
        Field("temps", 5, "u16be", 0.1, -273.15, count_from="n"),
        Field("name", 9, "str", count=6),
        Field("le", 15, "s32le", 0.001),
    ])  # fmt: skip
    buf = bytes.fromhex("1450ff38020bb80bc24a424400000018fcffff")
    out = table.decode(buf)
    assert out["voltage"] == pytest.approx(52.0)
    assert out["current"] == pytest.approx(-2.0)
    assert out["n"] == 2
    assert out["temps"] == pytest.approx([26.85, 27.85])
    assert out["name"] == "JBD"
    assert out["le"] == pytest.approx(-1.0)


def test_field_table_rejects_fields_beyond_the_frame(frames_mod):
    table = frames_mod.FieldTable(
        [Field("n", 0, "u8"), Field("cells", 1, "u16be", 0.001, count_from="n")]
    )
    with pytest.raises(FrameError) as err:
        table.decode(b"\x05\x0c\xe4")
    assert "cells" in str(err.value) and err.value.raw == b"\x05\x0c\xe4"
    with pytest.raises(FrameError):
        frames_mod.FieldTable([Field("x", 3, "u32le")]).decode(b"\x00" * 6)


def test_fill_to_end_list(frames_mod):
    table = frames_mod.FieldTable([Field("cells", 0, "u16be", 0.001, count=0)])
    assert table.decode(b"\x0c\xe4\x0c\xe5\x0c", 0, 5)["cells"] == pytest.approx([3.3, 3.301])
    assert table.decode(b"") == {"cells": []}


@pytest.mark.parametrize(
    "bad",
    [
        [Field("a", 0, "u24")],
        [Field("a", 0, "u8"), Field("a", 1, "u8")],
        [Field("a", 0, "u8", count_from="b")],
        [Field("n", 0, "u8", 0.5), Field("a", 1, "u8", count_from="n")],
        [Field("s", 0, "str", count=0)],
    ],
    ids=["unknown-fmt", "duplicate", "unknown-count-field", "scaled-count-field", "empty-str"],
)
def test_bad_tables_fail_at_load_time(frames_mod, bad):
    with pytest.raises(ValueError):
        frames_mod.FieldTable(bad)


def _jbd(payload: bytes, reg: int = 3) -> bytes:
    body = bytes([reg, 0, len(payload)]) + payload
    chk = (0x10000 - sum(body[1:])) & 0xFFFF
    return b"\xdd" + body + chk.to_bytes(2, "big") + b"\x77"


def test_scanner_finds_frames_after_noise(frames_mod):
    scanner = frames_mod.Scanner(JBD)
    frame = _jbd(b"\x01\x02\x03")
    assert scanner.scan(b"\x00\x11" + frame) == (FRAME, 2, 2 + len(frame), 0)
    assert scanner.scan(frame[:5]) == (PARTIAL, 0, len(frame), 0)
    assert scanner.scan(frame[:3]) == (PARTIAL, 0, -1, 0)
    assert scanner.scan(b"\x00\x01") == (NONE, 2, 2, 0)
    bad = bytearray(frame)
    bad[-2] ^= 1
    assert scanner.scan(bytes(bad)) == (BAD, 0, len(frame), REASON_CHECKSUM)
    bad = bytearray(frame)
    bad[-1] = 0x00
    assert scanner.scan(bytes(bad)) == (BAD, 0, len(frame), REASON_TRAILER)
    bad = bytearray(frame)
    bad[3] = 0xFF  # length beyond max_length
    short = frames_mod.Scanner(dataclasses.replace(JBD, max_length=64))
    assert short.scan(bytes(bad)) == (BAD, 0, 1, REASON_LENGTH)


def test_scanner_keeps_a_header_prefix_at_the_end(frames_mod):
    scanner = frames_mod.Scanner(JK)
    assert scanner.scan(b"\x01\x02\x55\xaa") == (NONE, 2, 2, 0)
    assert scanner.scan(b"\x01\x02\x55\xab") == (NONE, 4, 4, 0)


# -- equivalence on generated input ----------------------------------------------------------

formats = st.sampled_from([f for f in FORMATS if f != "str"])


@st.composite
def tables(draw):
    fields, names = [], []
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["scalar", "list", "fill", "str", "count_from"]))
        name = f"f{i}"
        offset = draw(st.integers(0, 40))
        scale = draw(st.one_of(st.none(), st.sampled_from([0.001, 0.01, 0.1, 1.0, 10.0])))
        bias = draw(st.sampled_from([0.0, -273.15, -40.0]))
        if kind == "str":
            fields.append(Field(name, offset, "str", count=draw(st.integers(1, 12))))
        elif kind == "count_from" and names:
            fields.append(
                Field(
                    name,
                    offset,
                    draw(formats),
                    scale,
                    bias,
                    count_from=draw(st.sampled_from(names)),
                )
            )
        elif kind == "list":
            fields.append(
                Field(name, offset, draw(formats), scale, bias, count=draw(st.integers(2, 6)))
            )
        elif kind == "fill":
            fields.append(Field(name, offset, draw(formats), scale, bias, count=0))
        else:
            fmt = draw(formats)
            fields.append(Field(name, offset, fmt, scale, bias))
            if scale is None:
                names.append(name)
    return fields


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except FrameError as exc:
        return ("FrameError", exc.raw)
    except ValueError as exc:
        return ("ValueError", str(exc))


@settings(max_examples=400, deadline=None)
@given(fields=tables(), buf=st.binary(max_size=64), start=st.integers(0, 8), cut=st.integers(0, 8))
def test_field_tables_agree(frames_impls, fields, buf, start, cut):
    compiled, twin = frames_impls
    end = max(start, len(buf) - cut)
    a = _outcome(compiled.FieldTable(fields).decode, buf, start, end)
    b = _outcome(twin.FieldTable(fields).decode, buf, start, end)
    assert a == b


framings = st.sampled_from([JBD, JK, MODBUS])


@settings(max_examples=400, deadline=None)
@given(
    framing=framings,
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=20),
            st.builds(_jbd, st.binary(max_size=30)),
            st.just(b"\x55\xaa\xeb\x90" + bytes(295) + b"\x10"),
        ),
        max_size=5,
    ),
    start=st.integers(0, 4),
)
def test_scanners_agree(frames_impls, framing, chunks, start):
    compiled, twin = frames_impls
    buf = b"".join(chunks)
    start = min(start, len(buf))
    assert compiled.Scanner(framing).scan(buf, start) == twin.Scanner(framing).scan(buf, start)
    assert _outcome(compiled.crc16_modbus, buf) == _outcome(twin.crc16_modbus, buf)
    assert _outcome(compiled.sum8, buf, start) == _outcome(twin.sum8, buf, start)
    assert _outcome(compiled.negsum16, buf, start) == _outcome(twin.negsum16, buf, start)
