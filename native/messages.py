"""The state body and check in use: compiled :mod:`._messages`, or its twin (``BMSBANK_PURE=1``)."""

from __future__ import annotations

from collections.abc import Callable

from bmsbank.native import select

_impl = select("bmsbank.native._messages", "bmsbank.native._messages_py")

IMPLEMENTATION: str = _impl.IMPLEMENTATION
state_ok: Callable[[dict, tuple], bool] = _impl.state_ok
state_body: Callable[[dict, dict, dict], dict] = _impl.state_body

__all__ = ["IMPLEMENTATION", "state_body", "state_ok"]
