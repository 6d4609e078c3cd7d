"""The human view (`bmsbank status`, the demo): what it shows; nothing it reads crashes it."""

from __future__ import annotations

from bmsbank import view
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from tests.factories import state_msg


def bank_with(**a1) -> dict:
    engine = BankEngine.from_mapping({"stale_after": 10.0, "strings": [["a:1"], ["a:2"]]})
    computer = BankComputer(engine, "v", started=0.0)
    for seq, (address, over) in enumerate(((1, a1), (2, {}))):
        engine.accept(state_msg("a", address, seq=seq, **over), 1.0)
    return computer.compute(1.0)


def test_a_pack_whose_states_are_refused_says_how_many_why_and_the_last_reason():
    engine = BankEngine.from_mapping({"stale_after": 10.0, "strings": [["a:1"]]})
    computer = BankComputer(engine, "v", started=0.0)
    engine.accept(state_msg("a", 1, seq=1), 1.0)
    engine.accept(state_msg("a", 1, seq=2, cells=[3.3] * 15 + [5.9]), 2.0)
    engine.accept(state_msg("a", 1, seq=1), 3.0)  # a repeat of the first
    text = view.render(computer.compute(3.0))
    line = next(x for x in text.splitlines() if x.strip().startswith("a:1"))
    assert "rejected 2 (cells 1, seq 1), last: seq: 1 is not after 1" in line


def test_a_bank_with_a_field_of_the_wrong_type_is_named_not_a_crash():
    bank = bank_with()
    assert view.render(bank).startswith("bank v: ")
    bank["packs"][0]["min_cell_voltage"] = "3.3"
    assert view.render(bank) == (
        "bank message rejected: packs[0].min_cell_voltage: expected a number, got str"
    )
    bank = bank_with()
    del bank["charge_state"], bank["voltage"]  # what the publisher reads with a default
    assert "CVL" in view.render(bank).splitlines()[0]


LEARNT = {
    "status": "learning", "resistance": [0.52, 0.91, None, 0.5], "resistance_median": 0.52,
    "capacity": [100.0, 100.0, 88.0, None], "steps": 14, "charges": 3,
    "warnings": ["a:1 cell 2: resistance 1.8× the pack median (14 steps)",
                 "a:1 cell 3: ~12 % less capacity than the pack median (3 charges)"],
}  # fmt: skip


def test_cell_health_warnings_follow_their_pack_and_the_learnt_values_read_per_cell():
    bank = bank_with()
    bank["packs"][0]["cell_health"] = LEARNT
    lines = view.render(bank).splitlines()
    first = next(i for i, x in enumerate(lines) if x.strip().startswith("a:1"))
    assert lines[first + 1 : first + 3] == [f"    ! {w}" for w in LEARNT["warnings"]]
    assert lines[first + 3].strip().startswith("a:2")  # a pack without warnings: no line
    assert view.health_lines(bank["packs"][0]) == [
        "    R mΩ 0.52 0.91 -- 0.50 med 0.52",
        "    C %   100  100   88   --",
    ]
    quiet = dict(LEARNT, status="not enough data", warnings=[])
    assert view.health_lines({"cell_health": quiet}) == []
    assert view.health_lines({"cell_health": None}) == []  # cell health off


def test_a_malformed_cell_health_is_named_not_shown():
    bank = bank_with()
    bank["packs"][1]["cell_health"] = dict(LEARNT, resistance=[0.5, "x", None, 0.5])
    assert view.render(bank) == (
        "bank message rejected: packs[1].cell_health.resistance[1]: "
        "expected a number in [0, 1000], got 'x'"
    )
