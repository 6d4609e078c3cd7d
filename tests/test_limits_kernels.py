"""native._limits kernels on both implementations: tables and one pack's limits.

Whole-engine behaviour is in test_engine.py; compiled-vs-twin equivalence on generated banks in
test_limits_equivalence.py.
"""

from __future__ import annotations

import math

import pytest

from bmsbank.config import BankConfig
from bmsbank.topology import Topology, engine_params
from tests.factories import state_msg

NAN = float("nan")
ONE = Topology(("p:1",), ((0,),), (16,), (100.0,), (50.0,), (100.0,))


def test_implementations_are_distinct(limits_impls):
    compiled, twin = limits_impls
    assert compiled.IMPLEMENTATION == "cython" and twin.IMPLEMENTATION == "python"


ROWS = [[3.40, 1.0], [3.45, 0.5], [3.50, 0.1], [3.55, 0.0]]


@pytest.mark.parametrize(
    ("x", "linear", "expected"),
    [
        (3.30, True, 1.0),  # below the first row: its fraction
        (3.40, True, 1.0),
        (3.425, True, 0.75),  # interpolated
        (3.475, True, 0.3),
        (3.60, True, 0.0),  # above the last row
        (3.425, False, 0.5),  # step: the smaller neighbour, the cut comes at the earlier row
        (3.45, False, 0.1),
        (3.40, False, 0.5),
        (3.39, False, 1.0),
        (NAN, True, 0.0),  # unknown: the most restrictive row
    ],
)
def test_fraction(limits_mod, x, linear, expected):
    assert limits_mod.fraction(x, ROWS, linear) == pytest.approx(expected)


def test_empty_table_limits_nothing(limits_mod):
    assert limits_mod.fraction(3.7, [], True) == 1.0


def evaluate(limits_mod, limit=3.45, **fields):
    rules = limits_mod.PackRules(engine_params(BankConfig(), ONE))
    return rules.evaluate(0, state_msg("p", 1, **fields), limit)


def test_a_healthy_pack_gets_its_configured_maximum(limits_mod):
    q = evaluate(limits_mod, temperatures=[25.0])
    assert q[0] == 50.0 and q[1][0] == "config"
    assert q[2] == 100.0 and q[3][0] == "config"
    assert q[4] == 16 and q[5] == pytest.approx(16 * 3.30) and q[6] == 0.0


def test_the_bms_own_limit_wins_when_lower(limits_mod):
    q = evaluate(limits_mod, bms_ccl=20.0, bms_dcl=150.0)
    assert q[0] == 20.0 and q[1][0] == "bms"
    assert q[2] == 100.0  # a BMS limit above the configured maximum changes nothing


def test_highest_and_lowest_cells_drive_the_cell_tables(limits_mod):
    q = evaluate(limits_mod, cells=[2.95] + [3.30] * 14 + [3.47])
    assert q[0] == pytest.approx(50.0 * 0.34) and q[1][:3] == ("cell_table", 0, 15)
    assert q[2] == pytest.approx(100.0 * 0.3) and q[3][:3] == ("cell_table", 0, 0)
    assert q[6] == pytest.approx(0.02)  # excess over 3.45 V
    assert (q[7], q[8], q[9], q[10]) == (3.47, 15, 2.95, 0)


def test_below_the_charge_window_no_charge(limits_mod):
    q = evaluate(limits_mod, temperatures=[20.0, 3.0])
    assert q[0] == 0.0 and q[1][:4] == ("temperature_window", 0, 1, 3.0)
    assert q[2] == 100.0  # 3 °C is inside the discharge window (-20 to 50 °C)


def test_inside_the_window_the_temperature_table_derates(limits_mod):
    q = evaluate(limits_mod, temperatures=[10.0])
    assert q[0] == pytest.approx(50.0 * 0.625) and q[1][0] == "temperature_table"


def test_above_both_windows_nothing_flows(limits_mod):
    q = evaluate(limits_mod, temperatures=[55.0])
    assert q[0] == 0.0 and q[2] == 0.0


def test_a_pack_without_temperatures_cannot_charge(limits_mod):
    q = evaluate(limits_mod, temperatures=[])
    assert q[0] == 0.0 and q[1][0] == "no_temperature"


def test_mosfet_temperature_derates_both(limits_mod):
    q = evaluate(limits_mod, mosfet_temperature=80.0)
    assert q[0] == 25.0 and q[2] == 50.0 and q[1][0] == q[3][0] == "mosfet_table"


def test_fets_and_alarms_block(limits_mod):
    q = evaluate(limits_mod, charge_fet=False)
    assert q[0] == 0.0 and q[1][0] == "fet" and q[2] == 100.0
    q = evaluate(limits_mod, alarms={"low_cell_voltage": 2, "high_cell_voltage": 1})
    assert q[0] == 50.0  # a warning does not block
    assert q[2] == 0.0 and q[3][0] == "alarm" and q[3][2] == 1  # DISCHARGE_BLOCKING[1]


def test_reason_tuples_are_complete(limits_mod):
    q = evaluate(limits_mod)
    rule, pack, item, value, amount, share = q[1]
    assert (rule, pack, item, amount) == ("config", 0, -1, 50.0)
    assert math.isnan(value) and math.isnan(share)
