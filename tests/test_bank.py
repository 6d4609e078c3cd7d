"""The arbiter's bank: aggregation, limits, freshness, blocking and rejected input."""

from __future__ import annotations

import math

import pytest

from bmsbank.schema import validate_bank
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from tests.factories import state_msg

PACKS = ["a:1", "b:1", "c:1"]


def setup(**bank):
    engine = BankEngine.from_mapping(
        {"stale_after": 10.0, "share": "count", "strings": [[p] for p in PACKS],
         "confirm_states": 1, **bank}, "test",  # cuts act at once: the bank message under test
    )
    return engine, BankComputer(engine, "test", started=0.0)


def feed(engine, now, **over):
    for pid in PACKS:
        port, addr = pid.split(":")
        msg = state_msg(port, int(addr), seq=int(now), **over.get(pid, {}))
        assert engine.accept(msg, now), pid


def bank_at(engine, computer, now):
    return validate_bank(computer.compute(now))


def test_parallel_bank_values_and_limits():
    engine, computer = setup()
    feed(
        engine,
        1.0,
        **{
            "a:1": {"current": 10.0, "soc": 40.0, "capacity": 100.0, "remaining": 40.0},
            "b:1": {"current": -2.0, "soc": 80.0, "capacity": 300.0, "remaining": 240.0},
            "c:1": {"cells": [3.30] * 15 + [3.42]},
        },
    )
    bank = bank_at(engine, computer, 1.5)
    assert bank["online"] == 3 and bank["offline"] == 0
    assert bank["current"] == pytest.approx(13.0)
    assert bank["soc"] == pytest.approx((40 * 100 + 80 * 300 + 60 * 100) / 500)
    assert bank["capacity"] == 500.0 and bank["installed_capacity"] == 500.0
    assert bank["cvl"] == pytest.approx(16 * 3.45)
    assert bank["low_voltage"] == pytest.approx(16 * 2.90)
    # highest cell 3.42 V: 80 % of 50 A on c:1; shared by count, the bank takes 3 x 40 A
    assert bank["ccl"] == pytest.approx(120.0)
    assert bank["dcl"] == pytest.approx(300.0)
    assert bank["max_cell_id"] == "c:1 C16" and bank["max_cell_voltage"] == pytest.approx(3.42)
    assert bank["reasons"]["ccl"] == (
        "c:1 cell 16 at 3.420 V: 40.0 A; string share 33%: bank 120.0 A"
    )
    c = bank["packs"][2]
    assert c["ccl"] == pytest.approx(40.0) and c["ccl_reason"].startswith("c:1 cell 16")
    assert bank["charge_state"] == "bulk" and bank["topology"] == [["a:1"], ["b:1"], ["c:1"]]
    assert bank["allow_charge"] and bank["allow_discharge"]
    assert all(level == 0 for level in bank["alarms"].values())


def test_low_cell_reduces_dcl():
    engine, computer = setup()
    feed(engine, 1.0, **{"b:1": {"cells": [2.88] + [3.2] * 15}})
    bank = bank_at(engine, computer, 1.0)
    assert bank["dcl"] == pytest.approx(0.08 * 100.0 * 3)  # 2.88 V: 8 % of 100 A, by 3 packs
    assert bank["min_cell_id"] == "b:1 C1"


def test_a_blocking_pack_blocks_the_bank():
    engine, computer = setup()
    feed(engine, 1.0, **{"a:1": {"charge_fet": False}, "c:1": {"alarms": {"low_cell_voltage": 2}}})
    bank = bank_at(engine, computer, 1.0)
    assert bank["ccl"] == 0.0 and bank["dcl"] == 0.0
    assert bank["blocking_charge"] == 1 and bank["blocking_discharge"] == 1
    assert bank["reasons"]["ccl"] == "a:1 charge FET off: 0 A"
    assert bank["reasons"]["dcl"] == "c:1 alarm low cell voltage: 0 A"
    assert bank["packs"][0]["blocking_charge"] == "a:1 charge FET off: 0 A"
    assert bank["alarms"]["low_cell_voltage"] == 2
    assert not bank["allow_charge"] and not bank["allow_discharge"]


def test_stale_pack_goes_offline_and_limits_follow_the_others():
    engine, computer = setup()
    feed(engine, 1.0)
    for now in (5.0, 10.0):  # a and b keep reporting, c is silent from t = 1 s
        for pid in ("a", "b"):
            engine.accept(state_msg(pid, 1, seq=int(now)), now)
    bank = bank_at(engine, computer, 10.9)
    assert bank["online"] == 3  # 9.9 s of silence: still within stale_after
    bank = bank_at(engine, computer, 11.1)
    assert bank["online"] == 2 and bank["offline"] == 1
    assert bank["ccl"] == pytest.approx(100.0) and bank["dcl"] == pytest.approx(200.0)
    assert bank["alarms"]["bms_cable"] == 2
    offline = [p for p in bank["packs"] if not p["online"]]
    assert [p["id"] for p in offline] == ["c:1"] and offline[0]["age"] == pytest.approx(10.1)
    # its next good state brings it back at once
    engine.accept(state_msg("c", 1, seq=11), 11.5)
    bank = bank_at(engine, computer, 11.6)
    assert bank["online"] == 3 and bank["alarms"]["bms_cable"] == 0


def test_no_pack_online_is_the_safe_state():
    engine, computer = setup()
    bank = bank_at(engine, computer, 0.5)
    assert bank["ccl"] == 0.0 and bank["dcl"] == 0.0 and bank["cvl"] == 0.0
    assert bank["reasons"]["ccl"] == "no pack online: safe state 0 A"
    assert bank["alarms"]["bms_cable"] == 0  # start-up grace: nobody has had time to report
    bank = bank_at(engine, computer, 10.5)
    assert bank["alarms"]["bms_cable"] == 2
    feed(engine, 11.0)
    bank_at(engine, computer, 11.0)
    bank = bank_at(engine, computer, 30.0)  # everybody silent: limits to 0, CVL to float
    assert bank["online"] == 0 and bank["ccl"] == 0.0 and bank["dcl"] == 0.0
    assert bank["cvl"] == pytest.approx(16 * 3.375)
    assert isinstance(bank["cvl"], float) and math.isfinite(bank["cvl"])


@pytest.mark.parametrize(
    "field,value",
    [
        ("voltage", math.nan),
        ("current", math.inf),
        ("cells", [3.3] * 15 + [-0.1]),
        ("soc", 140.0),
        ("temperatures", [math.nan]),
    ],
)
def test_bad_states_are_counted_and_never_used(field, value):
    engine, computer = setup()
    feed(engine, 1.0)
    bad = state_msg("a", 1, seq=2)
    bad[field] = value
    assert not engine.accept(bad, 1.5)
    bank = bank_at(engine, computer, 1.6)
    assert bank["counters"]["rejected"] == 1
    a = next(p for p in bank["packs"] if p["id"] == "a:1")
    assert a["voltage"] == pytest.approx(state_msg()["voltage"])
    assert all(math.isfinite(bank[k]) for k in ("voltage", "current", "cvl", "ccl", "dcl"))


def test_soh_is_the_lowest_a_pack_reports():
    engine, computer = setup()
    feed(engine, 1.0, **{"a:1": {"soh": 97.0}, "b:1": {"soh": 91.5}})
    assert bank_at(engine, computer, 1.0)["soh"] == 91.5
    engine, computer = setup()
    feed(engine, 1.0)
    assert bank_at(engine, computer, 1.0)["soh"] is None


def test_sequence_gaps_are_counted():
    engine, _ = setup()
    engine.accept(state_msg("a", 1, seq=1), 1.0)
    engine.accept(state_msg("a", 1, seq=5), 2.0)
    assert engine.registry.counters.lost == 3


def test_mixed_cell_counts_in_parallel_use_the_smaller_and_stop_charge():
    engine, computer = setup()
    feed(engine, 1.0, **{"b:1": {"cells": [3.3] * 15}})
    bank = bank_at(engine, computer, 1.0)
    assert bank["cvl"] == pytest.approx(15 * 3.45) and bank["ccl"] == 0.0
    assert bank["reasons"]["ccl"] == "parallel strings report different cell counts: 0 A"


def test_states_from_packs_outside_the_bank_are_counted_and_ignored():
    engine, computer = setup()
    assert not engine.accept(state_msg("z", 9), 1.0)
    assert bank_at(engine, computer, 1.0)["counters"]["unknown_packs"] == 1


def test_charge_state_timers_count_the_state_and_absorptions_two_ends():
    engine, computer = setup(absorption_time=100.0, absorption_limit=300.0)
    feed(engine, 1.0)
    bank = bank_at(engine, computer, 1.0)
    assert bank["charge_state"] == "bulk" and bank["timers"] == {"for": 0.0}
    feed(engine, 5.0)
    assert bank_at(engine, computer, 5.0)["timers"] == {"for": 4.0}
    full = {pid: {"cells": [3.445] * 16, "current": 2.0} for pid in PACKS}
    feed(engine, 10.0, **full)  # the bank reached its charge voltage: absorption starts
    bank = bank_at(engine, computer, 10.0)
    assert bank["charge_state"] == "absorption"
    assert bank["timers"] == {"for": 0.0, "min left": 100.0, "max left": 300.0}
    feed(engine, 70.0, **full)
    bank = bank_at(engine, computer, 70.0)
    assert bank["timers"] == {"for": 60.0, "min left": 40.0, "max left": 240.0}
    feed(engine, 110.0, **full)  # balanced, absorption_time over: float, its clock from 0
    bank = bank_at(engine, computer, 110.0)
    assert bank["charge_state"] == "float" and bank["timers"] == {"for": 0.0}


@pytest.mark.parametrize("timers", [[1.0], {"for": -1.0}, {"for": math.nan}, {"x" * 33: 1.0},
                                    {str(k): 1.0 for k in range(9)}])  # fmt: skip
def test_malformed_timers_are_rejected(timers):
    from bmsbank.errors import MessageError

    engine, computer = setup()
    feed(engine, 1.0)
    bank = computer.compute(1.0)
    bank["timers"] = timers
    with pytest.raises(MessageError, match="timers|for"):
        validate_bank(bank)


def test_the_cvl_hold_after_a_cut_shows_the_engines_time_left():
    engine, computer = setup(ovp_hold=100.0)
    high = {pid: {"cells": [3.40] * 15 + [3.47], "current": 30.0} for pid in PACKS}
    settling = {pid: {"cells": [3.40] * 15 + [3.43], "current": 1.0} for pid in PACKS}
    feed(engine, 1.0, **{pid: {"cells": [3.40] * 16, "current": 30.0} for pid in PACKS})
    bank_at(engine, computer, 1.0)
    feed(engine, 2.0, **high)  # a cell over the limit: CVL cut at once, the hold starts
    assert "cut to" in bank_at(engine, computer, 2.0)["reasons"]["cvl"]
    seen = []
    for t in (3.0, 42.0, 103.0):  # the hold ends 100 s after the last excess (t = 2 s)
        feed(engine, t, **settling)
        seen.append(bank_at(engine, computer, t)["reasons"]["cvl"])
    assert seen[0].endswith("cut to 54.45 V; held at least 99 s more"), seen[0]
    assert seen[1].endswith("; held at least 60 s more"), seen[1]
    assert "held at least" not in seen[2]  # the time is over: the hold ends with the cell
