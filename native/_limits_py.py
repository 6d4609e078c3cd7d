"""Pure-Python twin of :mod:`bmsbank.native._limits`: the bank limits engine (same API and results).

One :class:`Engine` per bank. ``step(t, states, seen)`` is called once per cycle with the latest
validated state of every configured pack (``None`` when never seen) and the engine time [s] it was
received; time comes only from the caller, so runs are deterministic. The engine owns everything
that must survive between cycles: charge state, CVL and its ramps and holds, current holds and
ramps, strings that waited to rejoin, days since the last full charge, coulomb counter and
averaged current.

Units: V, A (+ = charge), Ah, %, °C, s. Reasons are tuples ``(rule, pack, item, value, amount,
share)``: the rule's name (see :data:`RULES`), the pack index (-1 = the bank), the cell or sensor
index (-1 = none), the measured value that triggered the rule (NaN = none), the limit the rule gives
[A or V], and the string's share of the bank current (NaN for CVL). Text is made from them
elsewhere (``bmsbank.services.arbiter.reasons``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.native._packs_py import (
    CHARGE_BLOCKING,
    DISCHARGE_BLOCKING,
    INF,
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

BULK, ABSORPTION, FLOAT = "bulk", "absorption", "float"
CHARGE_STATES = (BULK, ABSORPTION, FLOAT)

#: rule names a reason can carry
RULES = (
    "config", "bms", "cell_table", "temperature_window", "temperature_table", "no_temperature",
    "soc_table", "mosfet_table", "fet", "alarm", "cells_mismatch", "no_pack", "recovering",
    "no_cells", "state", "bms_cvl", "unseen", "cell_over", "ramp", "held", "resume",
)  # fmt: skip

ABSORPTION_ENTRY = 0.010  # V per cell below the target at which the bank counts as at voltage
OVP_MIN_CURRENT = 1.0  # A; below it the bank is not charging and a CVL cut would only drain it
DAY = 86400.0


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
        self.v_max = float(p["cell_charge_voltage"])
        self.v_float = float(p["cell_float_voltage"])
        self.v_min = float(p["cell_low_voltage"])
        self.v_offline = float(p["offline_cell_voltage"])
        self.v_reset = float(p["soc_reset_voltage"])
        self.reset_every = float(p["soc_reset_days"]) * DAY
        self.full_every = float(p["full_charge_days"]) * DAY
        self.absorption_time = float(p["absorption_time"])
        self.absorption_limit = float(p["absorption_limit"])
        self.absorption_spread = float(p["absorption_spread"])
        self.rebulk_soc = float(p["rebulk_soc"])
        self.rebulk_spread = float(p["rebulk_spread"])
        self.cvl_interval = float(p["cvl_interval"])
        self.cvl_ramp = float(p["cvl_ramp"]) * float(p["cvl_interval"]) / 60.0  # V/cell per step
        self.ovp_hold = float(p["ovp_hold"])
        self.ovp_release = float(p["ovp_release"])
        self.current_hold = float(p["current_hold"])
        self.current_ramp = float(p["current_ramp"])
        self.rejoin_window = float(p["rejoin_window"])
        self.safe_ccl = float(p["safe_ccl"])
        self.safe_dcl = float(p["safe_dcl"])
        self.by_capacity = bool(p["share_by_capacity"])
        self.coulomb = bool(p["coulomb_counting"])
        self.avg_time = float(p["current_average_time"])
        self.soc_points = [float(x) for x in p["time_to_soc"]]
        # what survives between cycles
        self.t = NAN
        self.state = BULK
        self.state_since = NAN
        self.reset_active = False
        self.cells = configured_cells(self.strings, self.cells_cfg)
        self.cvl = NAN
        self.cvl_changed = NAN
        self.cvl_why: tuple = reason("no_cells", -1, -1, NAN, 0.0)
        self.was_unseen = True  #: some pack was unseen at the previous cycle
        self.cvl_before = NAN  #: CVL when the bank last lost sight of a pack
        self.seen_since = NAN  #: since when every pack reports again (NaN: some pack unseen)
        self.ovp_until = -INF
        self.ccl = NAN
        self.dcl = NAN
        self.ccl_until = -INF
        self.dcl_until = -INF
        self.ccl_cut: tuple = reason("no_pack", -1, -1, NAN, 0.0)
        self.dcl_cut: tuple = reason("no_pack", -1, -1, NAN, 0.0)
        self.joined = [False] * len(self.strings)
        self.last_full = [NAN] * self.n
        self.last_reset = NAN
        self.cc_soc = NAN
        self.current_avg = NAN

    # ---- per pack -----------------------------------------------------------------------------

    # ---- per cycle ----------------------------------------------------------------------------

    def step(self, t: float, states: Sequence[Any], seen: Sequence[float]) -> dict:
        """Run one cycle at engine time ``t`` [s].

        Args:
            t: engine time [s]; never earlier than the previous call.
            states: per pack, the latest validated state message, or None when never seen.
            seen: per pack, the engine time its latest state arrived (NaN when never).

        Returns:
            dict: cvl, ccl, dcl [V, A], charge_state, reasons {cvl, ccl, dcl}, counts (online,
            offline, waiting, blocking_charge, blocking_discharge), measurements (voltage,
            current, current_avg, power, soc, capacity, remaining; NaN when no string reports),
            cell and temperature extremes with pack and item indexes, cells (series cells of the
            bank), spread, unseen (bool), full_due (bool), since_full [s] (longest, NaN unknown),
            time_to_go [s], time_to_soc {point: s}, and ``packs``: per pack [online, joined,
            ccl, ccl_why, dcl, dcl_why].
        """
        dt = t - self.t if self.t == self.t else 0.0
        if dt < 0.0:
            dt = 0.0
        self.t = t
        n = self.n
        limit = self.v_max  # cell voltage the over-voltage cut holds the highest cell to
        if self.v_reset > 0.0 and (
            self.reset_active or self.cvl > self.cells * self.v_max + 1e-9
        ):  # a SoC-reset cycle, and the ramp back down after it
            limit = self.v_reset
        packs: list = [None] * n
        online = 0
        first_unseen = -1
        for k in range(n):
            s = states[k]
            when = seen[k]
            if s is not None and when == when and t - when <= self.stale_after:
                packs[k] = self.rules.evaluate(k, s, limit)
                online += 1
            elif first_unseen < 0:
                first_unseen = k
        bank = self._strings(states, packs)
        self._state_machine(t, bank, first_unseen >= 0)
        cvl_why = self._charge_voltage(t, bank, limit, first_unseen)
        ccl, ccl_why, dcl, dcl_why = self._currents(t, dt, bank, packs)
        self._soc(dt, bank)
        out = extremes(packs)
        out.update(
            t=t,
            cvl=self.cvl if self.cvl == self.cvl else 0.0,
            ccl=ccl,
            dcl=dcl,
            charge_state=self.state,
            reasons={
                "cvl": cvl_why,
                "ccl": ccl_why,
                "dcl": dcl_why,
                "ccl_cut": self.ccl_cut,
                "dcl_cut": self.dcl_cut,
            },  # fmt: skip
            online=online,
            offline=n - online,
            waiting=bank["waiting"],
            unseen=first_unseen >= 0,
            blocking_charge=sum(1 for q in packs if q is not None and q[0] <= 0.0),
            blocking_discharge=sum(1 for q in packs if q is not None and q[2] <= 0.0),
            cells=self.cells,
            **self._measurements(bank),
        )
        out["packs"] = [
            [True, self._joined_pack(k), q[0], q[1], q[2], q[3], t - self.last_full[k]]
            if q is not None
            else [False, False, 0.0, reason("no_pack", k, -1, NAN, 0.0), 0.0,
                  reason("no_pack", k, -1, NAN, 0.0), t - self.last_full[k]]
            for k, q in enumerate(packs)
        ]  # fmt: skip
        return out

    def _joined_pack(self, k: int) -> bool:
        for i in range(len(self.strings)):
            if k in self.strings[i]:
                return self.joined[i]
        return False

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

    def _state_machine(self, t: float, bank: dict, unseen: bool) -> None:
        """Bulk -> absorption -> float -> bulk."""
        if self.cells == 0:
            return
        if self.state_since != self.state_since:
            self.state_since = t
        joined = bank["joined"]
        target = self.v_reset if self.reset_active else self.v_max
        at_voltage = any(
            row["cell_sum"] / row["cells"] >= target - ABSORPTION_ENTRY or row["max_cell"] >= target
            for row in joined
        )
        gap = spread(joined)
        since = t - self.state_since
        if self.state == BULK:
            self.reset_active = self._reset_due(t)
            if at_voltage and not unseen:
                self._enter(ABSORPTION, t)
        elif self.state == ABSORPTION:
            if unseen:
                self._enter(BULK, t)
            elif self.reset_active and at_voltage:
                self.reset_active = False
                self.last_reset = t
            elif (since >= self.absorption_time and gap <= self.absorption_spread) or (
                since >= self.absorption_limit
            ):
                self._full(t, bank)
                self._enter(FLOAT, t)
        elif self.state == FLOAT:
            soc = self._bank_soc(bank)
            if (soc == soc and soc < self.rebulk_soc) or gap >= self.rebulk_spread:
                self._enter(BULK, t)
            elif self._full_due(t) or self._reset_due(t):
                self._enter(BULK, t)

    def _enter(self, state: str, t: float) -> None:
        self.state = state
        self.state_since = t

    def _full(self, t: float, bank: dict) -> None:
        """A full charge: every pack of a joined string is full; resynchronise the counter."""
        for i in range(len(self.strings)):
            if self.joined[i]:
                for k in self.strings[i]:
                    self.last_full[k] = t
        if self.coulomb and bank["joined"]:
            self.cc_soc = 100.0

    def _full_due(self, t: float) -> bool:
        for k in range(self.n):
            when = self.last_full[k]
            if when != when or t - when >= self.full_every:
                return True
        return False

    def _reset_due(self, t: float) -> bool:
        if self.v_reset <= 0.0:
            return False
        return self.last_reset != self.last_reset or t - self.last_reset >= self.reset_every

    def _charge_voltage(self, t: float, bank: dict, limit: float, unseen: int) -> tuple:
        """CVL: state target, cut at once to protect cells, otherwise changed slowly."""
        n = self.cells
        if n == 0:  # no CVL yet (0 V on the output); the first real one is set at once
            self.cvl_why = reason("no_cells", -1, -1, NAN, 0.0)
            return self.cvl_why
        per_cell = self.v_float
        if self.state != FLOAT:
            per_cell = self.v_reset if self.reset_active else self.v_max
        target = n * per_cell
        why = reason("state", -1, -1, per_cell, target)
        ceiling = INF  # protective limits: applied at once
        ceiling_why = why
        if unseen >= 0:
            ceiling = n * self.v_offline
            ceiling_why = reason("unseen", unseen, -1, NAN, ceiling)
        for row in bank["complete"]:
            if row["bms_cvl"] < ceiling:
                ceiling = row["bms_cvl"]
                ceiling_why = reason("bms_cvl", row["bms_cvl_pack"], -1, NAN, ceiling)
        high = -INF
        for row in bank["joined"]:
            if row["max_cell"] > high:
                high = row["max_cell"]
            if row["excess"] > 0.0:
                self.ovp_until = t + self.ovp_hold
                cand = row["cell_sum"] - row["excess"]
                if cand < n * self.v_min:
                    cand = n * self.v_min
                if cand < ceiling and row["current"] > OVP_MIN_CURRENT:
                    ceiling = cand
                    ceiling_why = reason(
                        "cell_over", row["max_pack"], row["max_index"], row["max_cell"], cand
                    )
        if ceiling < target:
            target, why = ceiling, ceiling_why
        cvl = self._resume(t, target, why, unseen >= 0)
        if cvl != cvl:
            self.cvl, self.cvl_changed, self.cvl_why = target, t, why
        elif cvl > ceiling:
            self.cvl, self.cvl_changed, self.cvl_why = ceiling, t, ceiling_why
        elif t - self.cvl_changed >= self.cvl_interval:
            step = self.cvl_ramp * n
            if target < cvl:
                self.cvl = cvl - step if cvl - step > target else target
                self.cvl_changed = t
                self.cvl_why = _ramped(self.cvl, target, why)
            elif target > cvl:
                if unseen >= 0:  # cells nobody sees: never raise
                    self.cvl_why = reason("unseen", unseen, -1, NAN, self.cvl)
                elif t >= self.ovp_until and high <= limit - self.ovp_release:
                    self.cvl = cvl + step if cvl + step < target else target
                    self.cvl_changed = t
                    self.cvl_why = _ramped(self.cvl, target, why)
                else:
                    self.cvl_why = reason("held", -1, -1, high, target)
            else:
                self.cvl_why = why
        return self.cvl_why

    def _resume(self, t: float, target: float, why: tuple, unseen: bool) -> float:
        """CVL once every pack reports again: back where it was before (never above target).

        The conservative cap while a pack was unseen holds a full bank below its own voltage and
        drains it into the grid; ramping up from there would go on draining for many minutes. Only
        once every pack has reported for ``cvl_interval`` (at once for the first full view after
        start), so a pack that keeps dropping out leaves CVL capped instead of swinging with it.
        """
        cvl = self.cvl
        if unseen:
            if not self.was_unseen:
                self.cvl_before = cvl
            self.was_unseen = True
            self.seen_since = NAN
            return cvl
        if not self.was_unseen or cvl != cvl:
            self.was_unseen = False
            return cvl
        if self.seen_since != self.seen_since:
            self.seen_since = t
        if self.cvl_before != self.cvl_before or t - self.seen_since >= self.cvl_interval:
            back = target if self.cvl_before != self.cvl_before else min(self.cvl_before, target)
            if back > cvl:
                cvl = self.cvl = back
                self.cvl_changed = t
                self.cvl_why = why if back == target else reason("resume", -1, -1, NAN, back)
            self.was_unseen = False
        return cvl
        if self.seen_since != self.seen_since:
            self.seen_since = t
        if self.cvl_before != self.cvl_before or t - self.seen_since >= self.cvl_interval:
            back = target if self.cvl_before != self.cvl_before else min(self.cvl_before, target)
            if back > cvl:
                cvl = self.cvl = back
                self.cvl_changed = t
                self.cvl_why = why if back == target else reason("resume", -1, -1, NAN, back)
            self.was_unseen = False
        return cvl

    def _currents(self, t: float, dt: float, bank: dict, packs: list) -> tuple:
        """CCL and DCL: shares of the joined strings, cuts at once, hold then ramp."""
        joined = bank["joined"]
        if not joined:
            why = reason("no_pack", -1, -1, NAN, 0.0)
            if self.ccl != self.ccl:  # never had limits: the first real ones apply at once
                return self.safe_ccl, why, self.safe_dcl, why
            self.ccl, self.dcl = self.safe_ccl, self.safe_dcl
            # no hold after the safe state: packs that report again ramp up from it at once
            self.ccl_until = self.dcl_until = t
            self.ccl_cut = self.dcl_cut = why
            return self.ccl, why, self.dcl, why
        total = sum(row["capacity"] for row in joined)
        # by capacity only when every string has a share (a capacity of ~0 Ah would underflow)
        by_cap = self.by_capacity and total > 0.0
        by_cap = by_cap and all(row["capacity"] / total > 0.0 for row in joined)
        raw_c, why_c = INF, None
        raw_d, why_d = INF, None
        for row in joined:
            share = row["capacity"] / total if by_cap else 1.0 / len(joined)
            if row["ccl"] / share < raw_c:
                raw_c = row["ccl"] / share
                why_c = row["ccl_why"][:5] + (share,)
            if row["dcl"] / share < raw_d:
                raw_d = row["dcl"] / share
                why_d = row["dcl_why"][:5] + (share,)
        for q in packs:  # a waiting pack that blocks still blocks the bank
            if q is not None and q[0] <= 0.0 and raw_c > 0.0:
                raw_c, why_c = 0.0, q[1]
            if q is not None and q[2] <= 0.0 and raw_d > 0.0:
                raw_d, why_d = 0.0, q[3]
        if bank["mismatch"]:
            raw_c, why_c = 0.0, reason("cells_mismatch", -1, -1, NAN, 0.0)
        rate = self.current_ramp * sum(row["packs"] for row in joined) * dt
        self.ccl, self.ccl_until, self.ccl_cut, why_c = _follow(
            self.ccl, raw_c, why_c, t, self.ccl_until, self.ccl_cut, self.current_hold, rate
        )
        self.dcl, self.dcl_until, self.dcl_cut, why_d = _follow(
            self.dcl, raw_d, why_d, t, self.dcl_until, self.dcl_cut, self.current_hold, rate
        )
        return self.ccl, why_c, self.dcl, why_d

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
                "full_due": self._full_due(self.t), "since_full": self._since_full(),
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
            "full_due": self._full_due(self.t),
            "since_full": self._since_full(),
        }

    def _since_full(self) -> float:
        worst = 0.0
        for k in range(self.n):
            when = self.last_full[k]
            if when != when:
                return NAN
            if self.t - when > worst:
                worst = self.t - when
        return worst

    # ---- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """What must survive a restart, as ages relative to the last step (JSON-friendly)."""
        return {
            "since_full": [None if x != x else self.t - x for x in self.last_full],
            "since_reset": None if self.last_reset != self.last_reset else self.t - self.last_reset,
            "soc": None if self.cc_soc != self.cc_soc else self.cc_soc,
        }

    def restore(self, t: float, snap: Mapping[str, Any]) -> None:
        """Take back a :meth:`snapshot` at engine time ``t`` (ages are counted from ``t``)."""
        ages = snap.get("since_full") or []
        for k in range(min(self.n, len(ages))):
            if ages[k] is not None:
                self.last_full[k] = t - float(ages[k])
        if snap.get("since_reset") is not None:
            self.last_reset = t - float(snap["since_reset"])
        if snap.get("soc") is not None and self.coulomb:
            self.cc_soc = float(snap["soc"])


def _ramped(cvl: float, target: float, why: tuple) -> tuple:
    """The target's reason once CVL is there, else "ramping"."""
    return why if cvl == target else reason("ramp", -1, -1, NAN, target)


def _follow(
    out: float,
    raw: float,
    why: Any,
    t: float,
    until: float,
    cut: tuple,
    hold: float,
    rate: float,
) -> tuple[float, float, tuple, tuple]:
    """A current limit that falls at once and rises only after ``hold`` s, by ``rate`` A/step.

    Returns:
        (limit, hold-until time, reason of the last cut, reason now).
    """
    if out != out or raw <= out:
        if out == out and raw < out:
            until, cut = t + hold, why
        return raw, until, cut, why
    if t < until:
        return out, until, cut, reason("held", -1, -1, NAN, raw)
    new = out + rate
    if new >= raw:
        return raw, until, cut, why
    return new, until, cut, reason("recovering", -1, -1, NAN, raw)


__all__ = [
    "ABSORPTION", "BULK", "CHARGE_BLOCKING", "CHARGE_STATES", "DISCHARGE_BLOCKING", "FLOAT",
    "IMPLEMENTATION", "RULES", "Engine", "PackRules", "fraction",
]  # fmt: skip
