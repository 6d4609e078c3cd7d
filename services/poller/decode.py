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


__all__ = ["FrameError", "decode_replies", "parse_args"]
