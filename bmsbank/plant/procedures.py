"""Named closed-loop procedures: the plant drives the bank engine and reports metrics.

Every simulated second the plant solves the DC bus with the limits of the previous tick, sends one
state per reporting pack to the engine, ticks it, records what happened and integrates the cells.
Runs are deterministic: everything random comes from ``random.Random(seed)``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bmsbank.plant.model import Bank, Ess, Limits, LoadSchedule, Operating, Pack, String
from bmsbank.state import make_state

FLOAT_CELL_V = 3.375  # V per cell the engine floats at
WINDOW_LOW_C, WINDOW_HIGH_C = 5.0, 50.0  # charge temperature window [°C]
FULL_CELL_V = 3.50  # V: below this on every cell the bank is "merely full", not in danger
STEADY_S = 1800  # the last 30 simulated minutes are the steady-state window


@dataclass(frozen=True)
class Scenario:
    """Everything a run depends on; every field can be overridden through :func:`run`.

    Units: s, %, mV, °C, W, Ah. ``lost`` lists (pack number from 1, from s, until s) during
    which that pack sends no state (it stays connected). ``engine`` adds keys to the engine's
    [bank] mapping.
    """

    name: str
    seed: int = 1
    duration: int = 14400
    strings: int = 2  #: strings in parallel
    series: int = 1  #: packs in series per string
    cells: int = 16  #: cells per pack
    capacity_ah: float = 280.0
    start_soc: float = 85.0
    imbalance_mv: float = 0.0  #: cell 1 of pack 1 above the others at the top of charge
    temp_start_c: float = 25.0
    temp_end_c: float = 25.0  #: packs warm (or cool) linearly to this over the run
    pv_w: float = 8000.0
    feed_max_w: float = 10000.0
    base_load_w: float = 300.0
    burst_load_w: float = 3000.0
    lost: tuple[tuple[int, int, int], ...] = ()
    #: (pack number from 1, cell number from 1, resistance factor, capacity factor): weak cells
    weak_cells: tuple[tuple[int, int, float, float], ...] = ()
    #: a compressed day [s]: PV follows the sun over its first half, none over the second;
    #: 0 = PV at ``pv_w`` throughout
    day_s: int = 0
    temp_swing_c: float = 0.0  #: packs warm this much over a day's noon, as much colder at night
    absorption_time: float = 1800.0
    stale_after: float = 10.0
    engine: Mapping[str, Any] = field(default_factory=dict)
    trace: bool = False
    #: called with (simulated seconds done, duration [s]) every simulated 10 minutes
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)


class Plant:
    """The bank, its chargers and loads, and the pack ids the engine knows them by."""

    def __init__(self, sc: Scenario) -> None:
        rng = random.Random(sc.seed)
        strings = []
        for k in range(sc.strings):
            packs = []
            for j in range(sc.series):
                number = k * sc.series + j + 1
                weak = {c - 1: (r, cap) for p, c, r, cap in sc.weak_cells if p == number}
                mv = sc.imbalance_mv if k == j == 0 else 0.0
                packs.append(Pack.build(rng, sc.cells, sc.capacity_ah, sc.start_soc, mv,
                                        weak=weak))  # fmt: skip
            strings.append(String(packs))
        self.sc = sc
        self.bank = Bank(strings)
        self.ess = Ess(feed_max_w=sc.feed_max_w)
        self.loads = LoadSchedule.seeded(rng, sc.duration, sc.base_load_w, sc.burst_load_w)
        self.ids = [f"sim:{k + 1}" for k in range(len(self.bank.packs))]

    def engine_config(self) -> dict[str, Any]:
        """The [bank] mapping for ``BankEngine.from_mapping``."""
        per = self.sc.series
        pack = {"cells": self.sc.cells, "capacity": self.sc.capacity_ah, "chemistry": "LiFePO4"}
        config: dict[str, Any] = {
            "stale_after": self.sc.stale_after,
            "interval": 1.0,
            "absorption_time": self.sc.absorption_time,
            "strings": [self.ids[k : k + per] for k in range(0, len(self.ids), per)],
            "packs": {pid: dict(pack) for pid in self.ids},
        }
        config.update(self.sc.engine)
        return config

    def lost(self, t: int) -> set[int]:
        """Indexes (from 0) of the packs that send nothing at ``t``."""
        return {k - 1 for k, start, end in self.sc.lost if start <= t < end}

    def operate(self, t: int, limits: Limits | None) -> Operating:
        """Solve the bus at ``t`` and let the BMSes react; re-solve when a FET moved."""
        sc = self.sc
        temp = sc.temp_start_c + (sc.temp_end_c - sc.temp_start_c) * t / max(1, sc.duration)
        pv = sc.pv_w
        if sc.day_s:
            phase = (t % sc.day_s) / sc.day_s  # 0 = sunrise, 0.5 = sunset
            pv *= max(0.0, math.sin(2.0 * math.pi * phase))
            temp += sc.temp_swing_c * math.sin(2.0 * math.pi * phase)
        for p in self.bank.packs:
            p.temperature_c = temp
        self.bank.refresh()
        load = self.loads.power_at(t)
        op = self.ess.solve(self.bank, limits, pv, load)
        for _ in range(3):  # a BMS acts within the second; a second trip is rare, a third moot
            self.bank.apply(op.bus_v)
            if not any([p.protect() for p in self.bank.packs]):
                return op
            op = self.ess.solve(self.bank, limits, pv, load)
        self.bank.apply(op.bus_v)
        return op

    def report(self, engine: Any, t: int) -> None:
        """Send one state per reporting pack to ``engine``."""
        lost = self.lost(t)
        for k, pack in enumerate(self.bank.packs):
            if k in lost:
                continue
            state = make_state(
                port="sim", address=k + 1, bms="sim", seq=t, fields=pack.fields(), link={},
                mono=float(t), wall=1.7e9 + t,
            )  # fmt: skip
            engine.accept(state, float(t))


def _limits(out: Mapping[str, Any]) -> Limits | None:
    """(CVL, CCL, DCL) from an engine tick, or None when it has no CVL; unknown currents = 0."""
    cvl = out.get("cvl")
    if cvl is None or not math.isfinite(cvl):
        return None
    ccl, dcl = out.get("ccl"), out.get("dcl")
    ccl = float(ccl) if ccl is not None and math.isfinite(ccl) else 0.0
    dcl = float(dcl) if dcl is not None and math.isfinite(dcl) else 0.0
    return float(cvl), ccl, dcl


class Recorder:
    """Per-second series and running totals, turned into metrics at the end."""

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        self.cvl: list[float | None] = []
        self.ccl: list[float] = []
        self.dcl: list[float] = []
        self.online: list[int] = []
        self.states: list[str] = []
        self.max_cell, self.max_cell_t = 0.0, 0
        self.bus_over_cvl = 0.0
        self.wh = {"feed_in_wh": 0.0, "drained_to_grid_wh": 0.0, "curtailed_wh": 0.0}
        self.cold_ah = 0.0
        self.full_zero_s = 0
        self.trace: list[dict[str, Any]] = []
        self.engine: Any = None  #: the bank engine of the run (its cell health, for one)

    def record(self, t: int, out: Mapping[str, Any], op: Operating, applied: Limits | None) -> None:
        """Add one second: the engine's tick ``out``, the bus at ``op`` under ``applied`` limits."""
        limits = _limits(out)
        self.cvl.append(None if limits is None else limits[0])
        self.ccl.append(0.0 if limits is None else limits[1])
        self.dcl.append(0.0 if limits is None else limits[2])
        self.online.append(int(out.get("online") or 0))
        self.states.append(str(out.get("charge_state")))
        packs = self.plant.bank.packs
        high = max(max(p.terminal_v) for p in packs)
        if high > self.max_cell:
            self.max_cell, self.max_cell_t = high, t
        if applied is not None:
            self.bus_over_cvl = max(self.bus_over_cvl, op.bus_v - applied[0])
        self.wh["feed_in_wh"] += op.feed_w / 3600.0
        self.wh["drained_to_grid_wh"] += op.drained_w / 3600.0
        self.wh["curtailed_wh"] += op.curtailed_w / 3600.0
        # charge from the chargers only: equalisation between parallel strings flows at any CCL
        cold = [p.current_a for p in packs if min(p.sensors_c) < WINDOW_LOW_C]
        self.cold_ah += sum(max(0.0, min(i, op.battery_a)) for i in cold) / 3600.0
        if self.ccl[-1] == 0.0 and self._merely_full(t):
            self.full_zero_s += 1
        if self.plant.sc.trace and t % 60 == 0:
            self.trace.append(self._trace_row(t, op, high))

    def _merely_full(self, t: int) -> bool:
        """Every pack reporting, none too high, too cold or too hot, no FET open."""
        if self.plant.lost(t):
            return False
        for p in self.plant.bank.packs:
            if max(p.terminal_v) > FULL_CELL_V or not (p.charge_fet and p.discharge_fet):
                return False
            if not all(WINDOW_LOW_C <= c <= WINDOW_HIGH_C for c in p.sensors_c):
                return False
        return True

    def _trace_row(self, t: int, op: Operating, high: float) -> dict[str, Any]:
        cvl = self.cvl[-1]
        return {
            "t": t, "cvl": None if cvl is None else round(cvl, 3), "ccl": round(self.ccl[-1], 1),
            "dcl": round(self.dcl[-1], 1), "state": self.states[-1], "max_cell": round(high, 3),
            "bus_v": round(op.bus_v, 3), "i": round(op.battery_a, 1),
            "cell_min": [round(min(p.terminal_v), 3) for p in self.plant.bank.packs],
            "cell_max": [round(max(p.terminal_v), 3) for p in self.plant.bank.packs],
        }  # fmt: skip

    def metrics(self) -> dict[str, Any]:
        """The metrics every procedure reports."""
        sc, packs = self.plant.sc, self.plant.bank.packs
        cvls = [v for v in self.cvl if v is not None]
        steady = [v for v in self.cvl[-STEADY_S:] if v is not None]
        seen = [s for k, s in enumerate(self.states) if k == 0 or s != self.states[k - 1]]
        out: dict[str, Any] = {
            "procedure": sc.name, "seed": sc.seed, "duration": sc.duration,
            "max_cell_voltage": round(self.max_cell, 3), "max_cell_voltage_t": self.max_cell_t,
            "bms_tripped": any(p.tripped for p in packs),
            "cvl_ripple_mv": round(1000 * (max(steady) - min(steady)), 1) if steady else None,
            "ccl_zero_while_full_s": self.full_zero_s,
            "charge_below_window_ah": round(self.cold_ah, 2),
            "states_seen": seen, "final_state": self.states[-1] if self.states else None,
            "cvl_min": round(min(cvls), 3) if cvls else None,
            "cvl_max": round(max(cvls), 3) if cvls else None,
            "bus_over_cvl_max_v": round(self.bus_over_cvl, 3),
            "final_soc": round(sum(p.soc for p in packs) / len(packs), 1),
        }  # fmt: skip
        out.update({k: round(v, 1) for k, v in self.wh.items()})
        if sc.trace:
            out["trace"] = self.trace
        return out


def simulate(sc: Scenario) -> tuple[dict[str, Any], Recorder]:
    """Run ``sc`` against a fresh engine; returns the common metrics and the recording."""
    # imported here so the model and its tests import without the arbiter and its native engine
    from bmsbank.services.arbiter.engine import BankEngine

    plant = Plant(sc)
    engine = BankEngine.from_mapping(plant.engine_config())
    rec = Recorder(plant)
    rec.engine = engine
    limits = None
    for t in range(sc.duration):
        op = plant.operate(t, limits)
        plant.report(engine, t)
        out = engine.tick(float(t))
        rec.record(t, out, op, limits)
        limits = _limits(out)
        plant.bank.step(1.0)
        if sc.progress is not None and t % 600 == 0:
            sc.progress(t, sc.duration)
    return rec.metrics(), rec


def _scenario(name: str, seed: int, overrides: Mapping[str, Any], **defaults: Any) -> Scenario:
    """A scenario: ``defaults`` for the procedure, then the caller's ``overrides``."""
    return dataclasses.replace(Scenario(name=name, seed=seed, **defaults), **overrides)


def feed_in(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """Seed 004 §1.5.3.1: PV well above the loads, feed-in allowed, charge well into float."""
    return simulate(_scenario("feed-in", seed, overrides))[0]


def imbalance(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """§1.5.3.2: as feed-in; cell 1 of pack 1 sits ``imbalance_mv`` (50) above the others."""
    return simulate(_scenario("imbalance", seed, overrides, imbalance_mv=50.0))[0]


def excess_pv(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """§1.5.3.3: more PV than the inverter may feed in, so the bus rises to CVL + 0.4 V."""
    return simulate(_scenario("excess-pv", seed, overrides, feed_max_w=1000.0))[0]


def cold_charge(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """Packs start at 2 °C and warm to 10 °C over the run while PV is available."""
    sc = _scenario(
        "cold-charge", seed, overrides, duration=18000, start_soc=70.0, temp_start_c=2.0,
        temp_end_c=10.0,
    )  # fmt: skip
    return simulate(sc)[0]


def pack_lost(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """Mid-charge pack 2 stops reporting for 20 min (still connected and charging), then returns."""
    sc = _scenario(
        "pack-lost", seed, overrides, duration=10800, start_soc=80.0, lost=((2, 900, 2100),)
    )
    metrics, rec = simulate(sc)
    metrics.update(_pack_lost_metrics(rec, sc))
    return metrics


def _pack_lost_metrics(rec: Recorder, sc: Scenario) -> dict[str, Any]:
    """CVL while the pack is silent, and how the bank takes it back."""
    _, start, end = sc.lost[0]
    total = len(rec.plant.bank.packs)
    before = rec.cvl[start - 1] if start > 0 else None
    # "while lost" = while the engine counts the silent pack offline (after stale_after)
    during = [
        v
        for t, v in enumerate(rec.cvl[start:end], start)
        if v is not None and rec.online[t] < total
    ]
    rejoin = next((t for t in range(end, sc.duration) if rec.online[t] == total), None)
    drop = None
    if rejoin is not None and rejoin > 0:
        ref = rec.cvl[rejoin - 1]
        after = [v for v in rec.cvl[rejoin : rejoin + 61] if v is not None]
        drop = round(max([0.0] + [ref - v for v in after]), 3) if ref is not None else None
    return {
        "cvl_rose_while_lost": bool(during and before is not None and max(during) > before + 1e-3),
        "max_cvl_while_lost": round(max(during), 3) if during else None,
        "float_cap": round(sc.series * sc.cells * FLOAT_CELL_V, 3),
        "rejoined": rejoin is not None,
        "rejoin_t": rejoin,
        "rejoin_cvl_drop": drop,
    }


def all_lost(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """Every pack stops reporting at 1 h and comes back 10 min later."""
    sc = _scenario("all-lost", seed, overrides, duration=10800)
    if "lost" not in overrides:
        every = tuple((k + 1, 3600, 4200) for k in range(sc.strings * sc.series))
        sc = dataclasses.replace(sc, lost=every)
    metrics, rec = simulate(sc)
    metrics.update(_all_lost_metrics(rec, sc))
    return metrics


def _all_lost_metrics(rec: Recorder, sc: Scenario) -> dict[str, Any]:
    """How long the bank kept charging or discharging blind, and whether it came back."""
    start = min(a for _, a, _ in sc.lost)
    end = max(b for _, _, b in sc.lost)
    last_state = start - 1
    safe = next(
        (t for t in range(start, sc.duration) if rec.ccl[t] == 0.0 and rec.dcl[t] == 0.0), None
    )
    total = len(rec.plant.bank.packs)
    back = next(
        (t for t in range(end, sc.duration)
         if rec.online[t] == total and (rec.ccl[t] > 0 or rec.dcl[t] > 0)),
        None,
    )  # fmt: skip
    return {
        "safe_after_s": None if safe is None else safe - last_state,
        "stale_after": sc.stale_after,
        "recovered": back is not None,
        "recovered_after_s": None if back is None else back - end,
    }


def series(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """Two strings in parallel of two 8-cell packs in series each, otherwise as feed-in."""
    return simulate(_scenario("series", seed, overrides, series=2, cells=8))[0]


DAY_S = 14400  #: a compressed day of the cell-health procedure [s]


def cell_health(seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """A compressed week of daily cycles with load steps; weak cells among healthy ones.

    Seven days of :data:`DAY_S` (PV over the first half, loads switching in bursts of 2-5 min
    day and night, packs 5 °C warmer at noon and colder at night) on two 100 Ah packs, with
    three weak cells among the healthy ones' spread (capacity ±2 %, resistance ±10 %): pack 1
    cell 5 (resistance x1.75), pack 2 cell 11 (capacity x0.85), pack 2 cell 3 (both). Reports
    each cell's estimated resistance (at 25 °C) and capacity (against its pack's median) against
    the plant's, which cells are weak (resistance >= 1.5x or capacity <= 90 % of the pack's
    median) and which were flagged.
    """
    sc = _scenario(
        "cell-health", seed, overrides, duration=7 * DAY_S, day_s=DAY_S, capacity_ah=100.0,
        start_soc=60.0, pv_w=7000.0, base_load_w=800.0, burst_load_w=3000.0, temp_swing_c=5.0,
        temp_start_c=22.0, temp_end_c=22.0,
        weak_cells=((1, 5, 1.75, 1.0), (2, 11, 1.0, 0.85), (2, 3, 1.75, 0.85)),
    )  # fmt: skip
    metrics, rec = simulate(sc)
    metrics.update(_cell_health_metrics(rec))
    return metrics


def _cell_health_metrics(rec: Recorder) -> dict[str, Any]:
    """Estimated against true cells: resistance error, weak cells flagged or missed."""
    from statistics import median

    health = rec.engine.cells
    errors, cap_errors, weak, flagged, status = [], [], [], [], {}
    for pid, pack in zip(rec.plant.ids, rec.plant.bank.packs, strict=True):
        learnt = health.packs[pid]
        summary = learnt.summary()
        status[pid] = summary["status"]
        r_mid = median(c.r25_ohm for c in pack.cells)
        cap_mid = median(c.capacity_ah for c in pack.cells)
        for k, cell in enumerate(pack.cells):
            est = summary["resistance"][k]
            if est is not None:
                errors.append(abs(est / 1000.0 - cell.r25_ohm) / cell.r25_ohm)
            cap = summary["capacity"][k]
            if cap is not None:
                cap_errors.append(abs(cap - 100.0 * cell.capacity_ah / cap_mid))
            if cell.r25_ohm >= 1.5 * r_mid or cell.capacity_ah <= 0.9 * cap_mid:
                weak.append(f"{pid} C{k + 1}")
        flagged += [f"{pid} C{k + 1}" for k in sorted(learnt.flagged())]
    return {
        "cell_status": status,
        "resistance_error_max_pct": round(100.0 * max(errors), 1) if errors else None,
        "resistance_estimated": len(errors),
        "missing_resistance": sum(len(p.cells) for p in rec.plant.bank.packs) - len(errors),
        "capacity_error_max_pct": round(max(cap_errors), 1) if cap_errors else None,
        "capacity_estimated": len(cap_errors),
        "weak_cells": weak,
        "flagged_cells": flagged,
        "missed": [c for c in weak if c not in flagged],
        "false_flags": [c for c in flagged if c not in weak],
    }


#: procedure name -> function(seed, **overrides) -> metrics
PROCEDURES: dict[str, Callable[..., dict[str, Any]]] = {
    "feed-in": feed_in,
    "imbalance": imbalance,
    "excess-pv": excess_pv,
    "cold-charge": cold_charge,
    "pack-lost": pack_lost,
    "all-lost": all_lost,
    "series": series,
    "cell-health": cell_health,
}


def run(name: str, seed: int = 1, **overrides: Any) -> dict[str, Any]:
    """Run procedure ``name`` with ``seed``; ``overrides`` set :class:`Scenario` fields.

    Raises:
        KeyError: unknown procedure.
        TypeError: unknown override.

    """
    return PROCEDURES[name](seed, **overrides)
