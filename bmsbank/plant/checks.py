"""The requirements of docs/LIMITS.md's procedure table, checked on a run's metrics.

``bmsbank simulate`` prints one PASS or FAIL line per requirement of its procedure; the same
thresholds as ``tests/test_plant.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Check = tuple[str, Callable[[Mapping[str, Any]], bool]]
CELL_DANGER = 3.60  # V: no cell may reach it (the BMS trips at 3.65 V)
RIPPLE_MAX_MV = 50.0  # mV of CVL ripple allowed in the last 30 min

SAFE: list[Check] = [
    (f"no cell at {CELL_DANGER:.2f} V, no BMS trip",
     lambda m: m["max_cell_voltage"] < CELL_DANGER and not m["bms_tripped"]),
]  # fmt: skip
FLOAT: list[Check] = [
    ("float reached (bulk, absorption, float)",
     lambda m: m["states_seen"] == ["bulk", "absorption", "float"]
     and m["final_state"] == "float"),
    (f"CVL ripple <= {RIPPLE_MAX_MV:g} mV in the last 30 min",
     lambda m: m["cvl_ripple_mv"] is not None and m["cvl_ripple_mv"] <= RIPPLE_MAX_MV),
]  # fmt: skip
NEVER_ZERO: Check = ("CCL never 0 while merely full", lambda m: m["ccl_zero_while_full_s"] == 0)

REQUIREMENTS: dict[str, list[Check]] = {
    "feed-in": SAFE
    + FLOAT
    + [NEVER_ZERO, ("PV sold to the grid (> 5 kWh)", lambda m: m["feed_in_wh"] > 5000.0)],
    "imbalance": SAFE
    + FLOAT
    + [NEVER_ZERO, ("highest cell <= 3.46 V", lambda m: m["max_cell_voltage"] <= 3.46)],
    "excess-pv": SAFE
    + FLOAT
    + [NEVER_ZERO, ("bus pushed to CVL + 0.4 V", lambda m: m["bus_over_cvl_max_v"] > 0.35)],
    "cold-charge": SAFE
    + [
        ("no charge below 5 °C", lambda m: m["charge_below_window_ah"] == 0.0),
        ("charges once warm (SoC > 70 %)", lambda m: m["final_soc"] > 70.0),
    ],
    "pack-lost": SAFE
    + [
        NEVER_ZERO,
        ("CVL never rises while a pack is lost", lambda m: not m["cvl_rose_while_lost"]),
        ("CVL <= float while lost", lambda m: m["max_cvl_while_lost"] <= m["float_cap"] + 1e-9),
        ("rejoins without a CVL drop", lambda m: m["rejoined"] and m["rejoin_cvl_drop"] == 0.0),
    ],
    "all-lost": SAFE
    + [
        NEVER_ZERO,
        (
            "safe state within stale_after + 1 s",
            lambda m: m["safe_after_s"] is not None and m["safe_after_s"] <= m["stale_after"] + 1.0,
        ),
        ("recovers", lambda m: bool(m["recovered"])),
    ],
    "series": SAFE + FLOAT,
    "cell-health": SAFE
    + [
        (
            "every cell's resistance estimated within 15 %",
            lambda m: (
                m["resistance_estimated"] > 0
                and m["resistance_error_max_pct"] <= 15.0
                and not m["missing_resistance"]
            ),
        ),
        ("every weak cell flagged", lambda m: bool(m["weak_cells"]) and not m["missed"]),
        ("no healthy cell flagged", lambda m: not m["false_flags"]),
    ],
}


def check(procedure: str, metrics: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(requirement, passed) for each requirement of ``procedure`` (a missing metric fails)."""
    out = []
    for text, test in REQUIREMENTS.get(procedure, []):
        try:
            ok = bool(test(metrics))
        except (KeyError, TypeError):
            ok = False
        out.append((text, ok))
    return out
