"""Shared timing helper of the benchmarks (run them as ``.venv/bin/python bench/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[], object], seconds: float, repeats: int = 5, batch: int = 100) -> float:
    """Calls per second of ``fn``: the best of ``repeats`` runs sharing ``seconds`` (less noise).

    Args:
        fn: what to time.
        seconds: total time to spend.
        repeats: runs; the fastest counts (the others met a busy machine).
        batch: calls between clock readings (fewer for slow calls).

    """
    fn()
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / repeats:
            for _ in range(batch):
                fn()
            n += batch
        best = max(best, n / elapsed)
    return best
