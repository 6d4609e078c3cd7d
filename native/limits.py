"""The bank kernels in use: compiled :mod:`._limits`, or its twin when ``BMSBANK_PURE=1``."""

from __future__ import annotations

from collections.abc import Callable

from bmsbank.native import _limits_py, select

_impl = select("bmsbank.native._limits", _limits_py)

IMPLEMENTATION: str = _impl.IMPLEMENTATION
aggregate: Callable[..., dict] = _impl.aggregate
step_factor: Callable[..., tuple[float, int]] = _impl.step_factor

__all__ = ["IMPLEMENTATION", "aggregate", "step_factor"]
