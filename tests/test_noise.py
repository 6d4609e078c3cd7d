"""Line noise: every family's framer skips it in one pass, keeps a frame cut short, counts it.

Each test runs on both implementations (``frames_mod``). Linearity is asserted without a clock:
with the whole stream present every call of ``take`` either reports one corrupt candidate or
ends with the frame, so the calls are bounded by the false starts in the noise; a corrupt Modbus
candidate with nothing better after it ends the buffer at once; and the twin's Python-level
calls grow in proportion to the noise. The milliseconds are bench/decode.py's (noise rows).
"""

from __future__ import annotations

import functools
import itertools
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bmsbank.native.frames import checksum
from bmsbank.native.spec import (
    BAD,
    EXCEPTION,
    FRAME,
    NONE,
    PARTIAL,
    REASON_CHECKSUM,
    AsciiHex,
    Binary,
    Fixed,
    FrameSpec,
    FrameThenAck,
    ModbusRtu,
    TextLine,
)
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, modbus_frame
from bmsbank.services.poller.scan import serial_families
from bmsbank.services.poller.simulators.battery import BatteryModel

N = 64 * 1024  # the figure: 64 KiB of noise
#: line noise is a serial matter (SPI words come whole); a framing with no start byte (Fixed,
#: TextLine) cannot tell noise from a reply's first bytes, so its family's own checks refuse
#: what noise makes of a reply (tests/test_frames_unmarked.py and the family's tests)
FAMILIES = sorted(n for n in serial_families()
                  if not isinstance(plugins.load(n).framing, (Fixed, TextLine)))  # fmt: skip
NO_START = b"\xff"  # starts no frame of any family (no header byte, no Modbus address)


@functools.cache
def family_frame(name: str) -> tuple[FrameSpec, bytes]:
    """A family's framing and the first frame its simulator answers the first request with."""
    plugin = plugins.load(name)
    model = BatteryModel(cells=16, soc=57.0, current=-8.0, imbalance=0.02)
    sim = simulators.create(name, {plugin.default_address: model})
    query = next(q for q in plugin.queries(plugin.default_address) if q.expects_reply)
    frame = plugin.extract(bytearray(b"".join(sim.feed(query.request))), LinkStats())
    assert frame
    return plugin.framing, frame


def _repeat(unit: bytes, size: int) -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


def _pylon_length(chars: int) -> bytes:
    """A Pylon LENGTH field (LCHKSUM nibble + LENID) for ``chars`` INFO characters."""
    check = -((chars >> 8) + (chars >> 4 & 0xF) + (chars & 0xF)) & 0xF
    return f"{check << 12 | chars:04X}".encode()


def false_starts(framing: FrameSpec) -> dict[str, bytes]:
    """Units that look like a frame start to ``framing`` (repeated, they make the noise)."""
    if isinstance(framing, FrameThenAck):
        framing = framing.frame
    if isinstance(framing, ModbusRtu):
        a, f = framing.addresses[0], framing.functions[0]
        return {
            "start": bytes((a, f)),
            "long length": bytes((a, f, 0xF0)),
            "exception": bytes((a, f | 0x80)),
            "bad check": bytes((a, f, 2, 0, 0, 0, 0)),
        }
    if isinstance(framing, AsciiHex):
        head = b"0" * framing.head
        return {
            "start": framing.soi,
            "bad length check": framing.soi + head + b"F000",
            "bad check": framing.soi + head + _pylon_length(10) + b"0" * 14 + framing.eoi,
        }
    assert isinstance(framing, Binary)
    h = framing.header
    units = {"start": h[:1], "header": h}
    total = framing.fixed_length or min(framing.max_length, 256)
    unit = bytearray(max(total, len(h)))
    unit[: len(h)] = h
    if not framing.fixed_length:
        fmt = framing.length_fmt
        size, order = (1, "big") if fmt == "u8" else (2, "little" if fmt == "u16le" else "big")
        at = framing.length_offset
        longest = (1 << 8 * size) - 1
        units["long length"] = bytes(unit[:at]) + longest.to_bytes(size, order)
        unit[at : at + size] = (total - framing.length_adjust).to_bytes(size, order)
    if framing.trailer:
        unit[-len(framing.trailer) :] = framing.trailer
    check = framing.check
    if checksum(check.algorithm, bytes(unit[check.start : len(unit) + check.end])) == 0:
        unit[check.at] = 1  # 0 would be the right check value (ANT's sum over zeros)
    units["bad check"] = bytes(unit)  # header, length and trailer in place, check value wrong
    return units


def noise_patterns(framing: FrameSpec, size: int = N) -> dict[str, bytes]:
    """Zeros, 0xFF, random bytes and repeated false starts, ``size`` bytes each."""
    rnd = random.Random(20261204)
    out = {
        "zeros": bytes(size),
        "0xFF": b"\xff" * size,
        "random": bytes(rnd.getrandbits(8) for _ in range(size)),  # a prefix of the longer
    }
    out.update({name: _repeat(unit, size) for name, unit in false_starts(framing).items()})
    return out


@dataclass
class Taken:
    """What successive ``take`` calls reported."""

    calls: int = 0
    noise: int = 0
    bad: int = 0
    pads: int = 0  # line padding dropped silently (JK PB's 0x00)
    frames: list[bytes] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # of the frames, in the stream
    last: int = NONE
    offset: int = 0  # where the buffer's first byte is in the stream

    def lost_to_a_false_frame(self, begin: int, end: int) -> bool:
        """Whether a frame found before ``begin`` overlaps ``begin:end`` (a check passed by
        chance: a plain sum8 passes one false start in 256, and takes the real frame's bytes; a
        framing without a check value, EG4 LiFePOWER's, passes any false start whose length
        lands on an end byte, and may take the whole real frame). The family's own checks
        refuse such a false frame's content; the real one comes with the next request."""
        return any(b < begin < e for b, e in self.spans)


def drain(mod, framer, buf: bytearray, seen: Taken) -> Taken:
    """Call ``take`` until it needs more bytes; check what each call consumed."""
    while True:
        before = len(buf)
        status, noise, data, _reason = mod.take(framer, buf)
        consumed = before - len(buf)
        seen.calls += 1
        seen.noise += noise
        seen.last = status
        kept = {FRAME: len(data), EXCEPTION: len(data), BAD: 1}.get(status, 0)
        pads = consumed - noise - kept
        assert pads >= 0
        seen.pads += pads
        seen.offset += consumed
        if status == BAD:
            seen.bad += 1
        elif status in (FRAME, EXCEPTION):
            seen.frames.append(data)
            seen.spans.append((seen.offset - len(data), seen.offset))
        if status in (NONE, PARTIAL):
            return seen


def pad_of(framing: FrameSpec) -> int:
    return framing.frame.pad if isinstance(framing, FrameThenAck) else getattr(framing, "pad", -1)


@pytest.mark.parametrize("family", FAMILIES)
def test_noise_before_a_frame_is_skipped_in_one_pass(frames_mod, family):
    framing, frame = family_frame(family)
    framer = frames_mod.framer(framing)
    for pattern, noise in noise_patterns(framing).items():
        seen = drain(frames_mod, framer, bytearray(noise + frame), Taken())
        where = f"{family}, {pattern}"
        assert seen.last == NONE and seen.offset == N + len(frame), where  # all consumed
        real = (N, N + len(frame))
        if seen.spans[-1] != real:
            assert seen.lost_to_a_false_frame(*real), where
            continue
        assert seen.frames[-1] == frame, where
        false_frames = seen.frames[:-1]
        assert len(false_frames) <= 2, where
        # every byte of the noise accounted once: noise, a corrupt start, padding, a false frame
        assert seen.noise + seen.bad + seen.pads + sum(map(len, false_frames)) == N, where
        # one call per corrupt candidate, one per frame, one that finds the buffer empty
        assert seen.calls == seen.bad + len(seen.frames) + 1, where
        if pad_of(framing) < 0:
            assert seen.pads == 0, where
        if pattern in ("zeros", "0xFF"):
            assert seen.calls == 2 and seen.bad == 0, where  # no candidate: one call skips it
        if pattern == "random":
            assert seen.bad <= N // 128, where
        if isinstance(framing, ModbusRtu):
            assert seen.calls == 2 and seen.noise == N, where  # the frame wins over any false one


def test_a_stuck_line_of_zeros_is_padding_to_jk_pb_and_noise_to_the_others(frames_mod):
    for family in FAMILIES:
        framing, frame = family_frame(family)
        seen = drain(frames_mod, frames_mod.framer(framing), bytearray(bytes(N) + frame), Taken())
        padded = pad_of(framing) == 0
        assert (seen.noise, seen.pads) == ((0, N) if padded else (N, 0)), family


@pytest.mark.parametrize("family", FAMILIES)
def test_a_frame_split_across_reads_after_noise_is_kept_then_decoded(frames_mod, family):
    framing, frame = family_frame(family)
    half = len(frame) // 2
    for pattern, noise in noise_patterns(framing, 8 * 1024).items():
        framer, buf, seen = frames_mod.framer(framing), bytearray(), Taken()
        for at in range(0, len(noise), 61):  # a stuck line, read as it comes
            buf += noise[at : at + 61]
            drain(frames_mod, framer, buf, seen)
            assert len(buf) <= 600, (family, pattern)  # never more than a frame start is kept
        real = (len(noise), len(noise) + len(frame))
        buf += frame[:half]
        drain(frames_mod, framer, buf, seen)
        if seen.lost_to_a_false_frame(*real):
            continue
        assert seen.last == PARTIAL and bytes(buf).endswith(frame[:half]), (family, pattern)
        buf += frame[half:]
        drain(frames_mod, framer, buf, seen)
        assert not buf and seen.offset == real[1], (family, pattern)
        if seen.spans[-1] != real:
            assert seen.lost_to_a_false_frame(*real), (family, pattern)
            continue
        assert seen.frames[-1] == frame, (family, pattern)
        false_frames = sum(map(len, seen.frames[:-1]))
        assert seen.noise + seen.bad + seen.pads + false_frames == len(noise), (family, pattern)


def test_modbus_garbage_with_false_starts_is_one_corrupt_reply_and_noise(frames_mod):
    framer = frames_mod.framer(ModbusRtu(functions=(1, 4)))
    garbage = bytes((1, 4, 2, 0, 0, 0, 0)) * 4000 + b"\xff" * 8  # read replies, CRC 0000
    buf = bytearray(garbage)
    status, noise, data, reason = frames_mod.take(framer, buf)
    # Nothing in the buffer can become a frame: the first false start is reported, the rest is
    # noise, and nothing is looked at twice.
    assert (status, reason, data, noise, buf) == (BAD, REASON_CHECKSUM, garbage[:7],
                                                  len(garbage) - 1, bytearray())  # fmt: skip
    reply = modbus_frame(bytes((1, 4, 2, 0x12, 0x34)))
    buf = bytearray(garbage + reply)
    assert frames_mod.take(framer, buf) == (FRAME, len(garbage), reply, 0) and not buf
    # A corrupt reply that ends where the bytes end may still be growing: one byte goes.
    buf = bytearray(b"\xff" * 3 + garbage[:7])
    assert frames_mod.take(framer, buf) == (BAD, 3, garbage[:7], REASON_CHECKSUM)
    assert buf == garbage[1:7]


def _python_calls(fn: Callable[[], object]) -> int:
    """Python-level function calls (Python and builtin) made while ``fn`` runs."""
    count = 0

    def profile(_frame, event, _arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(previous)
    return count


@pytest.mark.parametrize("family", FAMILIES)
def test_the_twins_work_grows_with_the_noise_not_faster(frames_impls, family):
    twin = frames_impls[1]
    framing, frame = family_frame(family)
    small, large = noise_patterns(framing, 4096), noise_patterns(framing, 4 * 4096)

    def run(stream: bytes) -> Callable[[], object]:
        return lambda: drain(twin, twin.framer(framing), bytearray(stream), Taken())

    for pattern, end in itertools.product(small, (frame, NO_START * 300)):  # reply, or none
        base = _python_calls(run(small[pattern] + end))
        four_times = _python_calls(run(large[pattern] + end))
        # linear: about 4x the calls for 4x the noise (a pass per false start would be 16x)
        assert four_times <= 6 * base + 100, (family, pattern, end[:4], base, four_times)
