# Compiled charge side of the bank limits engine, included by _limits.pyx; port of _charge_py.py.
#
# ChargeControl: the charge state machine (bulk -> absorption -> float -> bulk, the SoC-reset cycle,
# when each pack was last full), the charge voltage limit (CVL) with its cuts, holds, ramps and the
# resume after a pack was unseen, and the cell voltage the over-voltage cut holds the highest cell
# to. The engine owns one and passes in what it needs each cycle (see the twin's module docstring).
#
# A line-by-line port: same names, in the same order, as the twin; the twin's bank dict is a Bank,
# its strings the engine's flat arrays (string i is members[start[i]:start[i] + count[i]]), reasons
# are Why structs (_structs.pxi). Every floating-point operation is the twin's, in the twin's order.

from bmsbank.native._charge_py import ABSORPTION, BULK, CHARGE_STATES, FLOAT

cdef double ABSORPTION_ENTRY = 0.010  # V per cell below the target at which the bank counts as at voltage
cdef double OVP_MIN_CURRENT = 1.0  # A; below it the bank is not charging and a CVL cut would only drain it
cdef double DAY = 86400.0


cdef class ChargeControl:
    """Charge state, CVL and full charges of one bank (see the twin's module docstring)."""

    cdef readonly Py_ssize_t n
    cdef double v_max, v_float, v_min, v_offline, v_reset, reset_every, full_every
    cdef double absorption_time, absorption_limit, absorption_spread, rebulk_soc, rebulk_spread
    cdef double cvl_interval, cvl_ramp, ovp_hold, ovp_release
    # what survives between cycles
    cdef readonly str state
    cdef double state_since
    cdef bint reset_active
    cdef readonly double cvl
    cdef double cvl_changed
    cdef Why cvl_why
    cdef bint was_unseen  # some pack was unseen at the previous cycle
    cdef double cvl_before  # CVL when the bank last lost sight of a pack
    cdef double seen_since  # since when every pack reports again (NaN: some pack unseen)
    cdef double ovp_until
    cdef double* last_full
    cdef double last_reset

    # the arrays: NULL when the object is made (zeroed memory), freed by _release

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        """Free the arrays; the count goes to 0 first, so no loop reaches a freed array."""
        self.n = 0
        free(self.last_full)
        self.last_full = NULL

    def __init__(self, params, Py_ssize_t n):
        """Set up the charge side of a bank.

        Args:
            params: numbers from the ``[bank]`` config (see ``docs/CONFIG.md``).
            n: packs in the bank.
        """
        cdef Py_ssize_t k
        p = params
        self._release()  # set up again: the size is set last, once the array is there
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
        self.cvl_why = reason(R_NO_CELLS, -1, -1, NAN, 0.0)
        self.was_unseen = True
        self.cvl_before = NAN
        self.seen_since = NAN
        self.ovp_until = -INF
        self.last_full = <double*>_alloc(n, sizeof(double))
        for k in range(n):
            self.last_full[k] = NAN
        self.last_reset = NAN
        self.n = n

    # ---- charge state -------------------------------------------------------------------------

    cdef double limit(self, Py_ssize_t cells) noexcept:
        """Cell voltage the over-voltage cut holds the highest cell to, in a bank of ``cells``."""
        cdef double limit = self.v_max
        if self.v_reset > 0.0 and (
            self.reset_active or self.cvl > cells * self.v_max + 1e-9
        ):  # a SoC-reset cycle, and the ramp back down after it
            limit = self.v_reset
        return limit

    cdef int state_machine(
        self, double t, Bank* bank, Py_ssize_t cells, bint unseen, double soc,
        Py_ssize_t* members, Py_ssize_t* start, Py_ssize_t* count, Py_ssize_t ns, bint* joined,
    ) except -1:
        """Bulk -> absorption -> float -> bulk (see the twin for the arguments).

        Returns 1 when the bank was just fully charged (the engine resynchronises its SoC), else 0.
        """
        cdef Py_ssize_t j
        cdef double target, gap, since
        cdef bint at_voltage
        cdef Row* row
        if cells == 0:
            return 0
        if self.state_since != self.state_since:
            self.state_since = t
        target = self.v_reset if self.reset_active else self.v_max
        at_voltage = False
        for j in range(bank.n_joined):
            row = &bank.rows[bank.joined[j]]
            if _fdiv(row.cell_sum, row.cells) >= target - ABSORPTION_ENTRY or row.max_cell >= target:
                at_voltage = True
                break
        gap = spread(bank.rows, bank.joined, bank.n_joined)
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
                self._full(t, members, start, count, ns, joined)
                self._enter(FLOAT, t)
                return 1
        elif self.state == FLOAT:
            if (soc == soc and soc < self.rebulk_soc) or gap >= self.rebulk_spread:
                self._enter(BULK, t)
            elif self.full_due(t) or self._reset_due(t):
                self._enter(BULK, t)
        return 0

    cdef void _enter(self, str state, double t) noexcept:
        self.state = state
        self.state_since = t

    cdef void _full(
        self, double t, Py_ssize_t* members, Py_ssize_t* start, Py_ssize_t* count, Py_ssize_t ns,
        bint* joined,
    ) noexcept:
        """A full charge: every pack of a joined string is full."""
        cdef Py_ssize_t i, j
        for i in range(ns):
            if joined[i]:
                for j in range(start[i], start[i] + count[i]):
                    self.last_full[members[j]] = t

    cdef bint full_due(self, double t) noexcept:
        """Some pack was never full, or not for ``full_charge_days``."""
        cdef Py_ssize_t k
        cdef double when
        for k in range(self.n):
            when = self.last_full[k]
            if when != when or t - when >= self.full_every:
                return True
        return False

    cdef bint _reset_due(self, double t) noexcept:
        if self.v_reset <= 0.0:
            return False
        return self.last_reset != self.last_reset or t - self.last_reset >= self.reset_every

    cdef double since_full(self, double t) noexcept:
        """Longest time since a pack was full [s] (NaN when some pack never was)."""
        cdef Py_ssize_t k
        cdef double worst = 0.0, when
        for k in range(self.n):
            when = self.last_full[k]
            if when != when:
                return NAN
            if t - when > worst:
                worst = t - when
        return worst

    # ---- charge voltage -----------------------------------------------------------------------

    cdef Why charge_voltage(
        self, double t, Bank* bank, Py_ssize_t cells, double limit, Py_ssize_t unseen
    ) noexcept:
        """CVL: state target, cut at once to protect cells, otherwise changed slowly.

        Returns the reason of CVL now (see the twin for the arguments).
        """
        cdef Py_ssize_t n = cells
        cdef double per_cell, target, ceiling, high = -INF, cvl  # high: set by _ceiling
        cdef Why why, ceiling_why
        if n == 0:  # no CVL yet (0 V on the output); the first real one is set at once
            self.cvl_why = reason(R_NO_CELLS, -1, -1, NAN, 0.0)
            return self.cvl_why
        per_cell = self.v_float
        if self.state != FLOAT:
            per_cell = self.v_reset if self.reset_active else self.v_max
        target = n * per_cell
        why = reason(R_STATE, -1, -1, per_cell, target)
        ceiling = self._ceiling(t, bank, n, why, unseen, &ceiling_why, &high)
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

    cdef double _ceiling(
        self, double t, Bank* bank, Py_ssize_t n, Why why, Py_ssize_t unseen, Why* ceiling_why,
        double* high,
    ) noexcept:
        """Protective limits of CVL: unseen packs, the BMSs' CVLs, cells over the limit.

        Returns the ceiling [V]; ``ceiling_why`` becomes its reason (``why`` when none), ``high``
        the highest cell of the joined strings [V].
        """
        cdef Py_ssize_t j
        cdef double ceiling, cand
        cdef Row* row
        ceiling = INF  # protective limits: applied at once
        ceiling_why[0] = why
        if unseen >= 0:
            ceiling = n * self.v_offline
            ceiling_why[0] = reason(R_UNSEEN, unseen, -1, NAN, ceiling)
        for j in range(bank.n_complete):
            row = &bank.rows[bank.complete[j]]
            if row.bms_cvl < ceiling:
                ceiling = row.bms_cvl
                ceiling_why[0] = reason(R_BMS_CVL, row.bms_cvl_pack, -1, NAN, ceiling)
        high[0] = -INF
        for j in range(bank.n_joined):
            row = &bank.rows[bank.joined[j]]
            if row.max_cell > high[0]:
                high[0] = row.max_cell
            if row.excess > 0.0:
                self.ovp_until = t + self.ovp_hold
                cand = row.cell_sum - row.excess
                if cand < n * self.v_min:
                    cand = n * self.v_min
                if cand < ceiling and row.current > OVP_MIN_CURRENT:
                    ceiling = cand
                    ceiling_why[0] = reason(
                        R_CELL_OVER, row.max_pack, row.max_index, row.max_cell, cand
                    )
        return ceiling

    cdef void _ramp(
        self, double t, Py_ssize_t n, double cvl, double target, Why why, double limit,
        double high, Py_ssize_t unseen,
    ) noexcept:
        """One step of CVL towards ``target``: down at once, up only once the cells allow it."""
        cdef double step = self.cvl_ramp * n
        if target < cvl:
            self.cvl = cvl - step if cvl - step > target else target
            self.cvl_changed = t
            self.cvl_why = _ramped(self.cvl, target, why)
        elif target > cvl:
            if unseen >= 0:  # cells nobody sees: never raise
                self.cvl_why = reason(R_UNSEEN, unseen, -1, NAN, self.cvl)
            elif t >= self.ovp_until and high <= limit - self.ovp_release:
                self.cvl = cvl + step if cvl + step < target else target
                self.cvl_changed = t
                self.cvl_why = _ramped(self.cvl, target, why)
            else:
                self.cvl_why = reason(R_HELD, -1, -1, high, target)
        else:
            self.cvl_why = why

    cdef double _resume(self, double t, double target, Why why, bint unseen) noexcept:
        """CVL once every pack reports again: back where it was before (never above target).

        The conservative cap while a pack was unseen holds a full bank below its own voltage and
        drains it into the grid; ramping up from there would go on draining for many minutes. Only
        once every pack has reported for ``cvl_interval`` (at once for the first full view after
        start), so a pack that keeps dropping out leaves CVL capped instead of swinging with it.
        """
        cdef double cvl = self.cvl, back
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
            if self.cvl_before != self.cvl_before:
                back = target
            else:
                back = self.cvl_before  # min(cvl_before, target): the first of equal values
                if target < back:
                    back = target
            if back > cvl:
                cvl = self.cvl = back
                self.cvl_changed = t
                self.cvl_why = why if back == target else reason(R_RESUME, -1, -1, NAN, back)
            self.was_unseen = False
        return cvl

    # ---- persistence --------------------------------------------------------------------------

    cdef dict snapshot(self, double t):
        """Ages at ``t`` of each pack's last full charge and of the last SoC reset (or None)."""
        return {
            "since_full": [
                None if self.last_full[k] != self.last_full[k] else t - self.last_full[k]
                for k in range(self.n)
            ],
            "since_reset": None if self.last_reset != self.last_reset else t - self.last_reset,
        }

    cdef int restore(self, double t, object snap) except -1:
        """Take back a :meth:`snapshot` at engine time ``t`` (ages are counted from ``t``)."""
        cdef Py_ssize_t k
        ages = snap.get("since_full") or []
        for k in range(min(self.n, len(ages))):
            if ages[k] is not None:
                self.last_full[k] = t - float(ages[k])
        if snap.get("since_reset") is not None:
            self.last_reset = t - float(snap["since_reset"])
        return 0


cdef inline Why _ramped(double cvl, double target, Why why) noexcept:
    """The target's reason once CVL is there, else "ramping"."""
    return why if cvl == target else reason(R_RAMP, -1, -1, NAN, target)
