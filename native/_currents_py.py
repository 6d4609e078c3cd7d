"""Pure-Python twin of the current side of :mod:`bmsbank.native._limits`: :class:`CurrentLimits`.

Ported line by line to ``_currents.pxi`` (same names in the same order, same comments). One
:class:`CurrentLimits` per bank, owned by the engine (:class:`._limits_py.Engine`), which passes in
what it needs each cycle: the bank's strings (``Engine._strings``), the per-pack rows, the time and
the time since the previous cycle. It holds:

- the charge and discharge current limits (CCL, DCL): the joined strings' limits over their shares
  of the bank current (by capacity or equal), a pack that blocks blocking the bank, no charge with
  mismatched cell counts, and the safe state when no string is joined;
- how they follow those: cuts applied at once, rises only after a hold, then ramped per pack;
- the reason of the last cut of each (:attr:`CurrentLimits.ccl_cut`, :attr:`CurrentLimits.dcl_cut`).

Units: A (+ = charge), s. Reasons are the engine's tuples (see ``_limits_py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmsbank.native._packs_py import INF, NAN, reason


class CurrentLimits:
    """CCL and DCL of one bank, with their holds and ramps (see the module docstring)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        """Set up the current side of a bank.

        Args:
            params: numbers from the ``[bank]`` config (see ``docs/CONFIG.md``).

        """
        p = params
        self.current_hold = float(p["current_hold"])
        self.current_ramp = float(p["current_ramp"])
        self.safe_ccl = float(p["safe_ccl"])
        self.safe_dcl = float(p["safe_dcl"])
        self.by_capacity = bool(p["share_by_capacity"])
        # what survives between cycles
        self.ccl = NAN
        self.dcl = NAN
        self.ccl_until = -INF
        self.dcl_until = -INF
        self.ccl_cut: tuple = reason("no_pack", -1, -1, NAN, 0.0)
        self.dcl_cut: tuple = reason("no_pack", -1, -1, NAN, 0.0)

    def limits(self, t: float, dt: float, bank: dict, packs: list) -> tuple:
        """CCL and DCL: shares of the joined strings, cuts at once, hold then ramp.

        Args:
            t: engine time [s].
            dt: time since the previous cycle [s].
            bank: the bank's strings (``Engine._strings``).
            packs: per pack, its limits and figures (None when not online).

        Returns:
            (ccl, its reason, dcl, its reason).
        """
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
        raw_c, why_c, raw_d, why_d = self._shares(bank, packs)
        rate = self.current_ramp * sum(row["packs"] for row in joined) * dt
        self.ccl, self.ccl_until, self.ccl_cut, why_c = _follow(
            self.ccl, raw_c, why_c, t, self.ccl_until, self.ccl_cut, self.current_hold, rate
        )
        self.dcl, self.dcl_until, self.dcl_cut, why_d = _follow(
            self.dcl, raw_d, why_d, t, self.dcl_until, self.dcl_cut, self.current_hold, rate
        )
        return self.ccl, why_c, self.dcl, why_d

    def _shares(self, bank: dict, packs: list) -> tuple:
        """The bank's CCL and DCL now, before hold and ramp: the joined strings' over their shares.

        Returns:
            (ccl, its reason, dcl, its reason).
        """
        joined = bank["joined"]
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
        return raw_c, why_c, raw_d, why_d


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
