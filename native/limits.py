"""The bank limits engine in use: compiled :mod:`._limits`, or its twin when ``BMSBANK_PURE=1``.

Constants (rule names, blocking alarms, charge states) are plain data defined once in the twin's
modules and shared by both implementations.
"""

from __future__ import annotations

from bmsbank.native import _limits_py, select
from bmsbank.native._limits_py import (
    ABSORPTION,
    BULK,
    CHARGE_BLOCKING,
    CHARGE_STATES,
    DISCHARGE_BLOCKING,
    FLOAT,
    RULES,
)

_impl = select("bmsbank.native._limits", _limits_py)

IMPLEMENTATION: str = _impl.IMPLEMENTATION
Engine: type[_limits_py.Engine] = _impl.Engine
#: one pack's limits from one state, exactly as the engine computes them
PackRules: type[_limits_py.PackRules] = _impl.PackRules
fraction = _impl.fraction

__all__ = [
    "ABSORPTION", "BULK", "CHARGE_BLOCKING", "CHARGE_STATES", "DISCHARGE_BLOCKING", "FLOAT",
    "IMPLEMENTATION", "RULES", "Engine", "PackRules", "fraction",
]  # fmt: skip
