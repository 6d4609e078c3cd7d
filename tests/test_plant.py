"""The engine in closed loop with the plant: seed 004 §1.5.3 procedures and the failure cases.

Each procedure runs once per session (a few seconds each) with the real engine (compiled, or the
twin under ``BMSBANK_PURE=1``); the tests assert what a user's cells and inverter would see.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bmsbank import plant

CELL_DANGER = 3.60  # V: no cell may get here, even with a 50 mV initial imbalance
RIPPLE_MAX_MV = 50.0


@pytest.fixture(scope="module")
def runs():
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = plant.run(name, trace=True)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(plant.PROCEDURES))
def test_no_cell_in_danger_and_no_bms_trip(runs, name):
    m = runs(name)
    assert m["max_cell_voltage"] < CELL_DANGER and not m["bms_tripped"], m


@pytest.mark.parametrize("name", ["feed-in", "imbalance", "excess-pv", "series"])
def test_full_charge_ends_in_a_steady_float(runs, name):
    m = runs(name)
    assert m["states_seen"] == ["bulk", "absorption", "float"] and m["final_state"] == "float"
    assert m["cvl_ripple_mv"] <= RIPPLE_MAX_MV


@pytest.mark.parametrize("name", ["feed-in", "imbalance", "excess-pv", "pack-lost", "all-lost"])
def test_ccl_is_never_zero_when_the_bank_is_merely_full(runs, name):
    assert runs(name)["ccl_zero_while_full_s"] == 0


def test_feed_in_sells_the_excess_pv_when_full(runs):
    m = runs("feed-in")
    assert m["feed_in_wh"] > 5000.0  # solar kept working for the grid once the bank was full


def test_imbalance_holds_the_high_cell_at_the_limit_without_oscillating(runs):
    m = runs("imbalance")
    assert m["max_cell_voltage"] <= 3.46
    absorption = [row for row in m["trace"] if row["state"] == "absorption"]
    settled = [row["cvl"] for row in absorption[10:]]  # after the first cut has settled
    assert settled and (max(settled) - min(settled)) * 1000.0 <= RIPPLE_MAX_MV
    assert max(row["max_cell"] for row in absorption) <= 3.46


def test_excess_pv_lets_the_bus_rise_without_harm(runs):
    m = runs("excess-pv")
    assert m["bus_over_cvl_max_v"] > 0.35  # the MPPT really pushed the bus to CVL + 0.4 V
    assert m["curtailed_wh"] > 0.0


def test_no_charge_below_the_charge_window(runs):
    m = runs("cold-charge")
    assert m["charge_below_window_ah"] == 0.0
    assert m["final_soc"] > 70.0  # and it did charge once the packs were warm enough


def test_a_lost_pack_caps_cvl_and_rejoins_without_a_drop(runs):
    m = runs("pack-lost")
    assert not m["cvl_rose_while_lost"]
    assert m["max_cvl_while_lost"] <= m["float_cap"] + 1e-9
    assert m["rejoined"] and m["rejoin_cvl_drop"] == 0.0


def test_all_packs_lost_is_the_safe_state_within_stale_after_plus_one_second(runs):
    m = runs("all-lost")
    assert m["safe_after_s"] <= m["stale_after"] + 1.0
    assert m["recovered"]


def test_runs_are_deterministic():
    assert plant.run("feed-in", duration=300) == plant.run("feed-in", duration=300)
    assert plant.run("feed-in", duration=300) != plant.run("feed-in", seed=2, duration=300)


def test_simulate_cli_rejects_an_unknown_procedure():
    out = subprocess.run(
        [sys.executable, "-m", "bmsbank.cli", "simulate", "nosuch"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "one of feed-in" in out.stderr


def test_cell_health_learns_every_cell_of_a_week_and_flags_only_the_weak(runs):
    """Issue 16: a compressed week of daily cycles with load steps, three weak cells."""
    m = runs("cell-health")
    assert m["states_seen"].count("absorption") >= 6  # a charge through the knee each day
    assert m["cell_status"] == {"sim:1": "ok", "sim:2": "ok"}
    assert m["resistance_estimated"] == 32 and m["resistance_error_max_pct"] <= 15.0
    assert m["capacity_estimated"] == 32 and m["capacity_error_max_pct"] <= 3.0
    assert m["weak_cells"] == ["sim:1 C5", "sim:2 C3", "sim:2 C11"]  # the plant's truth
    assert m["missed"] == [] and m["false_flags"] == []


def test_cell_health_without_current_steps_says_not_enough_data():
    """Steady PV, steady loads: no step ever, so no resistance, hence no capacity either."""
    m = plant.run("cell-health", duration=3 * 3600, burst_load_w=0.0, day_s=0, pv_w=3000.0)
    assert m["cell_status"] == {"sim:1": "not enough data", "sim:2": "not enough data"}
    assert m["resistance_estimated"] == 0 and m["capacity_estimated"] == 0
    assert m["flagged_cells"] == []
