"""Type stubs for the compiled bank kernels (same API as ``_limits_py``)."""

from collections.abc import Mapping, Sequence

IMPLEMENTATION: str

def aggregate(packs: Sequence[Mapping]) -> dict: ...
def step_factor(
    value: float, table: Sequence[Sequence[float]], high: bool
) -> tuple[float, int]: ...
