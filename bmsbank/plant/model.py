"""Electrical model of a LiFePO4 bank on a Victron DVCC/ESS system.

Cells are voltage sources (open-circuit voltage from SoC) behind a resistance. A pack is cells in
series inside a BMS with two FETs, a passive balancer and cell over/under-voltage protection. A
string is packs in series; strings sit in parallel on one DC bus. The chargers and the inverter
follow the limits a BMS sends (CVL, CCL, DCL) as seed 004 §1.5 describes. Units: V, A (+ =
charge), Ah, W, Ω, °C, s; SoC in %.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# (SoC %, open-circuit cell voltage V): flat 20-80 %, steep knee above 3.40 V (3.45 V -> 3.60 V
# in 0.6 % of charge), low knee under 10 %. Outside the table the curve goes on at OCV_EDGE_SLOPE
# so that over-charge and over-discharge stay visible instead of saturating.
LFP_OCV = (
    (0.0, 2.50), (2.0, 2.80), (5.0, 3.00), (10.0, 3.18), (15.0, 3.22), (20.0, 3.25),
    (30.0, 3.27), (40.0, 3.285), (50.0, 3.295), (60.0, 3.305), (70.0, 3.315), (80.0, 3.33),
    (85.0, 3.335), (90.0, 3.345), (93.0, 3.355), (95.0, 3.365), (96.0, 3.375), (97.0, 3.39),
    (97.5, 3.40), (98.0, 3.415), (98.5, 3.43), (99.0, 3.45), (99.2, 3.48), (99.4, 3.53),
    (99.6, 3.60), (99.8, 3.63), (100.0, 3.66),
)  # fmt: skip
OCV_EDGE_SLOPE = 0.5  # V per % beyond either end of the table
_SOCS = [s for s, _ in LFP_OCV]
_VOLTS = [v for _, v in LFP_OCV]

CELL_R_OHM = 0.5e-3  # Ω for a 280 Ah cell at 25 °C; scales as 1/capacity
CELL_R_REF_AH = 280.0
R_COLD_PER_C = 0.03  # resistance grows 3 % per °C below 25 °C
R_WARM_PER_C = 0.01  # ... and falls 1 % per °C above it (to at most 30 % less)
CABLE_OHM = 2e-3  # Ω of busbars and cables per pack
TOP_REFERENCE_V = 3.45  # V: cell OCV at which a set imbalance is measured ("top of charge")

OV_TRIP_V, OV_RELEASE_V = 3.65, 3.55  # BMS opens the charge FET / closes it again
UV_TRIP_V, UV_RELEASE_V = 2.60, 2.90  # BMS opens the discharge FET / closes it again
BALANCE_START_V = 3.40  # balancer works only while the highest cell is above this
BALANCE_DELTA_V = 0.010  # ... on cells this far above the lowest
BALANCE_A = 0.1  # bleed current per balanced cell

Limits = tuple[float, float, float]  #: what a BMS sends: CVL [V], CCL [A], DCL [A]


def _interp(x: float, xs: list[float], ys: list[float], edge_slope: float) -> float:
    """Piecewise-linear y(x) through (xs, ys), extended beyond both ends with ``edge_slope``."""
    if x <= xs[0]:
        return ys[0] + (x - xs[0]) * edge_slope
    if x >= xs[-1]:
        return ys[-1] + (x - xs[-1]) * edge_slope
    k = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def ocv(soc: float) -> float:
    """Open-circuit voltage [V] of a LiFePO4 cell at ``soc`` [%] (any value, also beyond 0-100)."""
    return _interp(soc, _SOCS, _VOLTS, OCV_EDGE_SLOPE)


def soc_at_ocv(volts: float) -> float:
    """SoC [%] at which a cell's open-circuit voltage is ``volts`` (inverse of :func:`ocv`)."""
    return _interp(volts, _VOLTS, _SOCS, 1.0 / OCV_EDGE_SLOPE)


@dataclass
class Cell:
    """One cell: stored charge [Ah] out of ``capacity_ah``, resistance at 25 °C [Ω]."""

    capacity_ah: float
    charge_ah: float
    r25_ohm: float

    @property
    def soc(self) -> float:
        """State of charge [%], above 100 when over-charged."""
        return 100.0 * self.charge_ah / self.capacity_ah

    def resistance(self, temp_c: float) -> float:
        """Internal resistance [Ω] at ``temp_c``: higher in the cold, a little lower warm."""
        if temp_c < 25.0:
            return self.r25_ohm * (1.0 + R_COLD_PER_C * (25.0 - temp_c))
        return self.r25_ohm * max(0.7, 1.0 - R_WARM_PER_C * (temp_c - 25.0))


@dataclass
class Pack:
    """Cells in series behind a BMS. ``refresh`` before reading ``emf_v``/``r_ohm``."""

    cells: list[Cell]
    capacity_ah: float  #: nominal, what the BMS reports
    temperature_c: float = 25.0
    sensor_offsets_c: tuple[float, ...] = (0.0, 0.3)
    cable_ohm: float = CABLE_OHM
    charge_fet: bool = True
    discharge_fet: bool = True
    tripped: bool = False  #: a protection ever opened a FET
    current_a: float = 0.0
    bleed: list[bool] = field(default_factory=list)
    terminal_v: list[float] = field(default_factory=list)
    emf_v: float = 0.0
    r_ohm: float = 0.0
    _ocv: list[float] = field(default_factory=list)
    _r: list[float] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        rng: random.Random,
        cells: int = 16,
        capacity_ah: float = 280.0,
        start_soc: float = 85.0,
        high_cell_mv: float = 0.0,
        spread: float = 0.02,
        weak: Mapping[int, tuple[float, float]] | None = None,
    ) -> Pack:
        """A top-balanced pack (every cell the same Ah below full) with seeded spreads.

        Args:
            rng: the run's random source.
            cells: cells in series.
            capacity_ah: nominal capacity [Ah]; each cell differs by up to ``spread``.
            start_soc: nominal SoC [%] at the start.
            high_cell_mv: cell 1 holds extra charge so that its OCV is this many mV above the
                others when they sit at TOP_REFERENCE_V.
            spread: relative capacity spread (resistance spreads 5 times as much).
            weak: cell index (from 0) -> (resistance factor, capacity factor) applied on top of
                the spread: the pack's weak cells.

        """
        missing_ah = (100.0 - start_soc) / 100.0 * capacity_ah
        top = TOP_REFERENCE_V
        extra_pct = soc_at_ocv(top + high_cell_mv / 1000.0) - soc_at_ocv(top)
        out = []
        for k in range(cells):
            r_factor, cap_factor = (weak or {}).get(k, (1.0, 1.0))
            cap = capacity_ah * (1.0 + rng.uniform(-spread, spread)) * cap_factor
            r = CELL_R_OHM * CELL_R_REF_AH / capacity_ah * (1.0 + rng.uniform(-5, 5) * spread)
            r *= r_factor
            extra = extra_pct / 100.0 * cap if k == 0 else 0.0
            out.append(Cell(cap, cap - missing_ah + extra, r))
        offsets = (round(rng.uniform(-0.3, 0.3), 2), round(rng.uniform(-0.3, 0.3), 2))
        pack = cls(out, capacity_ah, sensor_offsets_c=offsets, bleed=[False] * cells)
        pack.refresh()
        pack.set_current(0.0)
        return pack

    def refresh(self) -> None:
        """Recompute cell OCVs and resistances after charge or temperature changed."""
        self._ocv = [ocv(c.soc) for c in self.cells]
        self._r = [c.resistance(self.temperature_c) for c in self.cells]
        # a bleeding cell's own current is I - BALANCE_A, seen from outside as a lower EMF
        self.emf_v = sum(
            e - BALANCE_A * r * b for e, r, b in zip(self._ocv, self._r, self.bleed, strict=True)
        )
        self.r_ohm = sum(self._r) + self.cable_ohm

    def set_current(self, amps: float) -> None:
        """Let ``amps`` flow through the pack and update the cell terminal voltages [V]."""
        self.current_a = amps
        self.terminal_v = [
            e + (amps - BALANCE_A * b) * r
            for e, r, b in zip(self._ocv, self._r, self.bleed, strict=True)
        ]

    def protect(self) -> bool:
        """BMS cell protection on the terminal voltages; True when a FET changed."""
        high, low = max(self.terminal_v), min(self.terminal_v)
        before = (self.charge_fet, self.discharge_fet)
        if high >= OV_TRIP_V:
            self.charge_fet = False
        elif not self.charge_fet and high < OV_RELEASE_V:
            self.charge_fet = True
        if low <= UV_TRIP_V:
            self.discharge_fet = False
        elif not self.discharge_fet and low > UV_RELEASE_V:
            self.discharge_fet = True
        changed = before != (self.charge_fet, self.discharge_fet)
        self.tripped |= changed and not (self.charge_fet and self.discharge_fet)
        return changed

    def step(self, dt_s: float) -> None:
        """Integrate the current and the balancer over ``dt_s``, then decide what to bleed next."""
        for cell, b in zip(self.cells, self.bleed, strict=True):
            cell.charge_ah += (self.current_a - BALANCE_A * b) * dt_s / 3600.0
        low, high = min(self.terminal_v), max(self.terminal_v)
        on = high > BALANCE_START_V
        self.bleed = [on and v - low > BALANCE_DELTA_V for v in self.terminal_v]

    @property
    def soc(self) -> float:
        """SoC [%] the BMS reports: the cells' mean, clamped to 0-100."""
        return min(100.0, max(0.0, sum(c.soc for c in self.cells) / len(self.cells)))

    @property
    def sensors_c(self) -> list[float]:
        """Temperature sensor readings [°C], at the sensors' 0.1 °C resolution."""
        return [round(self.temperature_c + off, 1) for off in self.sensor_offsets_c]

    def fields(self) -> dict[str, Any]:
        """The fields a BMS plugin would decode from this pack now (see ``make_state``)."""
        # FETs open only on cell protection here, so an open FET is an active alarm
        alarms: dict[str, int] = {}
        if not self.charge_fet:
            alarms["high_cell_voltage"] = 2
        if not self.discharge_fet:
            alarms["low_cell_voltage"] = 2
        soc = self.soc
        return {
            "voltage": round(sum(self.terminal_v) + self.current_a * self.cable_ohm, 2),
            "current": round(self.current_a, 2),
            "soc": round(soc, 1),
            "capacity": self.capacity_ah,
            "remaining": round(self.capacity_ah * soc / 100.0, 1),
            "cells": [round(v, 3) for v in self.terminal_v],
            "balancing": [int(b) for b in self.bleed],
            "temperatures": self.sensors_c,
            "mosfet_temperature": round(self.temperature_c + 2.0 + 0.02 * abs(self.current_a), 1),
            "charge_fet": self.charge_fet,
            "discharge_fet": self.discharge_fet,
            "alarms": alarms,
        }


@dataclass
class String:
    """Packs in series: a source ``emf_v`` behind ``r_ohm``, gated by every pack's FETs."""

    packs: list[Pack]
    emf_v: float = 0.0
    r_ohm: float = 0.0

    def refresh(self) -> None:
        """Recompute EMF [V] and resistance [Ω] from the packs."""
        for p in self.packs:
            p.refresh()
        self.emf_v = sum(p.emf_v for p in self.packs)
        self.r_ohm = sum(p.r_ohm for p in self.packs)

    @property
    def can_charge(self) -> bool:
        """No pack in the string has its charge FET open."""
        return all(p.charge_fet for p in self.packs)

    @property
    def can_discharge(self) -> bool:
        """No pack in the string has its discharge FET open."""
        return all(p.discharge_fet for p in self.packs)

    def current_at(self, bus_v: float) -> float:
        """String current [A] at bus voltage ``bus_v``: (V - E) / R, zero where a FET blocks."""
        amps = (bus_v - self.emf_v) / self.r_ohm
        if (amps > 0 and not self.can_charge) or (amps < 0 and not self.can_discharge):
            return 0.0
        return amps


@dataclass
class Bank:
    """Strings in parallel on one DC bus; bank current is piecewise linear in bus voltage."""

    strings: list[String]

    @property
    def packs(self) -> list[Pack]:
        """Every pack, string by string."""
        return [p for s in self.strings for p in s.packs]

    def refresh(self) -> None:
        """Recompute every string after charge or temperature changed."""
        for s in self.strings:
            s.refresh()

    def current_at(self, bus_v: float) -> float:
        """Battery current [A] at bus voltage ``bus_v``."""
        return sum(s.current_at(bus_v) for s in self.strings)

    def current_range(self) -> tuple[float, float]:
        """Lowest and highest battery current [A] any bus voltage can produce (±inf if free)."""
        low = -math.inf if any(s.can_discharge for s in self.strings) else 0.0
        high = math.inf if any(s.can_charge for s in self.strings) else 0.0
        return low, high

    def voltage_at(self, amps: float) -> float:
        """Bus voltage [V] at which the bank takes ``amps`` (closed form per linear segment).

        Blocked strings bend the curve at their EMF, so the knots are the string EMFs; between
        two knots the curve is a straight line. Returns ±inf when ``amps`` is out of reach.
        """
        knots = sorted({s.emf_v for s in self.strings})
        level = [self.current_at(v) for v in knots]
        if amps <= level[0]:
            slope = sum(1 / s.r_ohm for s in self.strings if s.can_discharge)
            if slope == 0:
                return knots[0] if amps == level[0] else -math.inf
            return knots[0] - (level[0] - amps) / slope
        if amps >= level[-1]:
            slope = sum(1 / s.r_ohm for s in self.strings if s.can_charge)
            if slope == 0:
                return knots[-1] if amps == level[-1] else math.inf
            return knots[-1] + (amps - level[-1]) / slope
        k = bisect.bisect_left(level, amps)  # level[k-1] < amps <= level[k]
        v0, v1, i0, i1 = knots[k - 1], knots[k], level[k - 1], level[k]
        return v0 + (amps - i0) * (v1 - v0) / (i1 - i0)

    def current_for_power(self, watts: float, low: float, high: float) -> float:
        """Current [A] in [low, high] with which the bank absorbs ``watts`` (I·V(I) = P)."""
        reach_lo, reach_hi = self.current_range()
        low, high = max(low, reach_lo), min(high, reach_hi)
        volts = self.voltage_at(min(high, max(low, 0.0)))
        amps = 0.0
        for _ in range(4):  # V barely moves with I (R·I << V): a few fixed-point steps converge
            amps = min(high, max(low, watts / volts))
            volts = self.voltage_at(amps)
        return amps

    def apply(self, bus_v: float) -> None:
        """Put the bank on a bus at ``bus_v``: set every pack's current and cell voltages."""
        for s in self.strings:
            amps = s.current_at(bus_v)
            for p in s.packs:
                p.set_current(amps)

    def step(self, dt_s: float) -> None:
        """Advance every pack by ``dt_s``."""
        for p in self.packs:
            p.step(dt_s)


@dataclass(frozen=True)
class Operating:
    """One operating point of the DC bus. Powers [W] are DC-side."""

    bus_v: float
    battery_a: float
    feed_w: float  #: exported to the grid by the inverter
    drained_w: float  #: part of ``feed_w`` that came out of the battery
    curtailed_w: float  #: PV the MPPT did not harvest


@dataclass
class Ess:
    """MPPT solar charger + ESS inverter/charger following CVL, CCL and DCL (DVCC).

    The inverter holds the bus at CVL by exporting up to ``feed_max_w``; the MPPT never lets the
    bus above CVL + ``mppt_offset_v``; chargers never push more than CCL into the battery and the
    inverter never takes more than DCL out of it (the grid covers the loads beyond that).
    """

    feed_max_w: float = 10000.0
    mppt_offset_v: float = 0.4

    def solve(self, bank: Bank, limits: Limits | None, pv_w: float, load_w: float) -> Operating:
        """Operating point for ``limits`` = (CVL [V], CCL [A], DCL [A]), or None for no BMS."""
        if limits is None:  # no BMS parameters: DVCC stops charging and discharging
            return self._result(bank, 0.0, 0.0, pv_w, load_w)
        cvl, ccl, dcl = limits[0], max(0.0, limits[1]), max(0.0, limits[2])
        target = bank.current_for_power(pv_w - load_w, -dcl, ccl)
        at_cvl = bank.current_at(cvl)
        if target <= at_cvl:  # the bus stays below CVL on its own
            return self._result(bank, target, 0.0, pv_w, load_w)
        # the inverter exports what the battery does not take at CVL; if the battery's OCV is
        # above CVL that includes discharging it (a too-low CVL drains the battery into the grid)
        wanted_w = target * bank.voltage_at(target)  # what the chargers deliver, CCL applied
        hold = max(at_cvl, -dcl)
        feed = wanted_w - hold * bank.voltage_at(hold)
        if feed <= self.feed_max_w:
            return self._result(bank, hold, feed, pv_w, load_w)
        # export saturated: the rest raises the bus until the MPPT regulates it at CVL + offset.
        # Curtailing PV lowers the battery current at most to where the battery alone feeds the
        # inverter: a battery above CVL + offset then holds the bus above it.
        cap = bank.current_at(cvl + self.mppt_offset_v)
        floor = bank.current_for_power(-(load_w + self.feed_max_w), -dcl, 0.0)
        amps = max(floor, bank.current_for_power(wanted_w - self.feed_max_w, -dcl, cap))
        feed = min(self.feed_max_w, wanted_w - amps * bank.voltage_at(amps))
        return self._result(bank, amps, feed, pv_w, load_w)

    @staticmethod
    def _result(bank: Bank, amps: float, feed_w: float, pv_w: float, load_w: float) -> Operating:
        volts = bank.voltage_at(amps)
        battery_w = amps * volts
        curtailed = min(pv_w, max(0.0, pv_w - load_w - battery_w - feed_w))
        drained = min(feed_w, max(0.0, -battery_w))
        return Operating(volts, amps, feed_w, drained, curtailed)


@dataclass(frozen=True)
class LoadSchedule:
    """AC loads [W]: a constant base plus seeded bursts (start s, end s, W)."""

    base_w: float
    bursts: tuple[tuple[float, float, float], ...]

    @classmethod
    def seeded(
        cls,
        rng: random.Random,
        duration_s: float,
        base_w: float = 300.0,
        burst_w: float = 3000.0,
        every_s: float = 600.0,
    ) -> LoadSchedule:
        """Bursts of about ``burst_w`` lasting 2-5 min, one roughly every ``every_s``."""
        bursts = []
        t = rng.uniform(0.1, 1.0) * every_s
        while t < duration_s:
            length = rng.uniform(120.0, 300.0)
            bursts.append((t, t + length, burst_w * rng.uniform(0.8, 1.2)))
            t += length + rng.uniform(0.5, 1.5) * every_s
        return cls(base_w, tuple(bursts))

    def power_at(self, t_s: float) -> float:
        """Load [W] at time ``t_s``."""
        return self.base_w + sum(w for a, b, w in self.bursts if a <= t_s < b)
