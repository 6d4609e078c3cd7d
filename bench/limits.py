"""Limits engine cycle: compiled ``native._limits`` vs its pure-Python twin, in one run.

One cycle is one ``Engine.step`` over every pack of the bank (per-pack limits from cells,
sensors, SoC, MOSFET, FETs and alarms; strings; state machine; CVL; CCL/DCL; counters; the output
dict with its reasons). Banks of 128 packs x 32 cells, 2 sensors each, with default ``[bank]``
parameters, wired two ways:

- parallel: 128 strings of one pack;
- series: 32 strings of 4 packs in series.

Time advances 1 s per cycle; ``stale_after`` is raised so the same states stay fresh.

    .venv/bin/python bench/limits.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from typing import Any

from timing import rate  # bench/ is on sys.path when a bench runs as a script

PACKS = 128
CELLS = 32


def bank(series: int) -> tuple[Any, list[dict], list[float]]:
    """Topology, one state per pack (seeded), and when each was seen."""
    from bmsbank.state import make_state
    from bmsbank.topology import Topology

    rng = random.Random(1)
    strings = tuple(tuple(range(i, i + series)) for i in range(0, PACKS, series))
    topo = Topology(
        ids=tuple(f"bus{k // 16}:{k % 16 + 1}" for k in range(PACKS)),
        strings=strings,
        cells=(CELLS,) * PACKS,
        capacities=(280.0,) * PACKS,
        max_charge=(50.0,) * PACKS,
        max_discharge=(100.0,) * PACKS,
    )
    states = []
    for k in range(PACKS):
        cells = [round(3.30 + rng.uniform(-0.01, 0.01), 3) for _ in range(CELLS)]
        fields = {
            "voltage": round(sum(cells), 3), "current": 12.0, "soc": 60.0, "capacity": 280.0,
            "remaining": 168.0, "cells": cells, "balancing": [0] * CELLS,
            "temperatures": [24.0 + rng.random(), 25.0], "mosfet_temperature": 35.0,
            "charge_fet": True, "discharge_fet": True,
            "alarms": {"high_cell_voltage": 0, "low_cell_voltage": 0, "high_temperature": 0},
        }  # fmt: skip
        states.append(make_state(f"bus{k // 16}", k % 16 + 1, "jbd", k, fields, {"ok": 1}))
    return topo, states, [0.0] * PACKS


def cycle_rate(mod: Any, series: int, seconds: float) -> float:
    """Engine cycles per second of ``mod`` on a bank of strings of ``series`` packs."""
    from bmsbank.config import BankConfig
    from bmsbank.topology import engine_params

    topo, states, seen = bank(series)
    params = engine_params(BankConfig(), topo)
    params["stale_after"] = 1e12
    engine = mod.Engine(params, topo.strings, topo.cells, topo.capacities)
    clock = itertools.count(1.0)
    return rate(lambda: engine.step(next(clock), states, seen), seconds, batch=10)


def main() -> int:
    """Time both implementations on both wirings and print µs per cycle."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = p.parse_args()
    from bmsbank.native import _limits, _limits_py

    impls = f"{_limits.IMPLEMENTATION} vs {_limits_py.IMPLEMENTATION} twin"
    print(f"limits engine cycle, {PACKS} packs x {CELLS} cells: {impls}, µs per cycle")
    print(f"{'bank':<22} {'compiled':>9} {'twin':>9} {'ratio':>7}")
    for name, series in (("128 in parallel", 1), ("32 strings x 4 series", 4)):
        c = 1e6 / cycle_rate(_limits, series, args.seconds)
        t = 1e6 / cycle_rate(_limits_py, series, args.seconds)
        print(f"{name:<22} {c:>9,.0f} {t:>9,.0f} {t / c:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
