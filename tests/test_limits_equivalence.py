"""Compiled ``native._limits`` against its twin ``_limits_py``, bit for bit, on generated banks.

Hypothesis draws the bank (strings of packs in series, configured cells and capacities, engine
parameters and tables) and the shape of a run (steps, time steps, which pack sends what); a
``random.Random`` seeded from the draw fills the bulk of each state message (cells, sensors,
alarms), so an example stays cheap while covering extreme but schema-valid values. Every step's
output must be identical in both implementations: same keys in the same order, same types, floats
equal (NaN equal to NaN, the sign of zero too), same reasons; likewise snapshots, restores and
exceptions. ``limits_impls`` holds both modules even under ``BMSBANK_PURE=1``.
"""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.config import BankConfig
from bmsbank.native.limits import CHARGE_BLOCKING, DISCHARGE_BLOCKING
from bmsbank.schema import ALARMS, validate_state
from bmsbank.topology import Topology, engine_params
from tests.factories import state_msg

NAN = float("nan")
BLOCKING = sorted(set(CHARGE_BLOCKING) | set(DISCHARGE_BLOCKING))
OTHER_ALARMS = [a for a in ALARMS if a not in BLOCKING]


# ---- equality ---------------------------------------------------------------------------------


def same(a: Any, b: Any, path: str = "out") -> None:
    """Deep equality: types match, NaN == NaN, floats by == and sign, dicts in key order."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if isinstance(a, float):
        if a != a:
            assert b != b, f"{path}: {a!r} != {b!r}"
        else:
            assert a == b and math.copysign(1.0, a) == math.copysign(1.0, b), (
                f"{path}: {a!r} != {b!r}"
            )
    elif isinstance(a, dict):
        assert len(a) == len(b), f"{path}: keys {list(a)} != {list(b)}"
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            same(ka, kb, f"{path} key")
            same(va, vb, f"{path}[{ka!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("raised", exception type name and message)."""
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001 - the two implementations must fail alike
        return "raised", f"{type(exc).__name__}: {exc}"


def test_same_helper():
    same([1.0, NAN, (0, "a")], [1.0, NAN, (0, "a")])
    for a, b in [
        (1, 1.0),
        (0.0, -0.0),
        (NAN, 1.0),
        ([1], (1,)),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ]:
        try:
            same(a, b)
        except AssertionError:
            continue
        raise AssertionError(f"{a!r} == {b!r} passed")


# ---- strategies -------------------------------------------------------------------------------


def rows_of(lo: float, hi: float, most: int = 5) -> st.SearchStrategy[list[list[float]]]:
    """A table: 0-``most`` rows [x, fraction], x ascending (repeats allowed), ints now and then."""
    x = st.floats(lo, hi, allow_nan=False) | st.integers(int(lo), int(hi))
    f = st.sampled_from([0.0, 1.0, 0.5, 0.25, 0]) | st.floats(0.0, 1.0)
    return st.lists(st.tuples(x, f), max_size=most).map(
        lambda rs: [[x, f] for x, f in sorted(rs, key=lambda r: r[0])]
    )


def window(lo: float, hi: float) -> st.SearchStrategy[list[float]]:
    return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).filter(lambda w: w[0] < w[1]).map(list)


@st.composite
def banks(draw: Any) -> dict[str, Any]:
    """Topology, per-pack reported cell counts, and engine parameters."""
    strings: list[tuple[int, ...]] = []
    n = 0
    same_length = draw(st.booleans())  # as a real bank, else strings that cannot agree
    m = draw(st.integers(1, 3))
    for _ in range(draw(st.integers(1, 4))):
        m = m if same_length else draw(st.integers(1, 3))
        strings.append(tuple(range(n, n + m)))
        n += m
    count = st.sampled_from([16, 8, 4, 1, 32]) | st.integers(1, 32)
    if draw(st.booleans()):
        reported = [draw(count)] * n  # as a real bank: one pack type
    else:
        reported = [draw(count) for _ in range(n)]
    cells = tuple(draw(st.sampled_from([0, reported[k]])) for k in range(n))
    capacities = tuple(
        draw(st.sampled_from([0.0, 100.0, 280.0]) | st.floats(1.0, 1000.0)) for _ in range(n)
    )
    topo = Topology(
        ids=tuple(f"bus:{k + 1}" for k in range(n)),
        strings=tuple(strings),
        cells=cells,
        capacities=capacities,
        max_charge=tuple(
            draw(st.sampled_from([50.0, 0.0, 100.0, 200.0]) | st.floats(0, 500)) for _ in range(n)
        ),
        max_discharge=tuple(
            draw(st.sampled_from([100.0, 0.0]) | st.floats(0, 500)) for _ in range(n)
        ),
    )
    p = engine_params(BankConfig(), topo)
    over = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "stale_after": st.sampled_from([10.0, 60.0, 600.0]) | st.floats(0.5, 900.0),
                "cell_charge_voltage": st.sampled_from([3.45, 3.5, 3.65]),
                "cell_float_voltage": st.sampled_from([3.375, 3.35, 3.4]),
                "cell_low_voltage": st.sampled_from([2.9, 2.5, 3.0]),
                "offline_cell_voltage": st.sampled_from([3.375, 3.3, 3.4]),
                "soc_reset_voltage": st.sampled_from([0.0, 3.55]),
                "soc_reset_days": st.sampled_from([30.0, 0.01, 0.1]),
                "full_charge_days": st.sampled_from([7.0, 30.0, 0.01, 0.05]),
                "absorption_time": st.sampled_from([7200.0, 60.0, 600.0]) | st.floats(1.0, 3000.0),
                "absorption_limit": st.sampled_from([14400.0, 120.0, 1200.0]),
                "absorption_spread": st.sampled_from([0.01, 0.0, 0.5, 6.0]),
                "rebulk_soc": st.sampled_from([80.0, 0.0, 100.0, 50.0]),
                "rebulk_spread": st.sampled_from([0.08, 0.01, 1.0, 7.0]),
                "cvl_interval": st.sampled_from([20.0, 1.0, 60.0, 300.0]),
                "cvl_ramp": st.sampled_from([0.003, 0.1, 1.0]),
                "ovp_hold": st.sampled_from([300.0, 0.0, 30.0]),
                "ovp_release": st.sampled_from([0.01, 0.0, 0.2]),
                "current_hold": st.sampled_from([60.0, 0.0, 5.0, 600.0]),
                "current_ramp": st.sampled_from([1.0, 0.1, 10.0]) | st.floats(0.01, 50.0),
                "rejoin_window": st.sampled_from([0.05, 0.001, 1.0, 10.0]),
                "safe_ccl": st.sampled_from([0.0, 10.0]),
                "safe_dcl": st.sampled_from([0.0, 20.0]),
                "share_by_capacity": st.booleans(),
                "coulomb_counting": st.booleans(),
                "current_average_time": st.sampled_from([180.0, 1.0, 3600.0]),
                "time_to_soc": st.lists(st.integers(0, 100), max_size=5).map(
                    lambda xs: [float(x) for x in xs]
                ),
                "linear": st.booleans(),
                "charge_window": window(-60.0, 150.0),
                "discharge_window": window(-60.0, 150.0),
                "ccl_cell_table": rows_of(2.5, 4.0) | rows_of(0.0, 6.0),
                "dcl_cell_table": rows_of(2.5, 4.0) | rows_of(0.0, 6.0),
                "ccl_temperature_table": rows_of(-60.0, 150.0),
                "dcl_temperature_table": rows_of(-60.0, 150.0),
                "ccl_soc_table": rows_of(0.0, 100.0),
                "dcl_soc_table": rows_of(0.0, 100.0),
                "mosfet_table": rows_of(-60.0, 200.0),
            },
        )
    )
    p.update(over)
    return {"topo": topo, "params": p, "reported": reported}


def interesting(p: dict[str, Any], *keys: str) -> list[float]:
    """Values at which something changes: the x of table rows."""
    return [float(r[0]) for key in keys for r in p[key]]


def make_state(
    rng: random.Random, k: int, seq: int, nc: int, p: dict[str, Any], base: float, wild: float
) -> dict:
    """One schema-valid state message of pack ``k`` with ``nc`` cells around ``base`` volts.

    Each figure is calm (what a healthy pack sends) or, with probability ``wild``, extreme:
    bounds of the schema, rows of the tables, window edges, alarms, FETs off.
    """

    def wild_or(calm: Any, extreme: Any) -> Any:
        return extreme() if rng.random() < wild else calm()

    special = [0.0, 6.0, p["cell_charge_voltage"], p["cell_float_voltage"], p["cell_low_voltage"]]
    special += [p["soc_reset_voltage"]] + interesting(p, "ccl_cell_table", "dcl_cell_table")
    cells: list[Any] = []
    for _ in range(nc):
        v = wild_or(
            lambda: base + rng.choice([0.0, 0.0, rng.uniform(-0.005, 0.005)]),
            lambda: rng.choice([rng.choice(special), rng.uniform(0.0, 6.0)]),
        )
        v = min(6.0, max(0.0, v))
        cells.append(int(v) if v == int(v) and rng.random() < 0.5 else v)
    t_special = [-60.0, 150.0, *p["charge_window"], *p["discharge_window"]]
    t_special += interesting(p, "ccl_temperature_table", "dcl_temperature_table")
    temps = [
        min(150.0, max(-60.0, wild_or(
            lambda: rng.uniform(15.0, 35.0),
            lambda: rng.choice([rng.choice(t_special), rng.uniform(-60.0, 150.0)]),
        )))
        for _ in range(wild_or(lambda: 2, lambda: rng.choice([0, 1, 3, 4])))
    ]  # fmt: skip
    alarms: dict[str, int] = dict.fromkeys(rng.sample(BLOCKING + OTHER_ALARMS, 4), 0)
    for name in rng.sample(BLOCKING + OTHER_ALARMS, wild_or(lambda: 0, lambda: rng.randint(1, 4))):
        alarms[name] = rng.choice([1, 2, 2])
    soc = wild_or(
        lambda: rng.uniform(20.0, 100.0), lambda: rng.choice([0.0, 100.0, 50, p["rebulk_soc"]])
    )
    capacity = wild_or(
        lambda: rng.choice([100.0, 280.0]), lambda: rng.choice([0.0, 1000, rng.uniform(0, 1000)])
    )

    def optional(lo: float, hi: float) -> float | None:
        return wild_or(lambda: None, lambda: rng.choice([lo, hi, rng.uniform(lo, hi)]))

    fields: dict[str, Any] = {
        "cells": cells,
        "temperatures": temps,
        "mosfet_temperature": optional(-60.0, 200.0),
        "bms_ccl": optional(0.0, 300.0),
        "bms_dcl": optional(0.0, 300.0),
        "bms_cvl": optional(0.0, 4.0 * nc),
        "soc": soc,
        "capacity": capacity,
        "remaining": capacity * soc / 100.0,
        "current": wild_or(
            lambda: rng.uniform(-20.0, 60.0), lambda: rng.choice([0.0, 1.0, -500.0, 500.0])
        ),
        "charge_fet": rng.random() >= 0.3 * wild,
        "discharge_fet": rng.random() >= 0.3 * wild,
        "alarms": alarms,
    }
    if rng.random() < wild:
        fields["voltage"] = rng.uniform(0.0, 1000.0)  # a pack that disagrees with its cells
    return validate_state(state_msg("bus", k + 1, seq, **fields))


@st.composite
def runs(draw: Any) -> dict[str, Any]:
    """A bank and a run: the time of each step and what packs may do at a step.

    Per pack and step the seeded random picks one of ``actions``: keep the state, send a new one,
    or be never seen (None).
    """
    bank = draw(banks())
    n = len(bank["topo"].cells)
    actions = draw(st.sampled_from([("new",), ("new",) * 8 + ("keep",), ("new", "keep", "none")]))
    steps: list[float] = []
    t = draw(st.sampled_from([0.0, 1000.0]) | st.floats(0.0, 1e6))
    for _ in range(draw(st.integers(1, 40))):
        t += draw(
            st.sampled_from([0.0, 1.0, 5.0, 10.0, 20.0, 25.0, 50.0, 60.0]) | st.floats(0, 600)
        )
        steps.append(t)
    bank["steps"] = steps
    bank["actions"] = actions
    bank["wild"] = draw(st.sampled_from([0.0, 0.02, 0.2, 1.0]))
    bank["seed"] = draw(st.integers(0, 2**32 - 1))
    bank["restore"] = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "since_full": st.lists(st.none() | st.floats(0.0, 1e7), max_size=n + 1),
                "since_reset": st.none() | st.floats(0.0, 1e7),
                "soc": st.none() | st.floats(0.0, 100.0),
            }
        )
    )
    return bank


def drive(run: dict[str, Any]) -> list[tuple[float, list, list]]:
    """The (t, states, seen) of every step, built once for both implementations.

    The cells follow a common voltage that wanders up and down through the charge voltage, so
    the bank goes through bulk, absorption and float, with some packs in alarm or out of step.
    """
    p, reported, rng = run["params"], run["reported"], random.Random(run["seed"])
    n = len(reported)
    states: list[Any] = [None] * n
    seen = [NAN] * n
    seq = 0
    base = rng.uniform(3.2, 3.6)
    out = []
    for t in run["steps"]:
        base = min(3.7, max(3.0, base + rng.choice([0.0, 0.0, 0.01, -0.01, 0.05, -0.05])))
        if rng.random() < 0.2:
            base = rng.choice([p["cell_charge_voltage"], p["cell_float_voltage"], 3.3])
        for k in range(n):
            action = rng.choice(run["actions"])
            if action == "new":
                seq += 1
                states[k] = make_state(rng, k, seq, reported[k], p, base, run["wild"])
                seen[k] = t - rng.choice([0.0, 0.0, 0.0, 0.5, p["stale_after"]])
            elif action == "none":
                states[k], seen[k] = None, NAN
        out.append((t, list(states), list(seen)))
    return out


# ---- tests ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(run=runs())
def test_engines_agree(limits_impls, run):
    compiled, twin = limits_impls
    topo, p = run["topo"], run["params"]
    args = (p, topo.strings, topo.cells, topo.capacities)
    engines = [compiled.Engine(*args), twin.Engine(*args)]
    cycles = drive(run)
    for i, (t, states, seen) in enumerate(cycles):
        got = [outcome(e.step, t, states, seen) for e in engines]
        same(got[0], got[1], f"step {i} at t={t}")
        if got[0][0] == "raised":
            return
    same(engines[0].snapshot(), engines[1].snapshot(), "snapshot")
    snap = run["restore"] or engines[1].snapshot()
    t_end = cycles[-1][0]
    for restored in (engines, [compiled.Engine(*args), twin.Engine(*args)]):
        # a snapshot of another bank (ages for more or fewer packs) is refused alike
        same(*[outcome(e.restore, t_end + 5.0, snap) for e in restored], "restore")
        same(restored[0].snapshot(), restored[1].snapshot(), "restored snapshot")
        for t, states, seen in cycles[-3:]:
            t += 10.0
            seen = [x + 10.0 for x in seen]
            same(
                outcome(restored[0].step, t, states, seen),
                outcome(restored[1].step, t, states, seen),
            )
        same(restored[0].snapshot(), restored[1].snapshot(), "snapshot after restore")


@settings(max_examples=300, deadline=None)
@given(
    x=st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(-70.0, 210.0)
    | st.integers(-70, 210),
    rows=rows_of(-60.0, 200.0, most=8)
    | st.lists(st.tuples(st.floats(-100, 100), st.floats(0, 1)), max_size=6),
    linear=st.booleans(),
)
def test_fraction_agrees(limits_impls, x, rows, linear):
    compiled, twin = limits_impls
    same(outcome(compiled.fraction, x, rows, linear), outcome(twin.fraction, x, rows, linear))
    for row in rows:  # exactly on a row, and just either side of it
        for at in (row[0], math.nextafter(row[0], -math.inf), math.nextafter(row[0], math.inf)):
            same(compiled.fraction(at, rows, linear), twin.fraction(at, rows, linear), f"x={at!r}")


@settings(max_examples=100, deadline=None)
@given(bank=banks(), seed=st.integers(0, 2**32 - 1), limit=st.sampled_from([3.45, 3.55, 0.0, 6.0]))
def test_pack_rules_agree(limits_impls, bank, seed, limit):
    compiled, twin = limits_impls
    rng = random.Random(seed)
    p = bank["params"]
    rules = compiled.PackRules(p), twin.PackRules(p)
    for k, nc in enumerate(bank["reported"]):
        s = make_state(rng, k, k, nc, p, rng.uniform(2.5, 4.0), rng.choice([0.0, 0.2, 1.0]))
        same(
            outcome(rules[0].evaluate, k, s, limit),
            outcome(rules[1].evaluate, k, s, limit),
            f"pack {k}",
        )


def test_ramp_that_lands_on_the_limit_agrees(limits_impls):
    """The current ramp reaches the raw limit exactly (0 A + 1 A/s x 50 s = 50 A)."""
    topo = Topology(
        ids=("bus:1",), strings=((0,),), cells=(16,), capacities=(100.0,), max_charge=(50.0,),
        max_discharge=(100.0,),
    )  # fmt: skip
    p = engine_params(BankConfig(), topo)
    p.update(current_ramp=1.0, safe_ccl=0.0, safe_dcl=0.0, stale_after=1e9)
    state = validate_state(state_msg("bus", 1, 1))
    engines = [impl.Engine(p, topo.strings, topo.cells, topo.capacities) for impl in limits_impls]
    for t, states, seen in [
        (0.0, [None], [NAN]),
        (50.0, [state], [50.0]),
        (100.0, [state], [50.0]),
    ]:
        got = [e.step(t, states, seen) for e in engines]
        same(got[0], got[1], f"t={t}")
    assert got[1]["ccl"] == 50.0 and got[1]["reasons"]["ccl"][0] == "config"


def test_tiny_capacity_does_not_crash(limits_impls):
    topo = Topology(
        ids=("bus:1", "bus:2"), strings=((0,), (1,)), cells=(0, 0), capacities=(0.0, 0.0),
        max_charge=(50.0, 50.0), max_discharge=(100.0, 100.0),
    )  # fmt: skip
    p = engine_params(BankConfig(), topo)
    states = [
        validate_state(state_msg("bus", 1, 1, capacity=5e-324, remaining=0.0)),  # schema-valid
        validate_state(state_msg("bus", 2, 2, capacity=100.0, remaining=60.0)),
    ]
    results = []
    for impl in limits_impls:
        engine = impl.Engine(p, topo.strings, topo.cells, topo.capacities)
        results.append(outcome(engine.step, 0.0, states, [0.0, 0.0]))
    same(results[0], results[1])
    for impl in limits_impls:
        impl.Engine(p, topo.strings, topo.cells, topo.capacities).step(0.0, states, [0.0, 0.0])
