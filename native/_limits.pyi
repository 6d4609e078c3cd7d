"""Type stubs for the compiled bank limits engine (same API as ``_limits_py``)."""

from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.native._limits_py import ABSORPTION as ABSORPTION
from bmsbank.native._limits_py import BULK as BULK
from bmsbank.native._limits_py import CHARGE_BLOCKING as CHARGE_BLOCKING
from bmsbank.native._limits_py import CHARGE_STATES as CHARGE_STATES
from bmsbank.native._limits_py import DISCHARGE_BLOCKING as DISCHARGE_BLOCKING
from bmsbank.native._limits_py import FLOAT as FLOAT
from bmsbank.native._limits_py import MAX_AGE as MAX_AGE
from bmsbank.native._limits_py import RULES as RULES
from bmsbank.native._limits_py import check_snapshot as check_snapshot

IMPLEMENTATION: str

def fraction(x: float, rows: Sequence[Sequence[float]], linear: bool) -> float: ...

class PackRules:
    @property
    def linear(self) -> bool: ...
    def __init__(self, p: Mapping[str, Any]) -> None: ...
    def evaluate(self, k: int, s: Mapping[str, Any], limit: float) -> list: ...

class Engine:
    @property
    def n(self) -> int: ...
    @property
    def t(self) -> float: ...
    @property
    def state(self) -> str: ...
    @property
    def cells(self) -> int: ...
    @property
    def cvl(self) -> float: ...
    @property
    def ccl(self) -> float: ...
    @property
    def dcl(self) -> float: ...
    def __init__(
        self,
        params: Mapping[str, Any],
        strings: Sequence[Sequence[int]],
        cells: Sequence[int],
        capacities: Sequence[float],
    ) -> None: ...
    def step(self, t: float, states: Sequence[Any], seen: Sequence[float]) -> dict: ...
    def snapshot(self) -> dict: ...
    def restore(self, t: float, snap: Mapping[str, Any]) -> None: ...

__all__ = [
    "ABSORPTION", "BULK", "CHARGE_BLOCKING", "CHARGE_STATES", "DISCHARGE_BLOCKING", "FLOAT",
    "IMPLEMENTATION", "MAX_AGE", "RULES", "Engine", "PackRules", "check_snapshot", "fraction",
]  # fmt: skip
