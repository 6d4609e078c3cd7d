"""The state check in use: compiled :mod:`._messages`, or its twin when ``BMSBANK_PURE=1``."""

from __future__ import annotations

from collections.abc import Callable

from bmsbank.native import select

_impl = select("bmsbank.native._messages", "bmsbank.native._messages_py")

IMPLEMENTATION: str = _impl.IMPLEMENTATION
state_ok: Callable[[dict, tuple], bool] = _impl.state_ok

__all__ = ["IMPLEMENTATION", "state_ok"]
