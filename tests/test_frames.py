"""native._frames, the protocol toolkit: known vectors on both implementations.

Every test here runs twice per suite run (``frames_mod``: compiled and twin); the equivalence of
the two on generated input is tests/test_frames_equivalence.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from bmsbank.errors import FrameError
from bmsbank.native.spec import (
    BAD,
    CHECKS,
    EXCEPTION,
    FRAME,
    NONE,
    PARTIAL,
    REASON_CHECKSUM,
    REASON_HEX,
    REASON_LENGTH,
    REASON_LENGTH_CHECK,
    REASON_TRAILER,
    SKIP,
    AsciiHex,
    Binary,
    Check,
    Field,
    FrameThenAck,
    Layout,
    ModbusRtu,
    Tag,
    encode,
    encode_tlv,
)

JBD = Binary(b"\xdd", length_offset=3, length_adjust=7, max_length=262, trailer=b"\x77",
             check=Check("negsum16", start=2, end=-3, at=-3, fmt="u16be"))  # fmt: skip
JK = Binary(b"\x55\xaa\xeb\x90", fixed_length=300, check=Check("sum8", end=-1, at=-1))
JK_PB = FrameThenAck(dataclasses.replace(JK, pad=0), 8, (None, 0x10, 0x16, None, 0, 1),
                     Check("crc16_modbus", end=-2, at=-2, fmt="u16le"))  # fmt: skip
JK_4E57 = Binary(b"\x4e\x57", length_offset=2, length_fmt="u16be", length_adjust=2,
                 check=Check("sum16", end=-4, at=-4, fmt="u32be"))  # fmt: skip
PYLON = AsciiHex()

#: CRC catalogue check values of "123456789", and plain sums worked by hand
VECTORS = {
    "none": 0, "sum8": 0xDD, "sum16": 0x01DD, "negsum16": 0xFE23, "crc16_modbus": 0x4B37,
    "xor8": 0x31, "crc8_smbus": 0xF4,
}  # fmt: skip


def test_implementations_are_distinct(frames_impls):
    compiled, twin = frames_impls
    assert compiled.IMPLEMENTATION == "cython" and twin.IMPLEMENTATION == "python"
    assert compiled.__file__.endswith(".so")


def test_every_check_of_the_table_has_its_vector(frames_mod):
    assert set(VECTORS) == set(CHECKS)
    for name, value in VECTORS.items():
        assert frames_mod.checksum(name, b"123456789") == value, name
    # JBD request "read basic info": DD A5 03 00 FF FD 77, check over 03 00
    assert frames_mod.negsum16(bytes.fromhex("dda50300fffd77"), 2, 4) == 0xFFFD
    assert frames_mod.sum8(b"") == 0 and frames_mod.negsum16(b"") == 0
    with pytest.raises(ValueError):
        frames_mod.sum8(b"abc", 2, 5)
    with pytest.raises(ValueError):
        frames_mod.checksum("md5", b"abc")


# -- field tables ------------------------------------------------------------------------------
def test_fixed_table_decodes_scalars_lists_and_text(frames_mod):
    table = frames_mod.FieldTable([
        Field("voltage", 0, "u16be", 0.01),
        Field("current", 2, "s16be", 0.01),
        Field("n", 4, "u8"),
        Field("temps", 5, "u16be", 0.1, -273.15, count_from="n"),
        Field("name", 9, "str", count=6),
        Field("le", 15, "s32le", 0.001),
    ])  # fmt: skip
    out = table.decode(bytes.fromhex("1450ff38020bb80bc24a424400000018fcffff"))
    assert out["voltage"] == pytest.approx(52.0) and out["current"] == pytest.approx(-2.0)
    assert out["n"] == 2 and out["temps"] == pytest.approx([26.85, 27.85])
    assert out["name"] == "JBD" and out["le"] == pytest.approx(-1.0)


def test_fields_beyond_the_frame_raise(frames_mod):
    table = frames_mod.FieldTable([Field("n", 0, "u8"), Field("c", 1, "u16be", count_from="n")])
    with pytest.raises(FrameError) as err:
        table.decode(b"\x05\x0c\xe4")
    assert "c" in str(err.value) and err.value.raw == b"\x05\x0c\xe4"
    with pytest.raises(FrameError):
        frames_mod.FieldTable([Field("x", 3, "u32le")]).decode(b"\x00" * 6)


def test_fill_lists_stride_unknown_and_text_to_the_end(frames_mod):
    table = frames_mod.FieldTable([Field("cells", 0, "u16be", 0.001, count=0)])
    assert table.decode(b"\x0c\xe4\x0c\xe5\x0c", 0, 5)["cells"] == pytest.approx([3.3, 3.301])
    assert table.decode(b"") == {"cells": []}
    # JK 4E57 0x79 records: <cell no> <mV u16>
    records = frames_mod.FieldTable([Field("cells", 1, "u16be", 0.001, count=0, stride=3)])
    assert records.decode(bytes.fromhex("010ce4020ce5"))["cells"] == pytest.approx([3.3, 3.301])
    probes = frames_mod.FieldTable([Field("t", 0, "s16le", 0.1, count=2, unknown=-2000)])
    assert probes.decode(bytes.fromhex("30f8fa00"))["t"] == [None, pytest.approx(25.0)]
    text = frames_mod.FieldTable([Field("model", 1, "str", count=0)])
    assert text.decode(b"\x05JBD-SP04\x00junk")["model"] == "JBD-SP04"


def test_cursor_mode_reads_counts_then_what_follows(frames_mod):
    # Pylon-style INFO: M cells, K temperatures, then the fields after them
    table = frames_mod.FieldTable([
        Field("m", 0, "u8"), Field("cells", 0, "u16be", 0.001, count_from="m"),
        Field("k", 0, "u8"), Field("temps", 0, "u16be", 0.1, -273.1, count_from="k"),
        Field("current", 0, "s16be", 0.01), Field("soc", 2, "u16be", 0.1),
    ], mode="cursor")  # fmt: skip
    out = table.decode(bytes.fromhex("020ce40ce5010bb8fc18aaaa0258"))
    assert out["cells"] == pytest.approx([3.3, 3.301]) and out["temps"] == pytest.approx([26.9])
    assert out["current"] == pytest.approx(-10.0) and out["soc"] == pytest.approx(60.0)
    with pytest.raises(FrameError):
        table.decode(bytes.fromhex("050ce4"))


def test_register_map_decodes_any_window(frames_mod):
    table = frames_mod.FieldTable([
        Field("voltage", 0x1000, "u16be", 0.01), Field("current", 0x1001, "s16be", 0.01),
        Field("energy", 0x1002, "u32ws"), Field("cells", 0x1100, "u16be", 0.001, count=2),
    ], mode="registers")  # fmt: skip
    data = bytes.fromhex("1450ff3800010002")
    assert table.decode(data, 0, 8, 0x1000) == {
        "voltage": pytest.approx(52.0),
        "current": pytest.approx(-2.0),
        "energy": 0x00020001,
    }
    assert table.decode(data, 2, 8, 0x1001) == {"current": pytest.approx(-2.0),
                                                "energy": 0x00020001}  # fmt: skip
    assert table.decode(data, 0, 4, 0x1000) == {"voltage": pytest.approx(52.0),
                                                "current": pytest.approx(-2.0)}  # fmt: skip
    assert table.decode(bytes.fromhex("0ce40ce5"), 0, 4, 0x1100)["cells"] == pytest.approx(
        [3.3, 3.301]
    )
    assert table.decode(b"\x00\x01", 0, 2, 0x2000) == {}


def test_coil_map_reads_bits_lsb_first(frames_mod):
    table = frames_mod.FieldTable([
        Field("discharge_fet", 0x1240, "bit"), Field("charge_fet", 0x1241, "bit"),
        Field("balancing", 0x1230, "bit", count=4),
    ], mode="coils")  # fmt: skip
    assert table.decode(b"\x05\x02", 0, 2, 0x1230) == {"balancing": [1, 0, 1, 0]}
    assert table.decode(b"\x05\x02\x02", 0, 3, 0x1230) == {
        "discharge_fet": 0, "charge_fet": 1, "balancing": [1, 0, 1, 0]}  # fmt: skip


def test_tlv_table(frames_mod):
    tlv = frames_mod.TlvTable([
        Tag(0x79, prefix="u8", fields=(Field("cells", 1, "u16be", 0.001, count=0, stride=3),)),
        Tag(0x80, 2, (Field("t", 0, "u16be"),)), Tag(0x86, 1),
    ])  # fmt: skip
    assert tlv.decode(bytes.fromhex("7906010ce4020ce58000198602")) == {
        "cells": [pytest.approx(3.3), pytest.approx(3.301)], "t": 25}  # fmt: skip
    for bad in ("7906010ce4020ce5ff00", "7909010ce4", "8000", "79"):
        with pytest.raises(FrameError) as err:
            tlv.decode(bytes.fromhex(bad))
        assert err.value.kind == "tlv", bad


@pytest.mark.parametrize(
    "bad, mode",
    [
        ([Field("a", 0, "u24")], "fixed"),
        ([Field("a", 0, "u8"), Field("a", 1, "u8")], "fixed"),
        ([Field("a", 0, "u8", count_from="b")], "fixed"),
        ([Field("n", 0, "u8", 0.5), Field("a", 1, "u8", count_from="n")], "fixed"),
        ([Field("s", 0, "str", scale=2.0)], "fixed"),
        ([Field("b", 0, "bit")], "fixed"),
        ([Field("r", 0, "u8")], "registers"),
        ([Field("c", 0, "u16be")], "coils"),
        ([Field("x", 0, "u8")], "sideways"),
    ],
    ids=[
        "unknown-fmt",
        "duplicate",
        "unknown-count",
        "scaled-count",
        "scaled-str",
        "bit-fixed",
        "byte-register",
        "word-coil",
        "unknown-mode",
    ],  # fmt: skip
)
def test_bad_tables_fail_at_load_time(frames_mod, bad, mode):
    with pytest.raises(ValueError):
        frames_mod.FieldTable(bad, mode)


def test_encoders_invert_the_tables(frames_mod):
    fields = (Field("n", 0, "u8"), Field("cells", 0, "u16be", 0.001, count_from="n"),
              Field("t", 1, "s16be", 0.1, unknown=-32768))  # fmt: skip
    raw = encode(fields, {"n": 2, "cells": [3.3, 3.301], "t": None}, "cursor")
    assert frames_mod.FieldTable(fields, "cursor").decode(raw) == {
        "n": 2, "cells": [pytest.approx(3.3), pytest.approx(3.301)], "t": None}  # fmt: skip
    tags = (Tag(0x83, 2, (Field("v", 0, "u16be", 0.01),)), Tag(0x87, 2, (Field("c", 0, "u16be"),)))
    assert frames_mod.TlvTable(tags).decode(encode_tlv(tags, {"v": 52.0, "c": 7})) == {
        "v": pytest.approx(52.0), "c": 7}  # fmt: skip


def test_layout_regions_are_clamped():
    layout = Layout((Field("a", 0, "u8"),), start=4, end=-3)
    assert layout.region(b"\x00" * 10) == (4, 7) and layout.region(b"\x00" * 5) == (4, 4)


# -- framers -----------------------------------------------------------------------------------
def _jbd(payload: bytes, reg: int = 3) -> bytes:
    body = bytes([reg, 0, len(payload)]) + payload
    chk = (0x10000 - sum(body[1:])) & 0xFFFF
    return b"\xdd" + body + chk.to_bytes(2, "big") + b"\x77"


def test_binary_framer(frames_mod):
    framer = frames_mod.framer(JBD)
    frame = _jbd(b"\x01\x02\x03")
    assert framer.scan(b"\x00\x11" + frame) == (FRAME, 2, 2 + len(frame), 0)
    assert framer.scan(frame[:5]) == (PARTIAL, 0, len(frame), 0)
    assert framer.scan(frame[:3]) == (PARTIAL, 0, -1, 0)
    assert framer.scan(b"\x00\x01") == (NONE, 2, 2, 0)
    bad = bytearray(frame)
    bad[-2] ^= 1
    assert framer.scan(bytes(bad)) == (BAD, 0, len(frame), REASON_CHECKSUM)
    bad = bytearray(frame)
    bad[-1] = 0x00
    assert framer.scan(bytes(bad)) == (BAD, 0, len(frame), REASON_TRAILER)
    bad = bytearray(frame)
    bad[3] = 0xFF
    short = frames_mod.framer(dataclasses.replace(JBD, max_length=64))
    assert short.scan(bytes(bad)) == (BAD, 0, 1, REASON_LENGTH)
    assert framer.payload(b"xx" + frame, 2, 2 + len(frame)) == frame


def test_binary_framer_keeps_a_header_prefix_and_skips_pads(frames_mod):
    framer = frames_mod.framer(JK)
    assert framer.scan(b"\x01\x02\x55\xaa") == (NONE, 2, 2, 0)
    assert framer.scan(b"\x01\x02\x55\xab") == (NONE, 4, 4, 0)
    padded = frames_mod.framer(dataclasses.replace(JK, pad=0))
    assert padded.scan(b"\x00\x00\x55") == (SKIP, 0, 2, 0)


def test_word_sum_in_a_u32_check(frames_mod):
    # JK 4E57 read-all request: 00 00 + u16 sum of everything before it
    request = bytes.fromhex("4e5700130000000006030000000000006800000129")
    assert frames_mod.framer(JK_4E57).scan(request) == (FRAME, 0, 21, 0)
    bad = request[:-4] + b"\x00\x01\x01\x29"  # the high word must be 0
    assert frames_mod.framer(JK_4E57).scan(bad)[0] == BAD


def _modbus(body: bytes) -> bytes:
    from bmsbank.native._frames_py import crc16_modbus

    return body + crc16_modbus(body).to_bytes(2, "little")


def test_modbus_framer_replies_exceptions_and_requests(frames_mod):
    framer = frames_mod.framer(ModbusRtu(functions=(1, 4)))
    reply = _modbus(bytes.fromhex("0104041450ff38"))
    assert framer.scan(b"\xff\x77" + reply) == (FRAME, 2, 2 + len(reply), 0)
    assert framer.scan(reply[:4]) == (PARTIAL, 0, len(reply), 0)
    assert framer.scan(reply[:2]) == (PARTIAL, 0, -1, 0)
    exception = _modbus(b"\x01\x84\x02")
    assert framer.scan(exception) == (EXCEPTION, 0, 5, 0)
    bad = bytearray(reply)
    bad[-1] ^= 1
    assert framer.scan(bytes(bad)) == (BAD, 0, len(reply), REASON_CHECKSUM)
    assert framer.scan(b"\x01\x03\x02\xff") == (NONE, 4, 4, 0)  # FC03 is not accepted here
    requests = frames_mod.framer(ModbusRtu(functions=(4, 16), requests=True))
    read = _modbus(bytes.fromhex("000410000012"))
    assert read.hex() == "0004100000127516"  # seplos v3 PIA request, as captured on a wire
    assert requests.scan(read) == (FRAME, 0, 8, 0)
    trigger = _modbus(bytes.fromhex("011016200001020000"))
    assert requests.scan(trigger) == (FRAME, 0, 11, 0)


def test_modbus_long_functions_carry_a_u16_length(frames_mod):
    up = ModbusRtu(functions=(0x45, 0x78, 0x79), addresses=(1, 15),
                   long_functions=(0x45, 0x78, 0x79))  # fmt: skip
    framer = frames_mod.framer(up)
    request = bytes.fromhex("01 78 1000 10a0 0000 7fb2")  # JBD UP16S pack status, address 1
    assert framer.scan(b"\x00" + request) == (FRAME, 1, 11, 0)  # DSB tests/bms/test_lltjbd_up16s
    reply = _modbus(bytes.fromhex("01 78 2000 2004 0004 7aa87aa8"))
    assert framer.scan(reply) == (FRAME, 0, 14, 0)
    assert framer.scan(reply[:7]) == (PARTIAL, 0, -1, 0)  # the length is not there yet
    assert framer.scan(reply[:9]) == (PARTIAL, 0, 14, 0)
    assert framer.scan(_modbus(bytes.fromhex("010300"))) == (NONE, 5, 5, 0)  # FC03: not here
    with pytest.raises(ValueError, match="long_functions"):
        ModbusRtu(functions=(3,), long_functions=(3,))
    with pytest.raises(ValueError, match="functions must be among"):
        ModbusRtu(functions=(0x78,))


def _pylon(info: str, cid2: str = "42", adr: str = "00") -> bytes:
    lenid = len(info)
    lchk = (-((lenid >> 8) + (lenid >> 4 & 0xF) + (lenid & 0xF))) & 0xF
    body = f"20{adr}46{cid2}{lchk:X}{lenid:03X}{info}".encode()
    return b"~" + body + f"{(0x10000 - sum(body)) & 0xFFFF:04X}".encode() + b"\r"


def test_ascii_hex_framer(frames_mod):
    framer = frames_mod.framer(PYLON)
    request = b"~20014642E00201FD35\r"  # Seplos v2 telemetry request for pack 1 (vendor PDF)
    assert _pylon("01", adr="01") == request
    assert framer.scan(b"\r\n" + request) == (FRAME, 2, 2 + len(request), 0)
    assert framer.payload(request) == bytes.fromhex("20014642e00201")
    assert framer.scan(request[:6]) == (PARTIAL, 0, -1, 0)
    assert framer.scan(request[:15]) == (PARTIAL, 0, len(request), 0)
    cases = {
        "length-check": (request.replace(b"E002", b"F002"), REASON_LENGTH_CHECK),
        "hex": (request.replace(b"01FD", b"0GFD"), REASON_HEX),
        "checksum": (request.replace(b"FD35", b"FD36"), REASON_CHECKSUM),
        "trailer": (request[:-1] + b"\n", REASON_TRAILER),
        "odd-lenid": (_pylon("012"), REASON_LENGTH),
    }
    for name, (frame, reason) in cases.items():
        status, begin, _end, why = framer.scan(frame)
        assert (status, begin, why) == (BAD, 0, reason), name
    with pytest.raises(FrameError) as err:
        framer.payload(request.replace(b"2001", b"20G1"))
    assert err.value.kind == "hex"


def test_ascii_hex_framer_with_several_start_bytes(frames_mod):
    """``soi=b"~>"``: a frame starts at either byte (KS48100 replies); one byte stays the rule."""
    framer = frames_mod.framer(AsciiHex(soi=b"~>"))
    tilde = _pylon("01", adr="01")
    angle = b">" + tilde[1:]
    assert framer.scan(b"xy" + angle + tilde) == (FRAME, 2, 2 + len(angle), 0)
    assert framer.scan(angle + tilde, 1) == (FRAME, len(angle), 2 * len(angle), 0)
    assert framer.scan(b"~20" + angle) == (BAD, 0, 1, REASON_HEX)  # "~20>" is no frame start
    assert framer.scan(angle[:5]) == (PARTIAL, 0, -1, 0)
    assert framer.payload(angle) == framer.payload(tilde) == bytes.fromhex("20014642e00201")
    assert frames_mod.framer(PYLON).scan(angle) == (NONE, len(angle), len(angle), 0)
    for soi in (b"", b"~~", b"~\r"):
        with pytest.raises(ValueError):
            AsciiHex(soi=soi)


def _jk_frame(ftype: int = 2) -> bytes:
    frame = bytearray(300)
    frame[:6] = b"\x55\xaa\xeb\x90" + bytes((ftype, 7))
    frame[299] = sum(frame[:299]) & 0xFF
    return bytes(frame)


def test_frame_then_ack_framer(frames_mod):
    framer = frames_mod.framer(JK_PB)
    frame, ack = _jk_frame(), _modbus(bytes.fromhex("031016200001"))
    assert framer.scan(frame + ack) == (FRAME, 0, 308, 0)
    assert framer.scan(frame + b"\x00" + ack + b"\x00") == (FRAME, 0, 310, 0)
    assert framer.scan(frame) == (PARTIAL, 0, -1, 0)  # its ack may still come
    assert framer.scan(frame + ack[:5]) == (PARTIAL, 0, 308, 0)
    assert framer.scan(frame + b"\x55\xaa") == (FRAME, 0, 300, 0)  # no ack: the frame alone
    bad = bytearray(frame + ack)
    bad[-1] ^= 1
    assert framer.scan(bytes(bad)) == (BAD, 0, 308, REASON_CHECKSUM)
    assert framer.scan(b"\x00" + frame + ack) == (SKIP, 0, 1, 0)
