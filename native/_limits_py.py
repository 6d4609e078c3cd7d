"""Pure-Python twin of :mod:`bmsbank.native._limits`: the bank limits engine (same API and results).

Ported line by line to ``_limits.pyx`` (same names in the same order, same comments). One
:class:`Engine` per bank. ``step(t, states, seen)`` is called once per cycle with the latest
validated state of every configured pack (``None`` when never seen) and the engine time [s] it was
received; time comes only from the caller, so runs are deterministic. The engine owns everything
that must survive between cycles: strings that waited to rejoin, coulomb counter and averaged
current here, through its :class:`ChargeControl` (``_charge_py``) the charge state, CVL and its
ramps and holds, and when each pack was last full, and through its :class:`CurrentLimits`
(``_currents_py``) CCL and DCL with their holds, ramps and last cuts. The per-pack and per-string
kernels are in ``_packs_py``.

Units: V, A (+ = charge), Ah, %, °C, s. Reasons are tuples ``(rule, pack, item, value, amount,
share)``: the rule's name (see :data:`RULES`), the pack index (-1 = the bank), the cell or sensor
index (-1 = none), the measured value that triggered the rule (NaN = none), the limit the rule gives
[A or V], and the string's share of the bank current (NaN for CVL). Text is made from them
elsewhere (``bmsbank.services.arbiter.reasons``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.native._charge_py import (
    ABSORPTION,
    BULK,
    CHARGE_STATES,
    FLOAT,
    ChargeControl,
)
from bmsbank.native._currents_py import CurrentLimits
from bmsbank.native._packs_py import (
    CHARGE_BLOCKING,
    DISCHARGE_BLOCKING,
    NAN,
    PackRules,
    configured_cells,
    extremes,
    fraction,
    reason,
    spread,
    string_row,
)

IMPLEMENTATION = "python"

#: rule names a reason can carry
RULES = (
    "config", "bms", "cell_table", "temperature_window", "temperature_table", "no_temperature",
    "soc_table", "mosfet_table", "fet", "alarm", "cells_mismatch", "no_pack", "recovering",
    "no_cells", "state", "bms_cvl", "unseen", "cell_over", "ramp", "held", "resume",
)  # fmt: skip


class Engine:
    """The bank limits engine (see the module docstring)."""

    def __init__(
        self,
        params: Mapping[str, Any],
        strings: Sequence[Sequence[int]],
        cells: Sequence[int],
        capacities: Sequence[float],
    ) -> None:
        """Set up a bank.

        Args:
            params: numbers and tables from the ``[bank]`` config (see ``docs/CONFIG.md``).
            strings: strings in parallel, each a list of pack indexes in series.
            cells: cells in series per pack (0 = as the pack reports).
            capacities: capacity per pack [Ah] (0 = as the pack reports).

        """
        p = params
        self.rules = PackRules(p)
        self.n = len(cells)
        self.strings = [list(s) for s in strings]
        self.cells_cfg = [int(c) for c in cells]
        self.caps_cfg = [float(c) for c in capacities]
        self.stale_after = float(p["stale_after"])
        self.charge = ChargeControl(p, self.n)  # the charge side: its parameters and state
        self.currents = CurrentLimits(p)  # the current side: its parameters and state
        self.rejoin_window = float(p["rejoin_window"])
        self.coulomb = bool(p["coulomb_counting"])
        self.avg_time = float(p["current_average_time"])
        self.soc_points = [float(x) for x in p["time_to_soc"]]
        # what survives between cycles
        self.t = NAN
        self.cells = configured_cells(self.strings, self.cells_cfg)
        self.joined = [False] * len(self.strings)
        self.cc_soc = NAN
        self.current_avg = NAN

    @property
    def state(self) -> str:
        """The charge state (one of :data:`CHARGE_STATES`)."""
        return self.charge.state

    @property
    def cvl(self) -> float:
        """The charge voltage limit [V] (NaN before the first)."""
        return self.charge.cvl

    @property
    def ccl(self) -> float:
        """The charge current limit [A] (NaN before the first joined string)."""
        return self.currents.ccl

    @property
    def dcl(self) -> float:
        """The discharge current limit [A] (NaN before the first joined string)."""
        return self.currents.dcl

    # ---- per pack -----------------------------------------------------------------------------

    def _evaluate(
        self, t: float, states: Sequence[Any], seen: Sequence[float], limit: float, packs: list
    ) -> tuple[int, int]:
        """Limits and figures of every pack online into ``packs`` (None for the others).

        Returns:
            (packs online, first pack not online (-1 = none)).
        """
        online = 0
        first_unseen = -1
        for k in range(self.n):
            s = states[k]
            when = seen[k]
            if s is not None and when == when and t - when <= self.stale_after:
                packs[k] = self.rules.evaluate(k, s, limit)
                online += 1
            elif first_unseen < 0:
                first_unseen = k
        return online, first_unseen

    def _pack_rows(self, t: float, packs: list) -> list:
        """Per pack [online, joined, ccl, ccl_why, dcl, dcl_why, since full [s]]."""
        return [
            [True, self._joined_pack(k), q[0], q[1], q[2], q[3], t - self.charge.last_full[k]]
            if q is not None
            else [False, False, 0.0, reason("no_pack", k, -1, NAN, 0.0), 0.0,
                  reason("no_pack", k, -1, NAN, 0.0), t - self.charge.last_full[k]]
            for k, q in enumerate(packs)
        ]  # fmt: skip

    def _joined_pack(self, k: int) -> bool:
        for i in range(len(self.strings)):
            if k in self.strings[i]:
                return self.joined[i]
        return False

    # ---- per cycle ----------------------------------------------------------------------------

    def step(self, t: float, states: Sequence[Any], seen: Sequence[float]) -> dict:
        """Run one cycle at engine time ``t`` [s].

        Args:
            t: engine time [s]; never earlier than the previous call.
            states: per pack, the latest validated state message, or None when never seen.
            seen: per pack, the engine time its latest state arrived (NaN when never).

        Returns:
            dict: cvl, ccl, dcl [V, A], charge_state, reasons {cvl, ccl, dcl, ccl_cut, dcl_cut},
            counts (online, offline, waiting, blocking_charge, blocking_discharge), measurements
            (voltage, current, current_avg, power, soc, capacity, remaining; NaN when no string
            reports), cell and temperature extremes with pack and item indexes, cells (series
            cells of the bank), spread, unseen (bool), full_due (bool), since_full [s] (longest,
            NaN unknown), time_to_go [s], time_to_soc {point: s}, and ``packs`` (``_pack_rows``).
        """
        dt = t - self.t if self.t == self.t else 0.0
        if dt < 0.0:
            dt = 0.0
        self.t = t
        n = self.n
        limit = self.charge.limit(self.cells)  # cell voltage the over-voltage cut holds cells to
        packs: list = [None] * n
        online, first_unseen = self._evaluate(t, states, seen, limit, packs)
        bank = self._strings(states, packs)
        soc = self._bank_soc(bank)
        unseen = first_unseen >= 0
        if self.charge.state_machine(t, bank, self.cells, unseen, soc, self.strings, self.joined):
            self._full(bank)
        cvl_why = self.charge.charge_voltage(t, bank, self.cells, limit, first_unseen)
        ccl, ccl_why, dcl, dcl_why = self.currents.limits(t, dt, bank, packs)
        self._soc(dt, bank)
        out = extremes(packs)
        out.update(
            t=t,
            cvl=self.charge.cvl if self.charge.cvl == self.charge.cvl else 0.0,
            ccl=ccl,
            dcl=dcl,
            charge_state=self.charge.state,
            reasons={
                "cvl": cvl_why,
                "ccl": ccl_why,
                "dcl": dcl_why,
                "ccl_cut": self.currents.ccl_cut,
                "dcl_cut": self.currents.dcl_cut,
            },  # fmt: skip
            online=online,
            offline=n - online,
            waiting=bank["waiting"],
            unseen=unseen,
            blocking_charge=sum(1 for q in packs if q is not None and q[0] <= 0.0),
            blocking_discharge=sum(1 for q in packs if q is not None and q[2] <= 0.0),
            cells=self.cells,
            **self._measurements(bank),
        )
        out["packs"] = self._pack_rows(t, packs)
        return out

    def _strings(self, states: Sequence[Any], packs: list) -> dict:
        """Series sums per string, rejoin checks, and the parallel combination of joined strings."""
        rows = []
        ref_sum = 0.0
        ref_n = 0
        for i in range(len(self.strings)):
            members = self.strings[i]
            row = None
            if all(packs[k] is not None for k in members):
                row = string_row(members, states, packs, self.cells_cfg, self.caps_cfg)
                if self.joined[i]:
                    ref_sum += row["voltage"]
                    ref_n += 1
            else:
                self.joined[i] = False
            rows.append(row)
        waiting = self._rejoin(rows, ref_sum, ref_n)
        joined = [rows[i] for i in range(len(rows)) if rows[i] is not None and self.joined[i]]
        complete = [row for row in rows if row is not None]
        counts = [row["cells"] for row in complete]
        if counts:
            self.cells = min(counts)
        return {
            "joined": joined,
            "complete": complete,
            "waiting": waiting,
            "mismatch": bool(counts) and min(counts) != max(counts),
        }

    def _rejoin(self, rows: list, ref_sum: float, ref_n: int) -> int:
        """Join each complete string within the rejoin window of the joined ones' mean voltage.

        Returns:
            packs in the strings left waiting.
        """
        waiting = 0
        for i in range(len(rows)):
            row = rows[i]
            if row is None or self.joined[i]:
                continue
            window = self.rejoin_window * row["cells"]
            if ref_n == 0 or abs(row["voltage"] - ref_sum / ref_n) <= window:
                self.joined[i] = True
            else:
                waiting += len(self.strings[i])
        return waiting

    def _full(self, bank: dict) -> None:
        """A full charge (``self.charge`` says when): resynchronise the counter."""
        if self.coulomb and bank["joined"]:
            self.cc_soc = 100.0

    def _bank_soc(self, bank: dict) -> float:
        if self.coulomb and self.cc_soc == self.cc_soc:
            return self.cc_soc
        joined = bank["joined"]
        cap = sum(row["capacity"] for row in joined)
        if not joined:
            return NAN
        if cap <= 0.0:
            return sum(row["soc"] for row in joined) / len(joined)
        return sum(row["soc"] * row["capacity"] for row in joined) / cap

    def _soc(self, dt: float, bank: dict) -> None:
        """Coulomb counter and averaged current (only while some string reports)."""
        joined = bank["joined"]
        if not joined:
            return
        current = sum(row["current"] for row in joined)
        cap = sum(row["capacity"] for row in joined)
        if self.current_avg != self.current_avg:
            self.current_avg = current
        elif dt > 0.0:
            self.current_avg += (current - self.current_avg) * dt / (self.avg_time + dt)
        if not self.coulomb:
            return
        if self.cc_soc != self.cc_soc:
            self.cc_soc = self._bank_soc({"joined": joined})
        elif cap > 0.0 and 0.0 < dt <= self.stale_after:
            soc = self.cc_soc + current * dt / 36.0 / cap
            self.cc_soc = 0.0 if soc < 0.0 else (100.0 if soc > 100.0 else soc)

    def _measurements(self, bank: dict) -> dict:
        joined = bank["joined"]
        soc = self._bank_soc(bank)
        if not joined:
            return {
                "voltage": NAN, "current": NAN, "current_avg": NAN, "power": NAN, "soc": NAN,
                "capacity": 0.0, "remaining": 0.0, "time_to_go": NAN,
                "time_to_soc": {p: NAN for p in self.soc_points}, "spread": NAN,
                "full_due": self.charge.full_due(self.t),
                "since_full": self.charge.since_full(self.t),
                "state_for": self.t - self.charge.state_since,
                "ovp_left": max(0.0, self.charge.ovp_until - self.t),
            }  # fmt: skip
        cap = sum(row["capacity"] for row in joined)
        avg = self.current_avg
        remaining = soc * cap / 100.0
        ttg = remaining / -avg * 3600.0 if avg < -0.01 else NAN
        to_soc = {}
        for point in self.soc_points:
            if avg > 0.01 and point > soc:
                to_soc[point] = (point - soc) * cap / 100.0 / avg * 3600.0
            elif avg < -0.01 and point < soc:
                to_soc[point] = (soc - point) * cap / 100.0 / -avg * 3600.0
            else:
                to_soc[point] = NAN
        return {
            "voltage": sum(row["voltage"] for row in joined) / len(joined),
            "current": sum(row["current"] for row in joined),
            "current_avg": avg,
            "power": sum(row["power"] for row in joined),
            "soc": soc,
            "capacity": cap,
            "remaining": remaining,
            "time_to_go": ttg,
            "time_to_soc": to_soc,
            "spread": spread(joined),
            "full_due": self.charge.full_due(self.t),
            "since_full": self.charge.since_full(self.t),
            "state_for": self.t - self.charge.state_since,
            "ovp_left": max(0.0, self.charge.ovp_until - self.t),
        }

    # ---- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """What must survive a restart, as ages relative to the last step (JSON-friendly)."""
        snap = self.charge.snapshot(self.t)  # since_full, since_reset
        snap["soc"] = None if self.cc_soc != self.cc_soc else self.cc_soc
        return snap

    def restore(self, t: float, snap: Mapping[str, Any]) -> None:
        """Take back a :meth:`snapshot` at engine time ``t`` (ages are counted from ``t``).

        Raises:
            ValueError: ``snap`` is not a snapshot of this bank (:func:`check_snapshot`); the
                engine is left as it was.
        """
        snap = check_snapshot(snap, self.n)
        self.charge.restore(t, snap)
        if snap.get("soc") is not None and self.coulomb:
            self.cc_soc = float(snap["soc"])


MAX_AGE = 100 * 365 * 86400.0  #: s; an older "last full charge" is not a real one


def check_snapshot(snap: Any, n: int) -> dict:
    """A :meth:`Engine.snapshot` of a bank of ``n`` packs, checked field by field.

    Shared by both engines (not a hot path), so they accept and refuse exactly the same. A
    missing key is unknown (None); unknown keys are ignored.

    Returns:
        {"since_full": n ages [s] or None, "since_reset": age [s] or None, "soc": % or None}.

    Raises:
        ValueError: not a mapping, ``since_full`` not a list of ``n``, an age that is not a
            number from 0 to :data:`MAX_AGE`, a SoC that is not a number from 0 to 100.
    """
    if not isinstance(snap, Mapping):
        raise ValueError(f"snapshot: expected a mapping, got {type(snap).__name__}")
    ages = snap.get("since_full")
    if ages is None:
        ages = [None] * n
    if not isinstance(ages, (list, tuple)) or len(ages) != n:
        got = f"{len(ages)} items" if isinstance(ages, (list, tuple)) else type(ages).__name__
        raise ValueError(f"since_full: expected a list of {n} ages (one per pack), got {got}")
    return {
        "since_full": [_optional(a, f"since_full[{k}]", MAX_AGE) for k, a in enumerate(ages)],
        "since_reset": _optional(snap.get("since_reset"), "since_reset", MAX_AGE),
        "soc": _optional(snap.get("soc"), "soc", 100.0),
    }


def _optional(x: Any, name: str, high: float) -> float | None:
    """None, or ``x`` as a float when it is a number from 0 to ``high`` (else ValueError)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{name}: expected a number or null, got {type(x).__name__}")
    if not 0.0 <= x <= high:  # false for NaN; compared before converting (huge integers)
        raise ValueError(f"{name}: {str(x)[:32]} is not from 0 to {high:g}")
    return float(x)


__all__ = [
    "ABSORPTION", "BULK", "CHARGE_BLOCKING", "CHARGE_STATES", "DISCHARGE_BLOCKING", "FLOAT",
    "IMPLEMENTATION", "MAX_AGE", "RULES", "Engine", "PackRules", "check_snapshot", "fraction",
]  # fmt: skip
