"""Cell health: each cell's internal resistance and relative capacity, and weak-cell warnings.

It reads the states the limits engine reads and never changes the limits. Three measurements per
pack, from cell voltages and the pack current of the same state (one reply of the BMS, or the
nearest pair its family gives; docs/CELL_HEALTH.md):

- **Resistance.** Between two states at most :data:`MAX_GAP_S` apart whose current differs by at
  least a step (``[bank] cell_step``, default a tenth of the capacity per hour, at least
  :data:`MIN_STEP_A`), each cell's ΔV / ΔI is its internal resistance: the open-circuit voltage
  does not move in a second, the drop across the cell does. A cell balancing in either state is
  left out (its current is not the pack's); an event whose median is not positive (readings not
  of the same moment) is dropped and counted; a sample beyond :data:`OUTLIER` times the event's
  median is an outlier. Samples are normalised to 25 °C (:func:`r25_factor`) and each cell's
  estimate is the median of its last :data:`WINDOW` samples, given from :data:`MIN_STEPS` on.
- **Capacity.** Over the upper knee of a charge (open-circuit voltage from :data:`KNEE_LOW_V`
  to :data:`KNEE_HIGH_V`, estimated as the terminal voltage less I·R with the cell's own
  resistance), every cell takes the same ampere-hours, so the charge counted between a cell's two
  crossings is proportional to its capacity whatever its state of charge: that charge against
  the pack's median cell, median of the last :data:`CAP_WINDOW` charges, from
  :data:`MIN_CHARGES` on.
- **Rank.** The cell that first reaches ``cell_charge_voltage`` in a charge (first high) and
  first falls to :data:`LOW_MARK_V` in a discharge (first low), with its lead over the pack's
  median cell; a cell first by at least :data:`LEAD_V` in :data:`RANK_REPEAT` of the last
  :data:`RANK_WINDOW` passes is named.

Cost: a state costs a few comparisons and the coulomb count; the per-cell work runs only at a
current step or while a cell is in the upper knee; the summary is rebuilt at most every
:data:`REBUILD_S` (bench/cell_health.py). The thresholds are LiFePO4's, the one chemistry the
bank supports.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

MAX_GAP_S = 3.0  #: two states further apart are no pair
MIN_STEP_A = 5.0  #: the least current step [A] whatever the capacity
STEP_C = 0.1  #: the default step: a tenth of the pack's capacity [A per Ah]
OUTLIER = 4.0  #: a sample beyond this many times (or below 1/this of) its event's median is dropped
WINDOW = 64  #: resistance samples kept per cell
MIN_STEPS = 8  #: samples before a cell's resistance is given
#: cells above or below these terminal voltages [V] make no resistance sample: off the flat part
#: of the curve the open-circuit voltage moves within the second and the cell polarises more
FLAT_HIGH_V, FLAT_LOW_V = 3.50, 3.00
KNEE_LOW_V, KNEE_HIGH_V = 3.36, 3.40  #: LiFePO4 open-circuit voltages bounding the upper knee
CAP_WINDOW = 10  #: capacity samples (charges) kept per cell
MIN_CHARGES = 3  #: charges measured before a cell's capacity is given
LOW_MARK_V = 3.15  #: a discharge's "first low" mark [V]
LEAD_V = 0.020  #: a first cell leads the median by this much [V] to count
RANK_WINDOW, RANK_REPEAT, RANK_MIN = 10, 7, 5  #: of the last 10 passes, 7 (having seen 5)
REARM_V = 0.05  #: a rank pass rearms once the cells are this far back from its mark [V]
#: a knee pass rearms once the highest cell is below this [V]: out of the knee, a new charge to
#: come (a load burst within a charge dips less and keeps the pass)
KNEE_REARM_V = 3.30
#: the knee is followed only while the pack charges with at least this (a hundredth of its
#: capacity per hour, at least KNEE_MIN_A): in float nothing moves and nothing is computed
KNEE_C, KNEE_MIN_A = 0.01, 0.5
REBUILD_S = 10.0  #: seconds between two rebuilds of a pack's summary (when it changed)
R_COLD_PER_C = 0.03  #: resistance grows 3 % per °C below 25 °C ...
R_WARM_PER_C = 0.01  #: ... and falls 1 % per °C above it (to at most 30 % less)


def r25_factor(temp_c: float) -> float:
    """Resistance at ``temp_c`` [°C] over resistance at 25 °C (a linear fit of LiFePO4 data)."""
    if temp_c < 25.0:
        return 1.0 + R_COLD_PER_C * (25.0 - temp_c)
    return max(0.7, 1.0 - R_WARM_PER_C * (temp_c - 25.0))


def _temperature(state: Mapping[str, Any]) -> float:
    temps = state["temperatures"]
    return sum(temps) / len(temps) if temps else 25.0


@dataclass(frozen=True)
class Settings:
    """The ``[bank]`` keys of cell health.

    Attributes:
        charge_v: ``cell_charge_voltage`` [V], the "first high" mark.
        step_a: ``cell_step``: the least current step [A]; 0 = a tenth of the capacity (>= 5 A).
        resistance: ``weak_cell_resistance``: a cell this many times its pack's median is weak.
        capacity: ``weak_cell_capacity``: a cell at or below this % of its pack's median is weak.

    """

    charge_v: float = 3.45
    step_a: float = 0.0
    resistance: float = 1.4
    capacity: float = 92.0


class _Rank:
    """Which cell crosses a mark first, pass after pass (first high in charges, first low ...)."""

    __slots__ = ("armed", "firsts", "passes")

    def __init__(self) -> None:
        self.armed = False
        self.passes = 0  #: passes seen since the start
        self.firsts: deque[int | None] = deque(maxlen=RANK_WINDOW)  #: cell, or None: no clear one

    def first(self, cells: Sequence[float], which: Callable[..., int]) -> bool:
        """A pass reached its mark: note its first cell (``max`` or ``min``) if it leads clearly."""
        self.armed = False
        self.passes += 1
        k = which(range(len(cells)), key=cells.__getitem__)
        lead = abs(cells[k] - median(cells))
        self.firsts.append(k if lead >= LEAD_V else None)
        return True

    def repeat(self, k: int) -> int:
        """How often cell ``k`` was first in the passes kept."""
        return sum(1 for x in self.firsts if x == k)


class PackCells:
    """What is learnt of one pack's cells (see the module docstring)."""

    def __init__(self, pack: str, capacity_ah: float, settings: Settings) -> None:
        """Learn pack ``pack`` of ``capacity_ah`` [Ah] (0: as its states report)."""
        self.pack = pack
        self.settings = settings
        self.capacity_ah = capacity_ah
        self.step_a = 0.0  #: the least current step [A], set with the capacity
        self.knee_a = 0.0  #: the least charge current [A] at which the knee is followed
        self.n = 0
        self.prev: tuple[float, float, Sequence[float], Sequence[int]] | None = None
        self.r: list[deque[float]] = []
        self.cap: list[deque[float]] = []
        self.steps = 0  #: current steps used
        self.dropped = 0  #: current steps dropped (median not positive, too few cells)
        self.charges = 0  #: knee passes measured
        self.ah = 0.0  #: charge counted since the start [Ah]
        self.knee: tuple[list[float | None], list[float | None]] | None = None
        self.knee_touched = False  #: a cell of this pass crossed a knee voltage
        self.high, self.low = _Rank(), _Rank()
        self.high_back = settings.charge_v - REARM_V
        self.estimates: list[float | None] = []  #: per cell [Ω at 25 °C], rebuilt with the summary
        self.new_samples = False  #: resistance samples taken since :attr:`estimates`
        self.dirty = True  #: learnt something since the summary was built
        self.out: dict[str, Any] | None = None  #: the summary (see CellHealth.summary)
        self.built = 0.0  #: when it was built (monotonic [s])

    def reset(self, n: int) -> None:
        """A new cell count: forget everything (another pack, or a BMS reconfigured)."""
        self.n = n
        self.r = [deque(maxlen=WINDOW) for _ in range(n)]
        self.cap = [deque(maxlen=CAP_WINDOW) for _ in range(n)]
        self.estimates = [None] * n
        self.steps = self.charges = self.dropped = 0
        self.new_samples, self.knee, self.knee_touched = False, None, False
        self.high, self.low = _Rank(), _Rank()
        self.dirty, self.out = True, None

    def observe(self, state: Mapping[str, Any]) -> None:
        """Take one accepted state of this pack (a few comparisons unless something happens)."""
        cells = state["cells"]
        if len(cells) != self.n or not self.step_a:
            self._first(state)
            if not cells:
                return
        mono, amps = state["mono"], state["current"]
        high, low = state["max_cell_voltage"], state["min_cell_voltage"]
        if high >= self.high_back:  # near the first-high mark
            if self.high.armed and amps > 0.0 and high >= self.settings.charge_v:
                self.dirty = self.high.first(cells, max)
        elif not self.high.armed:
            self.high.armed = True
        if low <= LOW_MARK_V + REARM_V:  # near the first-low mark
            if self.low.armed and amps < 0.0 and low <= LOW_MARK_V:
                self.dirty = self.low.first(cells, min)
        elif not self.low.armed:
            self.low.armed = True
        prev, self.prev = self.prev, (mono, amps, cells, state["balancing"])
        if prev is None:
            return
        dt = mono - prev[0]
        if not 0.0 < dt <= MAX_GAP_S:
            self.knee = None  # a gap in the coulomb count: this knee pass is lost
            return
        self.ah += (amps + prev[1]) * dt / 7200.0  # trapezoid, A·s -> Ah
        if abs(amps - prev[1]) >= self.step_a:
            self._step(prev, state)
        if high < KNEE_REARM_V:
            if self.knee is None or self.knee_touched:
                self.knee = ([None] * self.n, [None] * self.n)  # armed for the next charge
                self.knee_touched = False
        elif high >= KNEE_LOW_V and amps > self.knee_a and self.knee is not None:
            self._knee(cells, amps, _temperature(state))  # only charge moves a cell up the knee

    def _first(self, state: Mapping[str, Any]) -> None:
        """The first state, one with another cell count, or the first after a restore."""
        if len(state["cells"]) != self.n:
            self.reset(len(state["cells"]))
            self.prev = None
        capacity = self.capacity_ah or state["capacity"] or 0.0
        self.step_a = self.settings.step_a or max(MIN_STEP_A, STEP_C * capacity)
        self.knee_a = max(KNEE_MIN_A, KNEE_C * capacity)

    def _step(
        self, prev: tuple[float, float, Sequence[float], Sequence[int]], state: Mapping[str, Any]
    ) -> None:
        """A current step: one resistance sample per cell that was not balancing."""
        cells, amps, balancing = state["cells"], state["current"], state["balancing"]
        before = prev[2]
        if not (FLAT_LOW_V <= state["min_cell_voltage"] and state["max_cell_voltage"] <= FLAT_HIGH_V
                and FLAT_LOW_V <= min(before) and max(before) <= FLAT_HIGH_V):  # fmt: skip
            return
        per_amp = 1.0 / ((amps - prev[1]) * r25_factor(_temperature(state)))
        bal_before = prev[3]
        samples = [
            None if balancing[k] or bal_before[k] else (cells[k] - before[k]) * per_amp
            for k in range(self.n)
        ]
        valid = [r for r in samples if r is not None]
        mid = median(valid) if 2 * len(valid) >= self.n else 0.0
        if mid <= 0.0:
            self.dropped += 1
            return
        for k, r in enumerate(samples):
            if r is not None and mid / OUTLIER <= r <= mid * OUTLIER:
                self.r[k].append(r)
        self.steps += 1
        self.dirty = self.new_samples = True

    def _knee(self, cells: Sequence[float], amps: float, temp_c: float) -> None:
        """In the upper knee: note the charge at which each cell crosses its two voltages."""
        assert self.knee is not None
        lows, highs = self.knee
        if self.new_samples:  # resistance samples since the estimates were taken
            self._estimates()
        factor = amps * r25_factor(temp_c)
        for k, volts in enumerate(cells):
            if highs[k] is not None:
                continue
            r = self.estimates[k]
            if r is None:  # no resistance yet: no open-circuit estimate, no pass
                self.knee = None
                return
            ocv = volts - factor * r
            if lows[k] is None:
                if ocv >= KNEE_HIGH_V:  # jumped the knee within a second: no measure
                    self.knee = None
                    return
                if ocv >= KNEE_LOW_V:
                    lows[k] = self.ah
                    self.knee_touched = True
            elif ocv >= KNEE_HIGH_V:
                highs[k] = self.ah
        if any(h is None for h in highs):
            return
        spans = [h - lo for h, lo in zip(highs, lows, strict=True)]  # type: ignore[operator]
        mid = median(spans)
        self.knee = None
        if mid <= 0.0:  # crossed at once: nothing measured
            return
        for k, span in enumerate(spans):
            self.cap[k].append(100.0 * span / mid)
        self.charges += 1
        self.dirty = True

    # -- what it says ----------------------------------------------------------------------------
    def _estimates(self) -> tuple[list[float | None], float | None, list[float | None]]:
        """Per cell resistance [Ω at 25 °C], their median, per cell capacity [% of the median]."""
        r = [median(s) if len(s) >= MIN_STEPS else None for s in self.r]
        self.estimates, self.new_samples = r, False
        known = [x for x in r if x is not None]
        cap = [median(s) if len(s) >= MIN_CHARGES else None for s in self.cap]
        return r, median(known) if known else None, cap

    def summary(self) -> dict[str, Any]:
        """The pack summary's ``cell_health`` (see :mod:`bmsbank.status_schema`)."""
        r, mid, cap = self._estimates()
        known = [x for x in r if x is not None]
        if not known and not any(c is not None for c in cap):
            status = "not enough data"
        else:
            status = "ok" if len(known) == self.n else "learning"
        return {
            "status": status,
            "resistance": [None if x is None else round(1000.0 * x, 3) for x in r],
            "resistance_median": None if mid is None else round(1000.0 * mid, 3),
            "capacity": [None if c is None else round(c, 1) for c in cap],
            "steps": self.steps,
            "charges": self.charges,
            "warnings": self._sign() + [text for _, text in self._findings(r, mid, cap)],
        }

    def _findings(
        self, r: list[float | None], mid: float | None, cap: list[float | None]
    ) -> Iterable[tuple[int, str]]:
        """(cell index, warning) for every weak-cell finding."""
        weak = self.settings
        for k in range(self.n):
            name, rk, ck = f"{self.pack} cell {k + 1}", r[k], cap[k]
            if rk is not None and mid and rk / mid >= weak.resistance:
                yield (
                    k,
                    f"{name}: resistance {rk / mid:.1f}× the pack median ({len(self.r[k])} steps)",
                )
            if ck is not None and ck <= weak.capacity:
                yield k, (f"{name}: ~{100.0 - ck:.0f} % less capacity than the pack median "
                          f"({len(self.cap[k])} charges)")  # fmt: skip
            less = "" if ck is None or ck > 97.0 else f", ~{100.0 - ck:.0f} % less capacity"
            for rank, how, mark, passes in (
                (self.high, "reaches", weak.charge_v, "charges"),
                (self.low, "falls to", LOW_MARK_V, "discharges"),
            ):
                n, seen = rank.repeat(k), len(rank.firsts)
                if seen >= RANK_MIN and n >= min(RANK_REPEAT, seen):
                    yield k, (f"{name}: {how} {mark:.2f} V first in {n} of the last {seen} "
                              f"{passes}{less}")  # fmt: skip

    def _sign(self) -> list[str]:
        """A pack whose every step went the wrong way: its current's sign is inverted."""
        if self.steps or self.dropped < MIN_STEPS:
            return []
        return [
            f"{self.pack}: at each of {self.dropped} current steps the cells' voltages moved "
            "against the current: is its sign inverted (the family's invert_current)?"
        ]

    def flagged(self) -> set[int]:
        """Indexes (from 0) of the cells with a warning now."""
        r, mid, cap = self._estimates()
        return {k for k, _ in self._findings(r, mid, cap)}


class CellHealth:
    """The bank's packs' cell health, fed every accepted state (see the module docstring)."""

    def __init__(self, capacities: Mapping[str, float], settings: Settings) -> None:
        """Learn the packs of ``capacities`` (pack id -> capacity [Ah], 0 = as reported)."""
        self.packs = {pid: PackCells(pid, cap, settings) for pid, cap in capacities.items()}

    def observe(self, state: Mapping[str, Any]) -> None:
        """Take one accepted (validated, plausible) state."""
        pack = self.packs.get(state["pack"])
        if pack is not None:
            pack.observe(state)

    def learnt(self) -> int:
        """A count that grows whenever something is learnt (steps, charges, rank passes)."""
        return sum(p.steps + p.charges + p.high.passes + p.low.passes for p in self.packs.values())

    def summary(self, pid: str, now: float) -> dict[str, Any] | None:
        """Pack ``pid``'s ``cell_health`` at monotonic ``now``: the same object until it changed.

        None while no state of the pack was seen. A changed pack is rebuilt at most every
        :data:`REBUILD_S` seconds, so readers may compare it by identity.
        """
        pack = self.packs.get(pid)
        if pack is None or not pack.n:
            return None
        if pack.out is None or (pack.dirty and now - pack.built >= REBUILD_S):
            pack.out, pack.built, pack.dirty = pack.summary(), now, False
        return pack.out
