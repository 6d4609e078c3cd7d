"""Pure-Python twin of the charge side of :mod:`bmsbank.native._limits`: :class:`ChargeControl`.

Ported line by line to ``_charge.pxi`` (same names in the same order, same comments). One
:class:`ChargeControl` per bank, owned by the engine (:class:`._limits_py.Engine`), which passes in
what it needs each cycle: the bank's strings (``Engine._strings``), its series cells, the first
unseen pack, the bank SoC and which strings are joined. It holds:

- the charge state machine: bulk -> absorption -> float -> bulk, the SoC-reset cycle, when each
  pack was last full (and when the bank last reset its SoC), whether a full charge is due;
- the charge voltage limit (CVL): the state's target, protective cuts applied at once, holds and
  slow ramps otherwise, and the resume after a pack was unseen;
- the cell voltage the over-voltage cut holds the highest cell to (:meth:`ChargeControl.limit`);
- their part of what survives a restart (:meth:`ChargeControl.snapshot`).

Units: V, A (+ = charge), %, s. Reasons are the engine's tuples (see ``_limits_py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.native._packs_py import INF, NAN, reason, spread

BULK, ABSORPTION, FLOAT = "bulk", "absorption", "float"
CHARGE_STATES = (BULK, ABSORPTION, FLOAT)

ABSORPTION_ENTRY = 0.010  # V per cell below the target at which the bank counts as at voltage
OVP_MIN_CURRENT = 1.0  # A; below it the bank is not charging and a CVL cut would only drain it
DAY = 86400.0


class ChargeControl:
    """Charge state, CVL and full charges of one bank (see the module docstring)."""

    def __init__(self, params: Mapping[str, Any], n: int) -> None:
        """Set up the charge side of a bank.

        Args:
            params: numbers from the ``[bank]`` config (see ``docs/CONFIG.md``).
            n: packs in the bank.

        """
        p = params
        self.n = n
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
        # what survives between cycles
        self.state = BULK
        self.state_since = NAN
        self.reset_active = False
        self.cvl = NAN
        self.cvl_changed = NAN
        self.cvl_why: tuple = reason("no_cells", -1, -1, NAN, 0.0)
        self.was_unseen = True  #: some pack was unseen at the previous cycle
        self.cvl_before = NAN  #: CVL when the bank last lost sight of a pack
        self.seen_since = NAN  #: since when every pack reports again (NaN: some pack unseen)
        self.ovp_until = -INF
        self.last_full = [NAN] * n
        self.last_reset = NAN

    # ---- charge state -------------------------------------------------------------------------

    def limit(self, cells: int) -> float:
        """Cell voltage the over-voltage cut holds the highest cell to, in a bank of ``cells``."""
        limit = self.v_max
        if self.v_reset > 0.0 and (
            self.reset_active or self.cvl > cells * self.v_max + 1e-9
        ):  # a SoC-reset cycle, and the ramp back down after it
            limit = self.v_reset
        return limit

    def state_machine(
        self,
        t: float,
        bank: dict,
        cells: int,
        unseen: bool,
        soc: float,
        strings: Sequence[Sequence[int]],
        joined: Sequence[bool],
    ) -> bool:
        """Bulk -> absorption -> float -> bulk.

        The engine passes the strings this cycle (``bank``, see ``Engine._strings``), the series
        ``cells`` of the bank (0 = not known yet), whether some pack is ``unseen``, the bank's
        ``soc`` [%] (NaN = unknown), and its ``strings`` with which of them are ``joined``.

        Returns:
            True when the bank was just fully charged (the engine resynchronises its SoC).

        """
        if cells == 0:
            return False
        if self.state_since != self.state_since:
            self.state_since = t
        rows = bank["joined"]
        target = self.v_reset if self.reset_active else self.v_max
        at_voltage = any(
            row["cell_sum"] / row["cells"] >= target - ABSORPTION_ENTRY or row["max_cell"] >= target
            for row in rows
        )
        gap = spread(rows)
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
                self._full(t, strings, joined)
                self._enter(FLOAT, t)
                return True
        elif self.state == FLOAT:
            if (soc == soc and soc < self.rebulk_soc) or gap >= self.rebulk_spread:
                self._enter(BULK, t)
            elif self.full_due(t) or self._reset_due(t):
                self._enter(BULK, t)
        return False

    def _enter(self, state: str, t: float) -> None:
        self.state = state
        self.state_since = t

    def _full(self, t: float, strings: Sequence[Sequence[int]], joined: Sequence[bool]) -> None:
        """A full charge: every pack of a joined string is full."""
        for i in range(len(strings)):
            if joined[i]:
                for k in strings[i]:
                    self.last_full[k] = t

    def full_due(self, t: float) -> bool:
        """Some pack was never full, or not for ``full_charge_days``."""
        for k in range(self.n):
            when = self.last_full[k]
            if when != when or t - when >= self.full_every:
                return True
        return False

    def _reset_due(self, t: float) -> bool:
        if self.v_reset <= 0.0:
            return False
        return self.last_reset != self.last_reset or t - self.last_reset >= self.reset_every

    def since_full(self, t: float) -> float:
        """Longest time since a pack was full [s] (NaN when some pack never was)."""
        worst = 0.0
        for k in range(self.n):
            when = self.last_full[k]
            if when != when:
                return NAN
            if t - when > worst:
                worst = t - when
        return worst

    # ---- charge voltage -----------------------------------------------------------------------

    def charge_voltage(self, t: float, bank: dict, cells: int, limit: float, unseen: int) -> tuple:
        """CVL: state target, cut at once to protect cells, otherwise changed slowly.

        Args:
            t: engine time [s].
            bank: the strings this cycle (``Engine._strings``).
            cells: series cells of the bank (0 = not known yet).
            limit: cell voltage the over-voltage cut holds the highest cell to (:meth:`limit`).
            unseen: the first pack not online (-1 = none).

        Returns:
            tuple: the reason of CVL now.

        """
        n = cells
        if n == 0:  # no CVL yet (0 V on the output); the first real one is set at once
            self.cvl_why = reason("no_cells", -1, -1, NAN, 0.0)
            return self.cvl_why
        per_cell = self.v_float
        if self.state != FLOAT:
            per_cell = self.v_reset if self.reset_active else self.v_max
        target = n * per_cell
        why = reason("state", -1, -1, per_cell, target)
        ceiling, ceiling_why, high = self._ceiling(t, bank, n, why, unseen)
        if ceiling < target:
            target, why = ceiling, ceiling_why
        cvl = self._resume(t, target, why, unseen >= 0)
        if cvl != cvl:
            self.cvl, self.cvl_changed, self.cvl_why = target, t, why
        elif cvl > ceiling:
            self.cvl, self.cvl_changed, self.cvl_why = ceiling, t, ceiling_why
        elif t - self.cvl_changed >= self.cvl_interval:
            self._ramp(t, n, cvl, target, why, limit, high, unseen)
        return self.cvl_why

    def _ceiling(
        self, t: float, bank: dict, n: int, why: tuple, unseen: int
    ) -> tuple[float, tuple, float]:
        """Protective limits of CVL: unseen packs, the BMSs' CVLs, cells over the limit.

        Returns:
            (ceiling [V], its reason (``why`` when none), highest cell of the joined strings [V]).
        """
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
        return ceiling, ceiling_why, high

    def _ramp(
        self,
        t: float,
        n: int,
        cvl: float,
        target: float,
        why: tuple,
        limit: float,
        high: float,
        unseen: int,
    ) -> None:
        """One step of CVL towards ``target``: down at once, up only once the cells allow it."""
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

    # ---- persistence --------------------------------------------------------------------------

    def snapshot(self, t: float) -> dict:
        """Ages at ``t`` of each pack's last full charge and of the last SoC reset (or None)."""
        return {
            "since_full": [None if x != x else t - x for x in self.last_full],
            "since_reset": None if self.last_reset != self.last_reset else t - self.last_reset,
        }

    def restore(self, t: float, snap: Mapping[str, Any]) -> None:
        """Take back a :meth:`snapshot` at engine time ``t`` (ages are counted from ``t``)."""
        ages = snap.get("since_full") or []
        for k in range(min(self.n, len(ages))):
            if ages[k] is not None:
                self.last_full[k] = t - float(ages[k])
        if snap.get("since_reset") is not None:
            self.last_reset = t - float(snap["since_reset"])


def _ramped(cvl: float, target: float, why: tuple) -> tuple:
    """The target's reason once CVL is there, else "ramping"."""
    return why if cvl == target else reason("ramp", -1, -1, NAN, target)


__all__ = ["ABSORPTION", "BULK", "CHARGE_STATES", "FLOAT", "ChargeControl"]
