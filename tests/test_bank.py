"""The arbiter's bank: aggregation, limits, freshness, blocking and rejected input."""

from __future__ import annotations

import math

import pytest

from bmsbank.config import parse
from bmsbank.schema import validate_bank
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.registry import PackRegistry
from tests.factories import state_msg

PACKS = ["a:1", "b:1", "c:1"]


def setup(**bank):
    cfg = parse(
        {
            "bank": {
                "stale_after": 10.0,
                "max_charge_current": 50.0,
                "max_discharge_current": 100.0,
                **bank,
            }
        },
        "test",
    )
    registry = PackRegistry(PACKS, cfg.bank.stale_after)
    return registry, BankComputer(cfg, started=0.0)


def feed(registry, now, **over):
    for pid in PACKS:
        port, addr = pid.split(":")
        assert (
            registry.accept(state_msg(port, int(addr), seq=int(now), **over.get(pid, {})), now)
            is not None
        ), pid


def bank_at(registry, computer, now):
    registry.refresh(now)
    return validate_bank(computer.compute(registry, now))


def test_parallel_bank_values_and_limits():
    registry, computer = setup()
    feed(
        registry,
        1.0,
        **{
            "a:1": {"current": 10.0, "soc": 40.0, "capacity": 100.0, "remaining": 40.0},
            "b:1": {"current": -2.0, "soc": 80.0, "capacity": 300.0, "remaining": 240.0},
            "c:1": {"cells": [3.30] * 15 + [3.42]},
        },
    )
    bank = bank_at(registry, computer, 1.5)
    assert bank["online"] == 3 and bank["offline"] == 0
    assert bank["current"] == pytest.approx(13.0)
    assert bank["soc"] == pytest.approx((40 * 100 + 80 * 300 + 60 * 100) / 500)
    assert bank["capacity"] == 500.0 and bank["installed_capacity"] == 500.0
    assert bank["cvl"] == pytest.approx(16 * 3.45)
    assert bank["low_voltage"] == pytest.approx(16 * 2.90)
    # highest cell 3.42 V >= 3.40 V: 25 % of 3 x 50 A
    assert bank["ccl"] == pytest.approx(0.25 * 150.0)
    assert bank["dcl"] == pytest.approx(300.0)
    assert bank["max_cell_id"] == "c:1 C16" and bank["max_cell_voltage"] == pytest.approx(3.42)
    assert "c:1 C16 at 3.420 V" in bank["reasons"]["ccl"]
    assert bank["allow_charge"] and bank["allow_discharge"]
    assert all(level == 0 for level in bank["alarms"].values())


def test_low_cell_reduces_dcl():
    registry, computer = setup()
    feed(registry, 1.0, **{"b:1": {"cells": [2.88] + [3.2] * 15}})
    bank = bank_at(registry, computer, 1.0)
    assert bank["dcl"] == pytest.approx(0.05 * 300.0)
    assert bank["min_cell_id"] == "b:1 C1"


def test_a_blocking_pack_blocks_the_bank():
    registry, computer = setup()
    feed(
        registry, 1.0, **{"a:1": {"charge_fet": False}, "c:1": {"alarms": {"low_cell_voltage": 2}}}
    )
    bank = bank_at(registry, computer, 1.0)
    assert bank["ccl"] == 0.0 and bank["dcl"] == 0.0
    assert bank["blocking_charge"] == 1 and bank["blocking_discharge"] == 1
    assert "a:1 charge fet off" in bank["reasons"]["ccl"]
    assert "c:1 low cell voltage" in bank["reasons"]["dcl"]
    assert bank["alarms"]["low_cell_voltage"] == 2
    assert not bank["allow_charge"] and not bank["allow_discharge"]


def test_stale_pack_goes_offline_and_limits_follow_the_others():
    registry, computer = setup()
    feed(registry, 1.0)
    for now in (5.0, 10.0):  # a and b keep reporting, c is silent from t = 1 s
        for pid in ("a", "b"):
            registry.accept(state_msg(pid, 1, seq=int(now)), now)
    bank = bank_at(registry, computer, 10.9)
    assert bank["online"] == 3  # 9.9 s of silence: still within stale_after
    bank = bank_at(registry, computer, 11.1)
    assert bank["online"] == 2 and bank["offline"] == 1
    assert bank["ccl"] == pytest.approx(100.0) and bank["dcl"] == pytest.approx(200.0)
    assert bank["alarms"]["bms_cable"] == 2
    offline = [p for p in bank["packs"] if not p["online"]]
    assert [p["id"] for p in offline] == ["c:1"] and offline[0]["age"] == pytest.approx(10.1)
    # its next good state brings it back at once
    registry.accept(state_msg("c", 1, seq=11), 11.5)
    bank = bank_at(registry, computer, 11.6)
    assert bank["online"] == 3 and bank["alarms"]["bms_cable"] == 0


def test_no_pack_online_is_the_safe_state():
    registry, computer = setup()
    bank = bank_at(registry, computer, 0.5)
    assert bank["ccl"] == 0.0 and bank["dcl"] == 0.0 and bank["cvl"] == 0.0
    assert bank["reasons"]["ccl"] == "no pack online"
    assert bank["alarms"]["bms_cable"] == 0  # start-up grace: nobody has had time to report
    bank = bank_at(registry, computer, 10.5)
    assert bank["alarms"]["bms_cable"] == 2
    feed(registry, 11.0)
    bank_at(registry, computer, 11.0)
    bank = bank_at(registry, computer, 30.0)  # everybody silent: limits to 0, CVL kept
    assert bank["online"] == 0 and bank["ccl"] == 0.0 and bank["dcl"] == 0.0
    assert bank["cvl"] == pytest.approx(16 * 3.45)
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
    registry, computer = setup()
    feed(registry, 1.0)
    bad = state_msg("a", 1, seq=2)
    bad[field] = value
    assert registry.accept(bad, 1.5) is None
    bank = bank_at(registry, computer, 1.6)
    assert bank["counters"]["rejected"] == 1
    a = next(p for p in bank["packs"] if p["id"] == "a:1")
    assert a["voltage"] == pytest.approx(state_msg()["voltage"])
    assert all(math.isfinite(bank[k]) for k in ("voltage", "current", "cvl", "ccl", "dcl"))


def test_sequence_gaps_are_counted():
    registry, _ = setup()
    registry.accept(state_msg("a", 1, seq=1), 1.0)
    registry.accept(state_msg("a", 1, seq=5), 2.0)
    assert registry.counters.lost == 3


def test_mixed_cell_counts_use_the_smaller_for_cvl():
    registry, computer = setup()
    feed(registry, 1.0, **{"b:1": {"cells": [3.3] * 15}})
    assert bank_at(registry, computer, 1.0)["cvl"] == pytest.approx(15 * 3.45)


def test_configured_cell_count_wins():
    registry, computer = setup(cells=8)
    feed(registry, 1.0)
    assert bank_at(registry, computer, 1.0)["cvl"] == pytest.approx(8 * 3.45)
