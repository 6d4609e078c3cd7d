"""native._limits kernels: values on both implementations, equivalence on generated banks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def pack(
    voltage=53.0, current=0.0, soc=50.0, capacity=100.0, cells=(3.3,) * 16, temperatures=(25.0,)
):
    return {
        "voltage": voltage,
        "current": current,
        "soc": soc,
        "capacity": capacity,
        "remaining": capacity * soc / 100.0,
        "cells": list(cells),
        "temperatures": list(temperatures),
    }


def test_implementations_are_distinct(limits_impls):
    compiled, twin = limits_impls
    assert compiled.IMPLEMENTATION == "cython" and twin.IMPLEMENTATION == "python"


def test_parallel_aggregate(limits_mod):
    packs = [
        pack(52.8, 10.0, 40.0, 100.0, [3.30] * 15 + [3.31], [20.0, 22.0]),
        pack(53.2, -4.0, 80.0, 300.0, [3.28] + [3.32] * 15, [30.0]),
    ]
    agg = limits_mod.aggregate(packs)
    assert agg["voltage"] == pytest.approx(53.0)
    assert agg["current"] == pytest.approx(6.0)
    assert agg["power"] == pytest.approx(52.8 * 10.0 - 53.2 * 4.0)
    assert agg["soc"] == pytest.approx((40 * 100 + 80 * 300) / 400)  # capacity-weighted
    assert agg["capacity"] == 400.0 and agg["remaining"] == pytest.approx(280.0)
    assert (agg["min_cell_voltage"], agg["min_cell_pack"], agg["min_cell_index"]) == (3.28, 1, 0)
    assert (agg["max_cell_voltage"], agg["max_cell_pack"], agg["max_cell_index"]) == (3.32, 1, 1)
    assert agg["temperature"] == pytest.approx(24.0)
    assert (agg["min_temperature"], agg["min_temperature_pack"]) == (20.0, 0)
    assert (agg["max_temperature"], agg["max_temperature_pack"]) == (30.0, 1)
    assert agg["cells_min"] == agg["cells_max"] == 16


def test_empty_bank(limits_mod):
    agg = limits_mod.aggregate([])
    assert agg["packs"] == 0 and agg["current"] == 0.0 and agg["voltage"] == 0.0
    assert math.isnan(agg["min_cell_voltage"]) and agg["min_cell_pack"] == -1
    assert math.isnan(agg["temperature"])


def test_soc_without_capacity_is_a_plain_mean(limits_mod):
    agg = limits_mod.aggregate([pack(soc=20.0, capacity=0.0), pack(soc=60.0, capacity=0.0)])
    assert agg["soc"] == pytest.approx(40.0)


CCL_STEPS = [[3.50, 0.0], [3.45, 0.05], [3.40, 0.25]]
DCL_STEPS = [[2.80, 0.0], [2.90, 0.05], [3.00, 0.25]]


@pytest.mark.parametrize(
    "cell,expected",
    [
        (3.30, (1.0, -1)),
        (3.40, (0.25, 2)),
        (3.449, (0.25, 2)),
        (3.45, (0.05, 1)),
        (3.50, (0.0, 0)),
        (3.70, (0.0, 0)),
        (float("nan"), (0.0, 0)),
    ],
)
def test_charge_steps(limits_mod, cell, expected):
    assert limits_mod.step_factor(cell, CCL_STEPS, True) == expected


@pytest.mark.parametrize(
    "cell,expected",
    [
        (3.20, (1.0, -1)),
        (3.00, (0.25, 2)),
        (2.95, (0.25, 2)),
        (2.90, (0.05, 1)),
        (2.80, (0.0, 0)),
        (2.00, (0.0, 0)),
    ],
)
def test_discharge_steps(limits_mod, cell, expected):
    assert limits_mod.step_factor(cell, DCL_STEPS, False) == expected


finite = st.floats(-1e4, 1e4, allow_nan=False)
packs = st.lists(
    st.builds(
        pack,
        voltage=st.floats(0, 1000),
        current=finite,
        soc=st.floats(0, 100),
        capacity=st.floats(0, 1e4),
        cells=st.lists(st.floats(0, 6), max_size=32),
        temperatures=st.lists(st.floats(-60, 150), max_size=8),
    ),
    max_size=12,
)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        assert (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), k


@settings(max_examples=300, deadline=None)
@given(bank=packs)
def test_aggregate_agrees(limits_impls, bank):
    compiled, twin = limits_impls
    _same(compiled.aggregate(bank), twin.aggregate(bank))


@settings(max_examples=300, deadline=None)
@given(
    value=st.floats(allow_infinity=True),
    high=st.booleans(),
    table=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 1)), max_size=5),
)
def test_step_factor_agrees(limits_impls, value, high, table):
    compiled, twin = limits_impls
    assert compiled.step_factor(value, table, high) == twin.step_factor(value, table, high)
