"""The framers for replies without a start byte: Fixed (Sinowealth) and TextLine (HLPdata BMS4S).

Both implementations (``frames_mod``); what each framer takes, keeps, skips and refuses.
"""

from __future__ import annotations

import pytest

from bmsbank.native.spec import (
    BAD,
    FRAME,
    NONE,
    PARTIAL,
    REASON_LENGTH,
    REASON_NOT_TEXT,
    REASONS,
    SKIP,
    Fixed,
    TextLine,
)

LINE = TextLine(skip=(b"m1",), max_length=40)
REPLY = b"3.321,3.322,3.320,3.319,-1.25,85\r\n"


def takes(mod, spec, stream: bytes) -> list[tuple[int, int, bytes, int]]:
    """Every ``take`` result until one needs more bytes."""
    framer, buf, out = mod.framer(spec), bytearray(stream), []
    while True:
        got = mod.take(framer, buf)
        out.append(got)
        if got[0] in (NONE, PARTIAL):
            return out


def test_fixed_takes_each_run_of_length_bytes(frames_mod):
    framer = frames_mod.framer(Fixed(5))
    assert framer.scan(b"\x0d\x03\x00\x00\xfd\x01") == (FRAME, 0, 5, 0)
    assert framer.scan(b"\x0d\x03", 0) == (PARTIAL, 0, 5, 0)
    assert framer.scan(b"\x0d\x03", 2) == (NONE, 2, 2, 0)
    got = takes(frames_mod, Fixed(5), bytes(range(12)))
    assert [g[2] for g in got] == [bytes(range(5)), bytes(range(5, 10)), b""]
    assert got[-1][0] == PARTIAL
    with pytest.raises(ValueError):
        Fixed(0)


def test_text_line_skips_the_echo_and_blank_lines_uncounted(frames_mod):
    [got, rest] = takes(frames_mod, LINE, b"m1\r\n\r\n" + REPLY)
    assert got == (FRAME, 0, REPLY, 0)
    assert rest[0] == NONE


def test_noise_before_a_line_is_counted_and_dropped(frames_mod):
    [got, _] = takes(frames_mod, LINE, b"\x00\xff\x80" + REPLY)
    assert got == (FRAME, 3, REPLY, 0)
    [got, _] = takes(frames_mod, LINE, b"\x00m1\r\n" + REPLY)  # an echo after noise: noise too
    assert got == (FRAME, 5, REPLY, 0)


def test_a_line_cut_by_a_foreign_byte_goes_whole_then_its_tail_is_a_line(frames_mod):
    bad = b"3.321,3.3\x9722,3.320\r\n"
    got = takes(frames_mod, LINE, bad)
    assert got[0] == (BAD, 8, b"3.321,3.3", REASON_NOT_TEXT)  # one candidate, 8 more bytes
    assert REASONS[REASON_NOT_TEXT] == "malformed"
    assert got[1] == (FRAME, 1, b"22,3.320\r\n", 0)  # the foreign byte is noise; the family
    # refuses the tail's structure


def test_a_line_too_long_is_malformed_and_a_short_one_waits(frames_mod):
    framer = frames_mod.framer(LINE)
    long_line = b"1," * 30 + b"\n"
    assert framer.scan(long_line) == (BAD, 0, len(long_line), REASON_LENGTH)
    assert framer.scan(b"1," * 30) == (BAD, 0, 60, REASON_LENGTH)  # no end in sight
    assert framer.scan(REPLY[:10]) == (PARTIAL, 0, -1, 0)
    assert framer.scan(b"m1\r\n") == (SKIP, 0, 4, 0)
    assert framer.payload(REPLY) == REPLY


@pytest.mark.parametrize("kwargs", [{"end": b"a"}, {"end": b"\n\r"}, {"max_length": 1},
                                    {"skip": (b"",)}, {"skip": (b"m1\n",)}],
                         ids=["text-end", "two-byte-end", "too-short", "empty-skip",
                              "skip-with-end"])  # fmt: skip
def test_text_line_rejects_a_bad_spec(kwargs):
    with pytest.raises(ValueError):
        TextLine(**kwargs)
