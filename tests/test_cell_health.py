"""Cell health: resistance at current steps, capacity over the knee, ranks, warnings, bank message.

Each test builds states as a BMS would send them (cells to the millivolt, current to 10 mA) from
cells of known resistance and capacity, so the numbers the estimator gives can be checked
against the truth. The week in the plant (the issue's "done when") is in tests/test_plant.py.
"""

from __future__ import annotations

import pytest

from bmsbank.persisted import CorruptFile
from bmsbank.plant.model import ocv, soc_at_ocv
from bmsbank.schema import validate_bank
from bmsbank.services.arbiter import cell_health, cell_keep
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.cell_health import CellHealth, PackCells, Settings, r25_factor
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.state import make_state

N = 8
R_OHM = [1.0e-3] * N  # every cell 1 mΩ at 25 °C ...
R_OHM[2] = 1.8e-3  # ... but cell 3


def state(
    t: float,
    amps: float,
    cells: list[float],
    temp: float = 25.0,
    port: str = "a",
    wall: float | None = None,
    seq: int | None = None,
    **over,
) -> dict:
    fields = {
        "voltage": round(sum(cells), 2), "current": round(amps, 2), "soc": 60.0,
        "capacity": 100.0, "remaining": 60.0, "cells": [round(v, 3) for v in cells],
        "balancing": [0] * len(cells), "temperatures": [temp, temp], "charge_fet": True,
        "discharge_fet": True, "alarms": {}, **over,
    }  # fmt: skip
    wall = 1.7e9 + t if wall is None else wall
    seq = int(t) if seq is None else seq
    return make_state(port, 1, "jbd", seq, fields, {"ok": 1}, mono=t, wall=wall)


def terminal(emf: list[float], amps: float, temp: float = 25.0) -> list[float]:
    return [e + amps * r * r25_factor(temp) for e, r in zip(emf, R_OHM, strict=True)]


def stepping(pack: PackCells, steps: int, temp: float = 25.0, t0: float = 0.0) -> float:
    """Load steps 0 A <-> -40 A every 2 s on flat-region cells; returns the time reached."""
    emf = [3.30] * N
    t = t0
    for k in range(2 * steps):
        amps = -40.0 if k % 2 else 0.0
        pack.observe(state(t, amps, terminal(emf, amps, temp), temp))
        pack.observe(state(t + 1.0, amps, terminal(emf, amps, temp), temp))
        t += 2.0
    return t


def fresh(**settings) -> PackCells:
    return PackCells("a:1", 100.0, Settings(**settings))


def test_resistance_of_every_cell_from_load_steps():
    pack = fresh()
    stepping(pack, 10)
    s = pack.summary()
    assert s["status"] == "ok" and s["steps"] == 19  # 0->-40 and back, the first has no pair
    assert s["resistance"] == pytest.approx([1000 * r for r in R_OHM], rel=0.03)
    assert s["resistance_median"] == pytest.approx(1.0, rel=0.03)
    assert s["warnings"] == ["a:1 cell 3: resistance 1.8× the pack median (19 steps)"]


def test_resistance_is_normalised_to_25_degrees():
    cold, warm = fresh(), fresh()
    stepping(cold, 10, temp=5.0)  # 1.6 times the resistance at 25 °C
    stepping(warm, 10, temp=40.0)  # 0.85 times
    for pack in (cold, warm):
        assert pack.summary()["resistance"] == pytest.approx([1000 * r for r in R_OHM], rel=0.04)


def test_no_current_step_says_not_enough_data_never_a_number():
    pack = fresh()
    emf = [3.30] * N
    for t in range(3600):  # an hour at a steady 20 A charge: the cells creep up, no step
        emf = [e + 20.0 / 3600 / 100.0 * 0.01 for e in emf]
        pack.observe(state(float(t), 20.0, terminal(emf, 20.0)))
    s = pack.summary()
    assert s["status"] == "not enough data" and s["steps"] == 0 and s["charges"] == 0
    assert s["resistance"] == [None] * N and s["capacity"] == [None] * N
    assert s["resistance_median"] is None and s["warnings"] == []


def test_too_few_steps_give_no_number_yet():
    pack = fresh()
    stepping(pack, cell_health.MIN_STEPS // 2 - 1)
    assert pack.summary()["resistance"] == [None] * N


def test_steps_below_the_threshold_or_across_a_gap_are_not_used():
    small = fresh(step_a=50.0)  # the 40 A steps are below it
    stepping(small, 10)
    assert small.summary()["steps"] == 0
    gappy = fresh()
    emf = [3.30] * N
    for k in range(20):  # each step spans 5 s between two states: no pair
        amps = -40.0 if k % 2 else 0.0
        gappy.observe(state(5.0 * k, amps, terminal(emf, amps)))
    assert gappy.summary()["steps"] == 0


def test_a_balancing_cell_is_left_out_and_a_backwards_event_is_dropped():
    pack = fresh()
    emf = [3.30] * N
    t = 0.0
    for k in range(20):
        amps = -40.0 if k % 2 else 0.0
        balancing = [1] + [0] * (N - 1)  # cell 1 bleeds: its current is not the pack's
        pack.observe(state(t, amps, terminal(emf, amps), balancing=balancing))
        t += 1.0
    assert pack.summary()["resistance"][0] is None
    assert pack.summary()["resistance"][1] == pytest.approx(1.0, rel=0.03)
    before = pack.dropped
    # voltages that stay, then move against the current (readings of other moments): dropped
    pack.observe(state(t, 0.0, terminal(emf, -40.0)))
    pack.observe(state(t + 1.0, -40.0, terminal(emf, 0.0)))
    assert pack.dropped == before + 2
    assert pack.summary()["resistance"][1] == pytest.approx(1.0, rel=0.03)


def test_a_current_of_the_wrong_sign_is_named_not_measured():
    pack = fresh()
    emf = [3.30] * N
    for k in range(20):  # the BMS reports discharge as +40 A
        amps = -40.0 if k % 2 else 0.0
        pack.observe(state(float(k), -amps, terminal(emf, amps)))
    s = pack.summary()
    assert s["status"] == "not enough data" and s["resistance"] == [None] * N
    assert s["warnings"] == [
        "a:1: at each of 19 current steps the cells' voltages moved against the current: is its "
        "sign inverted (the family's invert_current)?"
    ]
    assert pack.flagged() == set()


def test_outliers_do_not_move_the_estimate():
    pack = fresh()
    t = stepping(pack, 10)
    emf = [3.30] * N
    for _ in range(3):  # three events where cell 2 reads 30 mV off
        bad = terminal(emf, -40.0)
        bad[1] += 0.030
        pack.observe(state(t, 0.0, terminal(emf, 0.0)))
        pack.observe(state(t + 1.0, -40.0, bad))
        t += 2.0
    assert pack.summary()["resistance"][1] == pytest.approx(1.0, rel=0.03)


def charge_through_knee(pack: PackCells, capacity_ah: list[float], t0: float, amps: float = 30.0):
    """Top-balanced cells charged from 80 % through the knee, a step now and then."""
    missing = 0.2 * 100.0
    charge = [c - missing for c in capacity_ah]
    t = t0
    while min(ch / c for ch, c in zip(charge, capacity_ah, strict=True)) < 0.995:
        now_amps = amps if int(t) % 60 else 0.0  # a step every minute keeps R learnt
        emf = [ocv(100.0 * ch / c) for ch, c in zip(charge, capacity_ah, strict=True)]
        pack.observe(state(t, now_amps, terminal(emf, now_amps)))
        charge = [ch + now_amps / 3600.0 for ch in charge]
        t += 1.0
    emf = [ocv(60.0)] * N  # discharged overnight (no states: a gap)
    for k in range(4):
        pack.observe(state(t + 3600.0 + k, -20.0, terminal(emf, -20.0)))
    return t + 3604.0


def test_capacity_from_the_knee_against_the_median_cell():
    pack = fresh()
    t = stepping(pack, 10)
    capacity = [100.0] * N
    capacity[5] = 88.0  # cell 6 has 12 % less
    for _ in range(cell_health.MIN_CHARGES):
        t = charge_through_knee(pack, capacity, t)
    s = pack.summary()
    assert s["charges"] == cell_health.MIN_CHARGES
    assert s["capacity"][5] == pytest.approx(88.0, abs=2.0)
    assert [c for k, c in enumerate(s["capacity"]) if k != 5] == pytest.approx([100.0] * 7, abs=2.0)
    assert "a:1 cell 6: ~12 % less capacity than the pack median (3 charges)" in s["warnings"]


def test_the_knee_needs_each_cells_resistance_first():
    pack = fresh()
    charge_through_knee(pack, [100.0] * N, 0.0, amps=30.0)
    assert pack.charges == 0  # the steps of this charge alone were too few before the knee
    assert soc_at_ocv(cell_health.KNEE_LOW_V) > 90.0  # the knee is where LiFePO4 is nearly full


def test_first_high_repeated_with_a_lead_is_named():
    pack = fresh()
    base = [3.30] * N
    t = 0.0
    for _ in range(cell_health.RANK_WINDOW):
        pack.observe(state(t, 10.0, base))  # below the mark: armed
        top = [3.42] * N
        top[4] = 3.46  # cell 5 gets there first, 40 mV ahead
        pack.observe(state(t + 1.0, 10.0, top))
        t += 2.0
    warnings = pack.summary()["warnings"]
    assert warnings == ["a:1 cell 5: reaches 3.45 V first in 10 of the last 10 charges"]
    close = fresh()  # first by 5 mV: a healthy pack's spread, nothing to say
    for k in range(cell_health.RANK_WINDOW):
        close.observe(state(2.0 * k, 10.0, base))
        top = [3.45] * N
        top[4] = 3.455
        close.observe(state(2.0 * k + 1.0, 10.0, top))
    assert close.summary()["warnings"] == []


def test_a_new_cell_count_starts_over():
    pack = fresh()
    stepping(pack, 10)
    pack.observe(state(1000.0, 0.0, [3.3] * 4))
    s = pack.summary()
    assert s["status"] == "not enough data" and len(s["resistance"]) == 4


def test_summary_is_the_same_object_until_it_changes_and_rebuilt_at_most_every_10_s():
    health = CellHealth({"a:1": 100.0, "b:1": 0.0}, Settings())
    assert health.summary("a:1", 0.0) is None and health.summary("x:9", 0.0) is None
    health.observe(state(0.0, 0.0, [3.3] * N))
    first = health.summary("a:1", 0.0)
    assert health.summary("a:1", 1.0) is first
    stepping(health.packs["a:1"], 10, t0=10.0)
    assert health.summary("a:1", 5.0) is first  # changed, but rebuilt only 10 s after
    later = health.summary("a:1", 10.0)
    assert later is not first and later["status"] == "ok"


def test_the_bank_message_carries_it_and_validates():
    engine = BankEngine.from_mapping(
        {"strings": [["a:1"]], "stale_after": 10.0, "confirm_states": 1, "interval": 1.0}, "t",
    )  # fmt: skip
    computer = BankComputer(engine, "test", 0.0)
    emf = [3.30] * N
    for k in range(40):
        amps = -40.0 if k % 2 else 0.0
        assert engine.accept(state(float(k), amps, terminal(emf, amps)), float(k))
    bank = validate_bank(computer.compute(40.0))
    health = bank["packs"][0]["cell_health"]
    assert health["status"] == "ok" and health["resistance"][2] == pytest.approx(1.8, rel=0.03)
    assert health["warnings"] == ["a:1 cell 3: resistance 1.8× the pack median (39 steps)"]
    assert bank["cvl"] == pytest.approx(8 * 3.45)  # the limits do not hear of it


def test_switched_off_it_learns_nothing_and_says_nothing():
    engine = BankEngine.from_mapping({"strings": [["a:1"]], "cell_health": False}, "t")
    assert engine.cells is None
    assert engine.accept(state(0.0, 0.0, [3.3] * N), 0.0)
    assert BankComputer(engine, "t", 0.0).compute(0.0)["packs"][0]["cell_health"] is None


def test_snapshot_and_restore_give_back_the_same_learning():
    health = CellHealth({"a:1": 100.0}, Settings())
    stepping(health.packs["a:1"], 10)
    again = CellHealth({"a:1": 100.0, "gone:1": 0.0}, Settings())
    assert cell_keep.restore(again, {**cell_keep.snapshot(health), "other:7": {}}) == ["a:1"]
    assert again.packs["a:1"].summary() == health.packs["a:1"].summary()
    stepping(again.packs["a:1"], 2, t0=1000.0)  # and goes on learning with its own thresholds
    assert again.packs["a:1"].steps == health.packs["a:1"].steps + 3  # no pair for the first


BAD_SNAPSHOTS = {
    "cells: zero": {"cells": 0},
    "r: a cell missing": {"r": [[1000]] * (N - 1)},
    "r: negative": {"r": [[-5]] * N},
    "r: a text": {"r": [["1000"]] * N},
    "cap: too many": {"cap": [[100.0] * 11] * N},
    "high: not a cell": {"high": [N]},
    "high: a fraction": {"high": [1.5]},
    "steps: NaN-like": {"steps": 1e300},
}


@pytest.mark.parametrize("bad", BAD_SNAPSHOTS.values(), ids=BAD_SNAPSHOTS.keys())
def test_a_bad_snapshot_is_refused_whole_and_names_its_field(bad):
    health = CellHealth({"a:1": 100.0}, Settings())
    stepping(health.packs["a:1"], 10)
    snap = cell_keep.snapshot(health)
    fresh_health = CellHealth({"a:1": 100.0}, Settings())
    with pytest.raises(CorruptFile, match=r"^a:1: " + list(bad)[0]):
        cell_keep.restore(fresh_health, {"a:1": {**snap["a:1"], **bad}})
    assert fresh_health.packs["a:1"].n == 0  # nothing taken


def run_arbiter(path, feed: bool, caplog) -> dict | None:
    """An arbiter on state file ``path``: fed load steps or not; its pack p:1's cell health."""
    import time

    import zmq

    from bmsbank.schema import TOPIC_STATE, pack
    from bmsbank.services.arbiter.service import Arbiter
    from tests.test_persisted_files import arbiter_config

    ctx = zmq.Context()
    arb = Arbiter(arbiter_config(path, strings=[["p:1"]]), ctx)
    try:
        emf, t0 = [3.30] * N, time.monotonic() - 100.0
        for k in range(40 if feed else 1):
            amps = -40.0 if k % 2 else 0.0
            msg = state(t0 + k, amps, terminal(emf, amps), port="p", wall=time.time(), seq=k)
            arb.handle([TOPIC_STATE, pack(msg)], time.monotonic())
        bank = arb.publish_bank(time.monotonic() + 20.0)  # rebuilt: 10 s after the last
        return bank["packs"][0]["cell_health"]
    finally:
        arb.close()
        ctx.term()


def test_the_arbiter_keeps_what_it_learnt_across_a_restart(tmp_path, caplog):
    path = tmp_path / "state.json"
    learnt = run_arbiter(path, True, caplog)
    assert learnt is not None and learnt["status"] == "ok"
    assert (tmp_path / "state.cells.json").is_file()
    assert run_arbiter(path, False, caplog) == learnt  # one state: nothing new, all kept


@pytest.mark.parametrize("content", ["{", '{"packs": {"p:1": {"cells": -1}}}', '{"packs": 3}'])
def test_a_corrupt_cells_file_is_logged_once_and_learning_starts_afresh(tmp_path, caplog, content):
    import logging

    (tmp_path / "state.cells.json").write_text(content)
    with caplog.at_level(logging.WARNING):
        health = run_arbiter(tmp_path / "state.json", False, caplog)
    assert health is not None and health["status"] == "not enough data"
    said = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.endswith("persist")]  # fmt: skip
    assert len(said) == 1 and "cell health file" in said[0] and "\n" not in said[0], said
