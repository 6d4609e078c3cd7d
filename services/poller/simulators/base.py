"""The table-driven base every family's simulator builds on.

A simulator answers real requests byte-exactly from :class:`BatteryModel` packs: it finds requests
in the bytes the poller writes with the family's own framers (``request_framing``), hands each to
the family's :meth:`Simulator.answer` hook, and encodes replies with the family's own layouts
(:meth:`Simulator.encode`), so only the captured frames in a family's tests tie both to the real
wire. Faults for tests: ``echo`` (put each request in front of its reply, like a CH340/CH341
RS485 adapter), ``drop_frame`` / ``repeat_frame`` (a multi-frame reply loses or repeats frame n,
1 first); the pty server adds silence, corruption, truncation and noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bmsbank.native import _frames_py as codec  # encoding only: never on a hot path
from bmsbank.native.spec import BAD, FRAME, NONE, PARTIAL, FrameSpec, Tag, encode, encode_tlv
from bmsbank.services.poller.plugins.base import Plugin
from bmsbank.services.poller.simulators.battery import BatteryModel


def invert(table: Mapping[int, str]) -> dict[str, int]:
    """Alarm name -> the lowest bit that reports it (the inverse of a family's bit table)."""
    return {name: bit for bit, name in sorted(table.items(), reverse=True)}


def alarm_bits(model: BatteryModel, table: Mapping[int, str]) -> int:
    """The bit field a BMS with ``table`` would report for ``model``'s active alarms."""
    inverse = invert(table)
    return sum(1 << inverse[n] for n in model.active_alarms if n in inverse)


class Simulator:
    """A simulated bus of one family's packs at the addresses of ``packs``."""

    #: the family this simulator answers for
    family: ClassVar[type[Plugin]]
    #: how requests are framed (None: like the family's replies)
    request_framing: ClassVar[FrameSpec | None] = None

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        self.packs = packs
        self.echo = echo
        self.drop_frame = 0
        self.repeat_frame = 0
        self.layouts = self.family.layouts
        self._framer = codec.framer(self.request_framing or self.family.framing)
        self._buf = bytearray()

    @property
    def baudrate(self) -> int:
        """The family's default speed (the pty server models wire time with it)."""
        return self.family.baudrate

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the poller; answer every complete request, keep a partial one."""
        self._buf += data
        replies: list[bytes] = []
        while self._buf:
            status, begin, end, _ = self._framer.scan(self._buf)
            if status in (PARTIAL, NONE):
                del self._buf[:begin]  # noise before a request start, or all of it
                break
            if status != FRAME:
                del self._buf[: begin + 1 if status == BAD else end]
                continue
            request = bytes(self._buf[begin:end])
            del self._buf[:end]
            frames = self._faulted(self.answer(request))
            if self.echo:
                frames = [request + (frames[0] if frames else b""), *frames[1:]]
            replies.extend(f for f in frames if f)
        return replies

    def _faulted(self, reply: bytes | Sequence[bytes]) -> list[bytes]:
        frames = [reply] if isinstance(reply, bytes) else list(reply)
        if self.repeat_frame and len(frames) > 1 and self.repeat_frame <= len(frames):
            frames.insert(self.repeat_frame, frames[self.repeat_frame - 1])
        if self.drop_frame and len(frames) > 1 and self.drop_frame <= len(frames):
            del frames[self.drop_frame - 1]
        return frames

    def answer(self, request: bytes) -> bytes | list[bytes]:
        """The reply frame(s) to one complete request (b"" or []: nobody answers)."""
        raise NotImplementedError

    def encode(self, part: str, values: Mapping[str, Any]) -> bytes:
        """Encode ``values`` with the layout of ``part``; bytes from the layout's region start.

        Register and coil maps encode from register (coil) 0: slice the window you answer.
        """
        layout = self.layouts[part]
        if layout.mode == "tlv":
            tags: Sequence[Tag] = layout.fields  # type: ignore[assignment]
            return encode_tlv(tags, values)
        return encode(layout.fields, values, layout.mode)  # type: ignore[arg-type]


def window(data: bytes, first: int, count: int, width: int = 2) -> bytes:
    """``count`` registers (width 2) or coils (width 1/8 packed) from ``first`` out of a map."""
    if width == 2:
        return data[first * 2 : (first + count) * 2].ljust(count * 2, b"\0")
    bits = [(data[i // 8] >> (i % 8)) & 1 if i // 8 < len(data) else 0
            for i in range(first, first + count)]  # fmt: skip
    out = bytearray((count + 7) // 8)
    for i, b in enumerate(bits):
        out[i // 8] |= b << (i % 8)
    return bytes(out)
