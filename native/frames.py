"""The protocol codec in use: compiled :mod:`._frames`, or its twin when ``BMSBANK_PURE=1``.

Both implementations have the same API; the names below are typed after the twin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bmsbank.native import select
from bmsbank.native.spec import (
    BAD,
    EXCEPTION,
    FRAME,
    NONE,
    PARTIAL,
    REASON_TEXT,
    REASONS,
    SKIP,
)

if TYPE_CHECKING:
    from bmsbank.native import _frames_py

_impl = select("bmsbank.native._frames", "bmsbank.native._frames_py")

IMPLEMENTATION: str = _impl.IMPLEMENTATION
FieldTable: type[_frames_py.FieldTable] = _impl.FieldTable
TlvTable: type[_frames_py.TlvTable] = _impl.TlvTable
framer: Callable[..., _frames_py.Framer] = _impl.framer
checksum: Callable[..., int] = _impl.checksum
sum8: Callable[..., int] = _impl.sum8
negsum16: Callable[..., int] = _impl.negsum16
crc16_modbus: Callable[..., int] = _impl.crc16_modbus
take: Callable[..., tuple[int, int, bytes, int]] = _impl.take

__all__ = [
    "BAD",
    "EXCEPTION",
    "FRAME",
    "IMPLEMENTATION",
    "NONE",
    "PARTIAL",
    "REASONS",
    "REASON_TEXT",
    "SKIP",
    "FieldTable",
    "TlvTable",
    "checksum",
    "crc16_modbus",
    "framer",
    "negsum16",
    "sum8",
    "take",
]
