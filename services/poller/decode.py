"""Decode captured replies offline: what ``bmsbank decode`` runs, with the poller's own code.

Each argument is a reply (hex, spaces and colons ignored) or ``REQUEST=REPLY`` for protocols
whose replies do not say what they answer (Modbus): the reply is then decoded by the request it
answers, whatever register block that is. Bytes carry over from one argument to the next, so a
frame pasted in pieces still decodes. The frames of a multi-frame reply (Daly's cell voltages)
are joined as the poller joins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bmsbank.errors import FrameError
from bmsbank.services.poller.can_family import CanFamily, CanFrame
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, merge_frames


def parse_args(texts: Sequence[str]) -> list[tuple[bytes | None, bytes]]:
    """``[(request or None, reply)]`` from the command line's arguments.

    Raises:
        ValueError: an argument is not hex (the message quotes it).

    """
    out = []
    for text in texts:
        request, _, reply = text.rpartition("=")
        try:
            out.append((_hex(request) if request else None, _hex(reply)))
        except ValueError:
            raise ValueError(f"not hex: {text!r}") from None
    return out


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", "").replace(" ", ""))


def decode_replies(
    plugin: Plugin, replies: Sequence[tuple[bytes | None, bytes]], address: int | None = None
) -> tuple[dict[str, dict[str, Any]], LinkStats, int]:
    """Decode ``replies`` into the parts of one poll cycle.

    Args:
        plugin: the family.
        replies: ``(request or None, reply bytes)`` in arrival order.
        address: the address the replies must come from (None: any).

    Returns:
        (parts, link counters, bytes left over after the last complete frame).

    Raises:
        FrameError: a corrupt, foreign or unexpected frame, or a multi-frame reply out of order.

    """
    buf, stats = bytearray(), LinkStats()
    parts: dict[str, dict[str, Any]] = {}
    frames: dict[str, list[dict[str, Any]]] = {}
    for request, reply in replies:
        buf += reply
        while (frame := plugin.extract(buf, stats)) is not None:
            part, fields = plugin.parse(frame, request, address)
            if plugin.collecting(part) is None:
                parts[part] = fields
            else:
                frames.setdefault(part, []).append(fields)
    for part, group in frames.items():
        collect = plugin.collecting(part)
        assert collect is not None
        parts[part] = merge_frames(group, collect.index)
    return parts, stats, len(buf)


def decode_can_frames(
    family: CanFamily, texts: Sequence[str], address: int | None = None
) -> tuple[dict[str, dict[str, Any]], LinkStats, int | None]:
    """Decode CAN frames given as candump's ``ID#DATA`` into the parts of one pack.

    Hex throughout; an id of more than 3 digits is a 29-bit id.

    Args:
        family: the CAN family.
        texts: the frames in arrival order.
        address: the pack whose frames are decoded (None: the first pack seen).

    Returns:
        (parts, link counters: other packs' and foreign frames under ``unexpected``, the
        pack's address or None when no frame was this family's).

    Raises:
        ValueError: an argument is not ``ID#DATA`` in hex (the message quotes it).
        FrameError: a frame of the pack the family rejects (a short DLC, ...).

    """
    stats = LinkStats()
    parts: dict[str, dict[str, Any]] = {}
    for text in texts:
        head, sep, data = text.strip().partition("#")
        try:
            if not sep or not 1 <= len(head) <= 8:
                raise ValueError(text)
            frame = CanFrame(int(head, 16), _hex(data), extended=len(head) > 3)
        except ValueError:
            raise ValueError(f"not ID#DATA in hex: {text!r}") from None
        found = family.address_of(frame)
        if found is None or (address is not None and found != address):
            stats.unexpected += 1
            continue
        address = found
        family.accept(frame, parts)
    return parts, stats, address


__all__ = ["FrameError", "decode_can_frames", "decode_replies", "parse_args"]
