"""Nothing implausible reaches the limits; one corrupted reading moves no limit (issue 11).

The checks run in the arbiter's registry (and the poller's, see test_poller): plausibility per
pack, sequence and time per poller run, and confirmation of cuts.
"""

from __future__ import annotations

import pytest

from bmsbank.plausibility import PackBounds, default_bounds, implausible
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.services.arbiter.registry import PackRegistry
from tests.factories import state_msg

CELLS = [3.30] * 16


def engine(**bank) -> BankEngine:
    """Two 16-cell packs in parallel, default confirmation (2 states), no hold after a cut."""
    packs = {pid: {"cells": 16, "capacity": 100.0} for pid in ("a:1", "a:2")}
    return BankEngine.from_mapping({"stale_after": 10.0, "packs": packs, **bank}, "test")


class Feed:
    """Both packs report once a second (a poller's sequence per port), the engine ticks."""

    def __init__(self, e: BankEngine) -> None:
        self.e, self.t, self.seq = e, 0.0, 0

    def cycle(self, a1: dict | None = None, a2: dict | None = None) -> dict:
        self.t += 1.0
        for address, over in ((1, a1), (2, a2)):
            self.seq += 1
            fields = {"cells": CELLS, **(over or {})}
            self.e.accept(state_msg("a", address, seq=self.seq, **fields), self.t)
        return self.e.tick(self.t)


def steady(e: BankEngine) -> tuple[Feed, dict]:
    feed = Feed(e)
    out = None
    for _ in range(3):
        out = feed.cycle()
    assert out is not None and out["ccl"] > 0 and out["dcl"] > 0
    return feed, out


# -- plausibility per pack ---------------------------------------------------------------------
B = PackBounds(cells=0, cell_low=1.0, cell_high=4.5, max_current=350.0)  # cells as reported


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"cells": [3.3] * 15 + [5.9]}, "cells"),  # the 5.9 V cell that cut CCL to 0
        ({"cells": [3.3] * 15 + [0.0]}, "cells"),  # the 0 V cell that cut DCL to 0
        ({"cells": [3.9] * 4, "voltage": 655.35}, "voltage"),  # `bmsbank decode jbd` took this
        ({"voltage": 526.0}, "voltage"),
        ({"voltage": 40.0}, "voltage"),  # 16 cells of 3.3 V are 52.8 V
        ({"current": 10004.0}, "current"),
        ({"current": -2000.0}, "current"),
        ({"bms_cvl": 500.0}, "bms_cvl"),
    ],
)
def test_an_implausible_reading_is_named(over, field):
    why = implausible(state_msg("a", 1, **over), B)
    assert why is not None and why.startswith(f"{field}:"), why


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"cells": [3.65] * 15 + [3.9], "voltage": 58.6},  # over-charged, but a real cell
        {"cells": [2.5] * 15 + [1.8], "voltage": 39.3},  # over-discharged, but a real cell
        {"voltage": 52.0},  # wiring drop under load
        {"current": -340.0},  # an inverter surge beyond the 100 A asked for
        {"discharge_fet": False, "voltage": 0.4},  # a BMS measuring at its terminals, FET off
    ],
)
def test_real_readings_even_bad_ones_are_plausible(over):
    assert implausible(state_msg("a", 1, **over), B) is None


def test_a_pack_reporting_another_number_of_cells_than_configured_is_refused():
    b = PackBounds(cells=16, cell_low=1.0, cell_high=4.5, max_current=350.0)
    assert implausible(state_msg("a", 1), b) is None
    why = implausible(state_msg("a", 1, cells=[3.3] * 15), b)
    assert why == "cells: 15 reported, 16 configured"


def test_default_bounds_follow_the_bank_defaults():
    b = default_bounds()
    assert (b.cell_low, b.cell_high) == (1.0, 4.5)
    assert b.max_current == 3 * 100.0 + 50.0  # max_discharge_current's default is 100 A


def test_an_implausible_state_reaches_no_limit_and_is_counted_for_its_pack():
    e = engine()
    feed, before = steady(e)
    for bad in ({"cells": [3.3] * 15 + [5.9]}, {"cells": [3.3] * 15 + [0.0]},
                {"current": 2500.0}, {"voltage": 526.0}):  # fmt: skip
        for over in (bad, bad, {}):  # not even repeated: implausible is never confirmed
            out = feed.cycle(a1=over)
            assert (out["cvl"], out["ccl"], out["dcl"]) == (
                before["cvl"], before["ccl"], before["dcl"])  # fmt: skip
    entry = e.registry.packs["a:1"]
    assert entry.rejected == {"cells": 4, "current": 2, "voltage": 2}
    assert entry.last_rejection.startswith("voltage: 526 V")
    assert e.registry.packs["a:2"].rejected == {}


def test_a_pack_sending_only_implausible_states_goes_offline():
    e = engine()
    feed, _ = steady(e)
    for _ in range(11):
        out = feed.cycle(a1={"cells": [3.3] * 15 + [5.9]})
    assert out["online"] == 1 and out["offline"] == 1


# -- confirmation of cuts ----------------------------------------------------------------------
CUTS = {
    "a high cell": {"cells": [3.3] * 15 + [3.60]},  # CCL 0 by the cell table, over-voltage
    "a low cell": {"cells": [3.3] * 15 + [2.75]},  # DCL 0 by the cell table
    "a cold sensor": {"temperatures": [-30.0, 25.0]},  # outside both windows
    "the charge FET off": {"charge_fet": False},
    "a BMS limit of 0 A": {"bms_dcl": 0.0},
    "a hot MOSFET": {"mosfet_temperature": 95.0},
}


@pytest.mark.parametrize("over", CUTS.values(), ids=CUTS.keys())
def test_one_corrupted_reading_moves_no_limit(over):
    e = engine()
    feed, before = steady(e)
    out = feed.cycle(a1=over)
    assert (out["cvl"], out["ccl"], out["dcl"]) == (before["cvl"], before["ccl"], before["dcl"])
    after = feed.cycle()  # the next reading is normal: the first was a bad one
    for _ in range(3):
        assert (after["cvl"], after["ccl"], after["dcl"]) == (
            before["cvl"], before["ccl"], before["dcl"])  # fmt: skip
        after = feed.cycle()
    assert e.registry.packs["a:1"].rejected == {"unconfirmed": 1}
    assert e.registry.counters.rejected == 1


@pytest.mark.parametrize("over", CUTS.values(), ids=CUTS.keys())
def test_a_sustained_fault_acts_at_its_second_reading(over):
    e = engine()
    feed, before = steady(e)
    first = feed.cycle(a1=over)
    second = feed.cycle(a1=over)  # within two poll intervals of the fault
    assert (first["ccl"], first["dcl"]) == (before["ccl"], before["dcl"])
    assert second["ccl"] < before["ccl"] or second["dcl"] < before["dcl"]
    assert e.registry.packs["a:1"].rejected == {}


def test_a_cut_with_the_bms_own_protection_flag_acts_at_once():
    e = engine()
    feed, before = steady(e)
    out = feed.cycle(a1={"cells": [3.3] * 15 + [3.70],
                         "alarms": {"high_cell_voltage": 2}})  # fmt: skip
    assert out["ccl"] == 0.0 and before["ccl"] > 0
    e2 = engine()
    feed2, _ = steady(e2)
    out = feed2.cycle(
        a1={"cells": [3.3] * 15 + [3.70], "alarms": {"low_cell_voltage": 2}}
    )  # the wrong flag: waits
    assert out["ccl"] == before["ccl"]


def test_confirm_states_one_acts_at_once_and_three_waits_for_three():
    for count, acting in ((1, 1), (3, 3)):
        e = engine(confirm_states=count)
        feed, before = steady(e)
        for n in range(1, 4):
            out = feed.cycle(a1=CUTS["a low cell"])
            assert (out["dcl"] < before["dcl"]) == (n >= acting), (count, n)


def test_a_fault_that_changes_its_face_is_still_confirmed():
    """Two readings in a row that each cut (a cell, then a FET): the second acts."""
    e = engine()
    feed, before = steady(e)
    feed.cycle(a1=CUTS["a low cell"])
    out = feed.cycle(a1=CUTS["the charge FET off"])
    assert out["ccl"] == 0.0


def test_a_first_state_that_cuts_to_nothing_waits_for_the_second():
    e = engine()
    feed = Feed(e)
    feed.cycle(a1=CUTS["a low cell"])
    assert e.registry.packs["a:1"].state is None  # held
    feed.cycle(a1=CUTS["a low cell"])
    assert e.registry.packs["a:1"].state["min_cell_voltage"] == 2.75


# -- sequence and time -------------------------------------------------------------------------
def registry(**kw) -> PackRegistry:
    return PackRegistry(["a:1", "a:2"], 10.0, **kw)


def test_a_replayed_or_repeated_state_is_rejected_within_a_poller_run():
    r = registry(wall=None)
    assert r.accept(state_msg("a", 1, seq=5), 1.0) is not None
    assert r.accept(state_msg("a", 1, seq=5), 2.0) is None  # a repeat
    assert r.accept(state_msg("a", 1, seq=3), 2.0) is None  # an earlier one
    assert r.last_rejection.startswith("seq: 3 is not after 5")
    assert r.accept(state_msg("a", 1, seq=6), 2.0) is not None
    assert r.packs["a:1"].rejected == {"seq": 2}


def test_a_restarted_poller_starts_again_from_zero_and_old_runs_stay_refused():
    r = registry(wall=None)
    assert r.accept(state_msg("a", 1, seq=40), 1.0) is not None
    restarted = state_msg("a", 1, seq=0)
    restarted["epoch"] += 1
    assert r.accept(restarted, 2.0) is not None
    assert r.accept(state_msg("a", 1, seq=40), 3.0) is None  # a replay of the old run


def test_one_huge_sequence_number_poisons_nothing():
    r = registry(wall=None)
    assert r.accept(state_msg("a", 1, seq=1), 1.0) is not None
    huge = state_msg("a", 1, seq=2**63 - 1)
    huge["link"] = {"ok": 2}
    assert r.accept(huge, 2.0) is None
    assert r.last_rejection.startswith("seq:") and "jumps" in r.last_rejection
    assert r.accept(state_msg("a", 1, seq=2), 3.0) is not None  # the real poller goes on
    assert r.counters.lost == 0
    assert r.accept(state_msg("a", 1, seq=6), 4.0) is not None
    assert r.counters.lost == 3  # 3, 4 and 5 never came


def test_lost_counts_gaps_of_a_port_whose_packs_share_its_sequence():
    r = registry(wall=None)
    for seq, address in ((1, 1), (2, 2), (3, 1), (5, 1), (6, 2)):
        assert r.accept(state_msg("a", address, seq=seq), float(seq)) is not None
    assert r.counters.lost == 1  # seq 4


def at(wall: float, seq: int) -> dict:
    """A state read at unix time ``wall`` by a poller run that started a minute before."""
    msg = state_msg("a", 1, seq=seq)
    msg["time"], msg["epoch"] = wall, int((wall - 60.0) * 1e6)
    return msg


def test_a_stale_or_future_reading_is_rejected():
    now = 1_000_000.0
    r = registry(wall=lambda: now)
    assert r.accept(at(now - 3600, 1), 1.0) is None
    assert r.last_rejection.startswith("time: a reading 3600 s old")
    assert r.accept(at(now + 600, 2), 1.0) is None and "ahead" in r.last_rejection
    assert r.accept(at(now - 1.0, 3), 1.0) is not None


def test_a_capacity_far_from_the_configured_one_is_refused_and_a_jump_waits():
    b = PackBounds(cells=0, cell_low=1.0, cell_high=4.5, max_current=350.0, capacity=100.0)
    assert implausible(state_msg("a", 1, capacity=280.0, remaining=100.0), b) is None
    why = implausible(state_msg("a", 1, capacity=60000.0, remaining=100.0), b)
    assert why is not None and why.startswith("capacity: 60000 Ah")
    assert implausible(state_msg("a", 1, capacity=6000.0, remaining=100.0), B).startswith(
        "capacity:")  # fmt: skip (nothing configured: no pack holds 6000 Ah)
    e = engine()
    feed, before = steady(e)
    feed.cycle(a1={"capacity": 250.0})  # would move the share of every other pack
    feed.cycle()
    assert e.registry.packs["a:1"].rejected == {"unconfirmed": 1}


def test_a_pack_returning_with_a_cut_stays_offline_until_it_is_confirmed():
    """Its reading from before it went away must not pass for fresh while the new one waits."""
    e = engine()
    feed, _ = steady(e)
    for _ in range(11):
        out = feed.cycle(a1={"cells": [3.3] * 15 + [5.9]})  # implausible: a:1 goes offline
    assert out["offline"] == 1
    out = feed.cycle(a1=CUTS["a low cell"])  # back, with a cut: held
    assert out["offline"] == 1 and e.registry.packs["a:1"].online is False
    out = feed.cycle(a1=CUTS["a low cell"])  # confirmed: online with its new reading
    assert out["online"] == 2 and e.registry.packs["a:1"].state["min_cell_voltage"] == 2.75


def test_a_new_poller_run_must_be_young_enough_for_its_sequence():
    """A restarted poller counts from 0 at its epoch: a run that claims more is no restart."""
    now = 1_000_000.0
    r = registry(wall=lambda: now)
    fresh = at(now, 5)
    fresh["epoch"] = int((now - 2.0) * 1e6)  # started 2 s ago, 5 states sent: fine
    assert r.accept(fresh, 1.0) is not None
    forged = at(now, 2**63 - 1)
    forged["epoch"], forged["link"] = int((now - 2.0) * 1e6) + 1, {"ok": 1}
    assert r.accept(forged, 1.0) is None and "more than a poller run of 2 s" in r.last_rejection
    ahead = at(now, 0)
    ahead["epoch"] = int((now + 600) * 1e6)
    assert r.accept(ahead, 1.0) is None and r.last_rejection.startswith("epoch:")


def test_a_state_of_another_family_than_its_port_is_not_that_pack():
    b = PackBounds(cells=0, cell_low=1.0, cell_high=4.5, max_current=350.0, bms="jbd")
    assert implausible(state_msg("a", 1), b) is None  # the factory's states are jbd
    msg = state_msg("a", 1)
    msg["bms"] = "daly"
    assert implausible(msg, b) == "bms: 'daly' reported, 'jbd' configured for its port"
