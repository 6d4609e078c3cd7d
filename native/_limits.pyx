# cython: language_level=3
"""Compiled bank limits engine: same API and results as :mod:`bmsbank.native._limits_py`.

A line-by-line port of the twin (``_packs_py.py`` -> ``_packs.pxi``, ``_limits_py.py`` -> here): same
names in the same order, the twin's lists and dicts as C structs, every floating-point operation the
twin's in the twin's order, so each step's output equals the twin's to the last bit (see the
equivalence tests). Time ``t`` and ``seen`` are taken as floats. Port twin changes here.
"""

from bmsbank.native._limits_py import (
    ABSORPTION,
    BULK,
    CHARGE_STATES,
    FLOAT,
    RULES,
)

include "_packs.pxi"

IMPLEMENTATION = "cython"

if not set(RULE_NAMES) <= set(RULES):  # a rule renamed in the twin and not here
    raise ImportError(f"_limits: rules {set(RULE_NAMES) - set(RULES)} are not in the twin's RULES")

cdef double ABSORPTION_ENTRY = 0.010  # V per cell below the target at which the bank counts as at voltage
cdef double OVP_MIN_CURRENT = 1.0  # A; below it the bank is not charging and a CVL cut would only drain it
cdef double DAY = 86400.0

# builtin sum() of floats: plain left-to-right adds up to 3.11, compensated from 3.12; the twin sums
# with it, so the port adds as it does (plain in C, else through sum() itself)
cdef bint PLAIN_SUM = sum([0.1] * 10) != 1.0


cdef double _fsum(double* xs, Py_ssize_t n) except? -1.0:
    """``sum()`` of ``n`` floats, added exactly as the builtin adds them."""
    cdef Py_ssize_t i
    cdef double s = 0.0
    if PLAIN_SUM:
        for i in range(n):
            s += xs[i]
        return s
    return sum([xs[i] for i in range(n)])


cdef inline double _fdiv(double a, double b) except? -1.0:
    """``a / b`` with Python's ZeroDivisionError (cdivision is on)."""
    if b == 0.0:
        raise ZeroDivisionError("float division by zero")
    return a / b


cdef struct Bank:
    # the twin's bank dict: joined and complete rows (as string indexes into rows), waiting packs
    Row* rows
    Py_ssize_t* joined
    Py_ssize_t n_joined
    Py_ssize_t* complete
    Py_ssize_t n_complete
    Py_ssize_t waiting
    bint mismatch


# which row figure a sum over the joined rows adds
cdef enum:
    F_CAPACITY, F_CURRENT, F_VOLTAGE, F_POWER, F_SOC, F_SOC_CAPACITY


cdef class Engine:
    """The bank limits engine (see the twin's module docstring)."""

    cdef PackRules rules
    cdef readonly Py_ssize_t n
    cdef Py_ssize_t ns  # strings
    cdef Py_ssize_t* members  # strings, flat: string i is members[start[i]:start[i] + count[i]]
    cdef Py_ssize_t* start
    cdef Py_ssize_t* count
    cdef Py_ssize_t* string_of  # per pack, the first string it is in (-1 = none)
    cdef Py_ssize_t* cells_cfg
    cdef double* caps_cfg
    cdef double stale_after, v_max, v_float, v_min, v_offline, v_reset, reset_every, full_every
    cdef double absorption_time, absorption_limit, absorption_spread, rebulk_soc, rebulk_spread
    cdef double cvl_interval, cvl_ramp, ovp_hold, ovp_release, current_hold, current_ramp
    cdef double rejoin_window, safe_ccl, safe_dcl
    cdef bint by_capacity, coulomb
    cdef double avg_time
    cdef double* soc_points
    cdef Py_ssize_t n_points
    # what survives between cycles
    cdef readonly double t
    cdef readonly str state
    cdef double state_since
    cdef bint reset_active
    cdef readonly Py_ssize_t cells
    cdef readonly double cvl
    cdef double cvl_changed
    cdef Why cvl_why
    cdef bint was_unseen  # some pack was unseen at the previous cycle
    cdef double cvl_before  # CVL when the bank last lost sight of a pack
    cdef double seen_since  # since when every pack reports again (NaN: some pack unseen)
    cdef double ovp_until
    cdef readonly double ccl
    cdef readonly double dcl
    cdef double ccl_until, dcl_until
    cdef Why ccl_cut, dcl_cut
    cdef bint* joined
    cdef double* last_full
    cdef double last_reset, cc_soc, current_avg
    # one cycle's scratch: the twin's packs list (online[k] False = None) and bank dict
    cdef Pack* packs
    cdef bint* online
    cdef Bank bank
    cdef double* tmp

    # the arrays: NULL when the object is made (zeroed memory), freed by _release

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        """Free the arrays; the counts go to 0 first, so no loop reaches a freed array."""
        self.n = self.ns = self.n_points = self.bank.n_joined = self.bank.n_complete = 0
        free(self.members)
        free(self.start)
        free(self.count)
        free(self.string_of)
        free(self.cells_cfg)
        free(self.caps_cfg)
        free(self.soc_points)
        free(self.joined)
        free(self.last_full)
        free(self.packs)
        free(self.online)
        free(self.bank.rows)
        free(self.bank.joined)
        free(self.bank.complete)
        free(self.tmp)
        self.members = self.start = self.count = self.string_of = self.cells_cfg = NULL
        self.caps_cfg = self.soc_points = self.last_full = self.tmp = NULL
        self.joined = self.online = NULL
        self.packs = NULL
        self.bank.rows = NULL
        self.bank.joined = self.bank.complete = NULL

    def __init__(self, params, strings, cells, capacities):
        """Set up a bank.

        Args:
            params: numbers and tables from the ``[bank]`` config (see ``docs/CONFIG.md``).
            strings: strings in parallel, each a list of pack indexes in series.
            cells: cells in series per pack (0 = as the pack reports).
            capacities: capacity per pack [Ah] (0 = as the pack reports).

        Raises:
            IndexError: a string names a pack outside ``cells`` (the twin fails in ``step``).
        """
        cdef Py_ssize_t i, j, k, m, n, ns, n_points
        p = params
        self._release()  # set up again: sizes are set last, once every array is there
        self.rules = PackRules(p)
        n = len(cells)
        strings = [list(s) for s in strings]
        ns = len(strings)
        m = sum(len(s) for s in strings)
        self.members = <Py_ssize_t*>_alloc(m, sizeof(Py_ssize_t))
        self.start = <Py_ssize_t*>_alloc(ns, sizeof(Py_ssize_t))
        self.count = <Py_ssize_t*>_alloc(ns, sizeof(Py_ssize_t))
        self.string_of = <Py_ssize_t*>_alloc(n, sizeof(Py_ssize_t))
        for k in range(n):
            self.string_of[k] = -1
        j = 0
        for i in range(ns):
            self.start[i] = j
            self.count[i] = len(strings[i])
            for k in strings[i]:
                if k < 0 or k >= n:
                    raise IndexError(f"string {i} names pack {k}, not one of {n}")
                self.members[j] = k
                if self.string_of[k] < 0:
                    self.string_of[k] = i
                j += 1
        self.cells_cfg = <Py_ssize_t*>_alloc(n, sizeof(Py_ssize_t))
        self.caps_cfg = <double*>_alloc(n, sizeof(double))
        for k in range(n):
            self.cells_cfg[k] = int(cells[k])
            self.caps_cfg[k] = float(capacities[k])
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
        soc_points = [float(x) for x in p["time_to_soc"]]
        n_points = len(soc_points)
        self.soc_points = <double*>_alloc(n_points, sizeof(double))
        for i in range(n_points):
            self.soc_points[i] = soc_points[i]
        # what survives between cycles
        self.t = NAN
        self.state = BULK
        self.state_since = NAN
        self.reset_active = False
        self.cells = configured_cells(self.members, self.start, self.count, ns, self.cells_cfg)
        self.cvl = NAN
        self.cvl_changed = NAN
        self.cvl_why = reason(R_NO_CELLS, -1, -1, NAN, 0.0)
        self.was_unseen = True
        self.cvl_before = NAN
        self.seen_since = NAN
        self.ovp_until = -INF
        self.ccl = NAN
        self.dcl = NAN
        self.ccl_until = -INF
        self.dcl_until = -INF
        self.ccl_cut = reason(R_NO_PACK, -1, -1, NAN, 0.0)
        self.dcl_cut = reason(R_NO_PACK, -1, -1, NAN, 0.0)
        self.joined = <bint*>_alloc(ns, sizeof(bint))
        self.last_full = <double*>_alloc(n, sizeof(double))
        for k in range(n):
            self.last_full[k] = NAN
        self.last_reset = NAN
        self.cc_soc = NAN
        self.current_avg = NAN
        # one cycle's scratch
        self.packs = <Pack*>_alloc(n, sizeof(Pack))
        self.online = <bint*>_alloc(n, sizeof(bint))
        self.bank.rows = <Row*>_alloc(ns, sizeof(Row))
        self.bank.joined = <Py_ssize_t*>_alloc(ns, sizeof(Py_ssize_t))
        self.bank.complete = <Py_ssize_t*>_alloc(ns, sizeof(Py_ssize_t))
        self.tmp = <double*>_alloc(ns, sizeof(double))
        self.n, self.ns, self.n_points = n, ns, n_points

    # ---- per pack -----------------------------------------------------------------------------

    # ---- per cycle ----------------------------------------------------------------------------

    def step(self, double t, states, seen):
        """Run one cycle at engine time ``t`` [s].

        Args:
            t: engine time [s]; never earlier than the previous call.
            states: per pack, the latest validated state message, or None when never seen.
            seen: per pack, the engine time its latest state arrived (NaN when never).

        Returns:
            dict: see the twin.
        """
        cdef Py_ssize_t n, k, online, first_unseen, blocking_charge, blocking_discharge
        cdef double dt, limit, when, ccl = NAN, dcl = NAN
        cdef Why cvl_why, ccl_why, dcl_why
        cdef Pack* q
        cdef object s, when_obj
        cdef dict out
        cdef list packs
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
        online = 0
        first_unseen = -1
        for k in range(n):
            s = states[k]
            when_obj = seen[k]
            self.online[k] = False
            if s is not None:
                when = float(when_obj)
                if when == when and t - when <= self.stale_after:
                    self.rules._evaluate(k, s, limit, &self.packs[k])
                    self.online[k] = True
                    online += 1
                    continue
            if first_unseen < 0:
                first_unseen = k
        self._strings(states)
        self._state_machine(t, first_unseen >= 0)
        cvl_why = self._charge_voltage(t, limit, first_unseen)
        self._currents(t, dt, &ccl, &ccl_why, &dcl, &dcl_why)
        self._soc(dt)
        out = extremes(self.packs, self.online, n)
        blocking_charge = blocking_discharge = 0
        for k in range(n):
            if self.online[k] and self.packs[k].ccl <= 0.0:
                blocking_charge += 1
            if self.online[k] and self.packs[k].dcl <= 0.0:
                blocking_discharge += 1
        out.update(
            t=t,
            cvl=self.cvl if self.cvl == self.cvl else 0.0,
            ccl=ccl,
            dcl=dcl,
            charge_state=self.state,
            reasons={
                "cvl": _why(cvl_why),
                "ccl": _why(ccl_why),
                "dcl": _why(dcl_why),
                "ccl_cut": _why(self.ccl_cut),
                "dcl_cut": _why(self.dcl_cut),
            },
            online=online,
            offline=n - online,
            waiting=self.bank.waiting,
            unseen=first_unseen >= 0,
            blocking_charge=blocking_charge,
            blocking_discharge=blocking_discharge,
            cells=self.cells,
            **self._measurements(),
        )
        packs = [None] * n
        for k in range(n):
            q = &self.packs[k]
            if self.online[k]:
                packs[k] = [
                    True, self._joined_pack(k), q.ccl, _why(q.ccl_why), q.dcl, _why(q.dcl_why),
                    t - self.last_full[k],
                ]
            else:
                packs[k] = [
                    False, False, 0.0, _why(reason(R_NO_PACK, k, -1, NAN, 0.0)), 0.0,
                    _why(reason(R_NO_PACK, k, -1, NAN, 0.0)), t - self.last_full[k],
                ]
        out["packs"] = packs
        return out

    cdef bint _joined_pack(self, Py_ssize_t k) noexcept:
        cdef Py_ssize_t i = self.string_of[k]
        return self.joined[i] if i >= 0 else False

    cdef int _strings(self, object states) except -1:
        """Series sums per string, rejoin checks, and the parallel combination of joined strings."""
        cdef Py_ssize_t i, j, waiting, lo, hi
        cdef double ref_sum, window
        cdef Py_ssize_t ref_n
        cdef bint complete
        cdef Row* rows = self.bank.rows
        cdef Row* row
        ref_sum = 0.0
        ref_n = 0
        self.bank.n_complete = 0
        for i in range(self.ns):
            complete = True
            for j in range(self.start[i], self.start[i] + self.count[i]):
                if not self.online[self.members[j]]:
                    complete = False
                    break
            if complete:
                row = &rows[i]
                string_row(
                    &self.members[self.start[i]], self.count[i], states, self.packs,
                    self.cells_cfg, self.caps_cfg, row,
                )
                if self.joined[i]:
                    ref_sum += row.voltage
                    ref_n += 1
                self.bank.complete[self.bank.n_complete] = i
                self.bank.n_complete += 1
            else:
                self.joined[i] = False
        waiting = 0
        for j in range(self.bank.n_complete):
            i = self.bank.complete[j]
            row = &rows[i]
            if self.joined[i]:
                continue
            window = self.rejoin_window * row.cells
            if ref_n == 0 or fabs(row.voltage - ref_sum / ref_n) <= window:
                self.joined[i] = True
            else:
                waiting += self.count[i]
        self.bank.n_joined = 0
        for j in range(self.bank.n_complete):
            i = self.bank.complete[j]
            if self.joined[i]:
                self.bank.joined[self.bank.n_joined] = i
                self.bank.n_joined += 1
        self.bank.waiting = waiting
        self.bank.mismatch = False
        if self.bank.n_complete:
            lo = hi = rows[self.bank.complete[0]].cells
            for j in range(1, self.bank.n_complete):
                i = self.bank.complete[j]
                if rows[i].cells < lo:
                    lo = rows[i].cells
                if rows[i].cells > hi:
                    hi = rows[i].cells
            self.cells = lo
            self.bank.mismatch = lo != hi
        return 0

    cdef int _state_machine(self, double t, bint unseen) except -1:
        """Bulk -> absorption -> float -> bulk."""
        cdef Py_ssize_t j
        cdef double target, gap, since, soc
        cdef bint at_voltage
        cdef Row* row
        if self.cells == 0:
            return 0
        if self.state_since != self.state_since:
            self.state_since = t
        target = self.v_reset if self.reset_active else self.v_max
        at_voltage = False
        for j in range(self.bank.n_joined):
            row = &self.bank.rows[self.bank.joined[j]]
            if _fdiv(row.cell_sum, row.cells) >= target - ABSORPTION_ENTRY or row.max_cell >= target:
                at_voltage = True
                break
        gap = spread(self.bank.rows, self.bank.joined, self.bank.n_joined)
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
                self._full(t)
                self._enter(FLOAT, t)
        elif self.state == FLOAT:
            soc = self._bank_soc()
            if (soc == soc and soc < self.rebulk_soc) or gap >= self.rebulk_spread:
                self._enter(BULK, t)
            elif self._full_due(t) or self._reset_due(t):
                self._enter(BULK, t)
        return 0

    cdef void _enter(self, str state, double t) noexcept:
        self.state = state
        self.state_since = t

    cdef void _full(self, double t) noexcept:
        """A full charge: every pack of a joined string is full; resynchronise the counter."""
        cdef Py_ssize_t i, j
        for i in range(self.ns):
            if self.joined[i]:
                for j in range(self.start[i], self.start[i] + self.count[i]):
                    self.last_full[self.members[j]] = t
        if self.coulomb and self.bank.n_joined:
            self.cc_soc = 100.0

    cdef bint _full_due(self, double t) noexcept:
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

    cdef Why _charge_voltage(self, double t, double limit, Py_ssize_t unseen) noexcept:
        """CVL: state target, cut at once to protect cells, otherwise changed slowly."""
        cdef Py_ssize_t n = self.cells, j
        cdef double per_cell, target, ceiling, high, cand, cvl, step
        cdef Why why, ceiling_why
        cdef Row* row
        if n == 0:  # no CVL yet (0 V on the output); the first real one is set at once
            self.cvl_why = reason(R_NO_CELLS, -1, -1, NAN, 0.0)
            return self.cvl_why
        per_cell = self.v_float
        if self.state != FLOAT:
            per_cell = self.v_reset if self.reset_active else self.v_max
        target = n * per_cell
        why = reason(R_STATE, -1, -1, per_cell, target)
        ceiling = INF  # protective limits: applied at once
        ceiling_why = why
        if unseen >= 0:
            ceiling = n * self.v_offline
            ceiling_why = reason(R_UNSEEN, unseen, -1, NAN, ceiling)
        for j in range(self.bank.n_complete):
            row = &self.bank.rows[self.bank.complete[j]]
            if row.bms_cvl < ceiling:
                ceiling = row.bms_cvl
                ceiling_why = reason(R_BMS_CVL, row.bms_cvl_pack, -1, NAN, ceiling)
        high = -INF
        for j in range(self.bank.n_joined):
            row = &self.bank.rows[self.bank.joined[j]]
            if row.max_cell > high:
                high = row.max_cell
            if row.excess > 0.0:
                self.ovp_until = t + self.ovp_hold
                cand = row.cell_sum - row.excess
                if cand < n * self.v_min:
                    cand = n * self.v_min
                if cand < ceiling and row.current > OVP_MIN_CURRENT:
                    ceiling = cand
                    ceiling_why = reason(
                        R_CELL_OVER, row.max_pack, row.max_index, row.max_cell, cand
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
                    self.cvl_why = reason(R_UNSEEN, unseen, -1, NAN, self.cvl)
                elif t >= self.ovp_until and high <= limit - self.ovp_release:
                    self.cvl = cvl + step if cvl + step < target else target
                    self.cvl_changed = t
                    self.cvl_why = _ramped(self.cvl, target, why)
                else:
                    self.cvl_why = reason(R_HELD, -1, -1, high, target)
            else:
                self.cvl_why = why
        return self.cvl_why

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

    cdef int _currents(
        self, double t, double dt, double* ccl, Why* ccl_why, double* dcl, Why* dcl_why
    ) except -1:
        """CCL and DCL: shares of the joined strings, cuts at once, hold then ramp."""
        cdef Py_ssize_t j, k, n_joined = self.bank.n_joined, npacks
        cdef double total, share, raw_c, raw_d, rate
        cdef bint by_cap
        cdef Why why, why_c, why_d
        cdef Row* row
        cdef Pack* q
        if n_joined == 0:
            why = reason(R_NO_PACK, -1, -1, NAN, 0.0)
            if self.ccl != self.ccl:  # never had limits: the first real ones apply at once
                ccl[0], ccl_why[0], dcl[0], dcl_why[0] = self.safe_ccl, why, self.safe_dcl, why
                return 0
            self.ccl, self.dcl = self.safe_ccl, self.safe_dcl
            # no hold after the safe state: packs that report again ramp up from it at once
            self.ccl_until = self.dcl_until = t
            self.ccl_cut = self.dcl_cut = why
            ccl[0], ccl_why[0], dcl[0], dcl_why[0] = self.ccl, why, self.dcl, why
            return 0
        total = self._sum(F_CAPACITY)
        # by capacity only when every string has a share (a capacity of ~0 Ah would underflow)
        by_cap = self.by_capacity and total > 0.0
        for j in range(n_joined):
            if not by_cap:
                break
            if not _fdiv(self.bank.rows[self.bank.joined[j]].capacity, total) > 0.0:
                by_cap = False
        raw_c, why_c.rule = INF, R_NONE
        raw_d, why_d.rule = INF, R_NONE
        for j in range(n_joined):
            row = &self.bank.rows[self.bank.joined[j]]
            share = _fdiv(row.capacity, total) if by_cap else 1.0 / n_joined
            if _fdiv(row.ccl, share) < raw_c:
                raw_c = row.ccl / share
                why_c = _shared(row.ccl_why, share)
            if _fdiv(row.dcl, share) < raw_d:
                raw_d = row.dcl / share
                why_d = _shared(row.dcl_why, share)
        for k in range(self.n):  # a waiting pack that blocks still blocks the bank
            q = &self.packs[k]
            if self.online[k] and q.ccl <= 0.0 and raw_c > 0.0:
                raw_c, why_c = 0.0, q.ccl_why
            if self.online[k] and q.dcl <= 0.0 and raw_d > 0.0:
                raw_d, why_d = 0.0, q.dcl_why
        if self.bank.mismatch:
            raw_c, why_c = 0.0, reason(R_CELLS_MISMATCH, -1, -1, NAN, 0.0)
        npacks = 0
        for j in range(n_joined):
            npacks += self.bank.rows[self.bank.joined[j]].packs
        rate = self.current_ramp * npacks * dt
        self.ccl = _follow(
            self.ccl, raw_c, &why_c, t, &self.ccl_until, &self.ccl_cut, self.current_hold, rate
        )
        self.dcl = _follow(
            self.dcl, raw_d, &why_d, t, &self.dcl_until, &self.dcl_cut, self.current_hold, rate
        )
        ccl[0], ccl_why[0], dcl[0], dcl_why[0] = self.ccl, why_c, self.dcl, why_d
        return 0

    cdef double _sum(self, int figure) except? -1.0:
        """``sum(row[figure] for row in joined)``."""
        cdef Py_ssize_t j
        cdef Row* row
        for j in range(self.bank.n_joined):
            row = &self.bank.rows[self.bank.joined[j]]
            if figure == F_CAPACITY:
                self.tmp[j] = row.capacity
            elif figure == F_CURRENT:
                self.tmp[j] = row.current
            elif figure == F_VOLTAGE:
                self.tmp[j] = row.voltage
            elif figure == F_POWER:
                self.tmp[j] = row.power
            elif figure == F_SOC:
                self.tmp[j] = row.soc
            else:
                self.tmp[j] = row.soc * row.capacity
        return _fsum(self.tmp, self.bank.n_joined)

    cdef double _bank_soc(self) except? -1.0:
        cdef double cap
        if self.coulomb and self.cc_soc == self.cc_soc:
            return self.cc_soc
        cap = self._sum(F_CAPACITY)
        if not self.bank.n_joined:
            return NAN
        if cap <= 0.0:
            return self._sum(F_SOC) / self.bank.n_joined
        return self._sum(F_SOC_CAPACITY) / cap

    cdef int _soc(self, double dt) except -1:
        """Coulomb counter and averaged current (only while some string reports)."""
        cdef double current, cap, soc
        if not self.bank.n_joined:
            return 0
        current = self._sum(F_CURRENT)
        cap = self._sum(F_CAPACITY)
        if self.current_avg != self.current_avg:
            self.current_avg = current
        elif dt > 0.0:
            self.current_avg += _fdiv((current - self.current_avg) * dt, self.avg_time + dt)
        if not self.coulomb:
            return 0
        if self.cc_soc != self.cc_soc:
            self.cc_soc = self._bank_soc()  # the twin's _bank_soc({"joined": joined})
        elif cap > 0.0 and 0.0 < dt <= self.stale_after:
            soc = self.cc_soc + current * dt / 36.0 / cap
            self.cc_soc = 0.0 if soc < 0.0 else (100.0 if soc > 100.0 else soc)
        return 0

    cdef dict _measurements(self):
        cdef Py_ssize_t i, n_joined = self.bank.n_joined
        cdef double soc, cap, avg, remaining, ttg, point
        cdef dict to_soc
        soc = self._bank_soc()
        if not n_joined:
            return {
                "voltage": NAN, "current": NAN, "current_avg": NAN, "power": NAN, "soc": NAN,
                "capacity": 0.0, "remaining": 0.0, "time_to_go": NAN,
                "time_to_soc": {self.soc_points[i]: NAN for i in range(self.n_points)},
                "spread": NAN, "full_due": self._full_due(self.t), "since_full": self._since_full(),
            }
        cap = self._sum(F_CAPACITY)
        avg = self.current_avg
        remaining = soc * cap / 100.0
        ttg = remaining / -avg * 3600.0 if avg < -0.01 else NAN
        to_soc = {}
        for i in range(self.n_points):
            point = self.soc_points[i]
            if avg > 0.01 and point > soc:
                to_soc[point] = (point - soc) * cap / 100.0 / avg * 3600.0
            elif avg < -0.01 and point < soc:
                to_soc[point] = (soc - point) * cap / 100.0 / -avg * 3600.0
            else:
                to_soc[point] = NAN
        return {
            "voltage": self._sum(F_VOLTAGE) / n_joined,
            "current": self._sum(F_CURRENT),
            "current_avg": avg,
            "power": self._sum(F_POWER),
            "soc": soc,
            "capacity": cap,
            "remaining": remaining,
            "time_to_go": ttg,
            "time_to_soc": to_soc,
            "spread": spread(self.bank.rows, self.bank.joined, n_joined),
            "full_due": self._full_due(self.t),
            "since_full": self._since_full(),
        }

    cdef double _since_full(self) noexcept:
        cdef Py_ssize_t k
        cdef double worst = 0.0, when
        for k in range(self.n):
            when = self.last_full[k]
            if when != when:
                return NAN
            if self.t - when > worst:
                worst = self.t - when
        return worst

    # ---- persistence --------------------------------------------------------------------------

    def snapshot(self):
        """What must survive a restart, as ages relative to the last step (JSON-friendly)."""
        return {
            "since_full": [
                None if self.last_full[k] != self.last_full[k] else self.t - self.last_full[k]
                for k in range(self.n)
            ],
            "since_reset": None if self.last_reset != self.last_reset else self.t - self.last_reset,
            "soc": None if self.cc_soc != self.cc_soc else self.cc_soc,
        }

    def restore(self, double t, snap):
        """Take back a :meth:`snapshot` at engine time ``t`` (ages are counted from ``t``)."""
        cdef Py_ssize_t k
        ages = snap.get("since_full") or []
        for k in range(min(self.n, len(ages))):
            if ages[k] is not None:
                self.last_full[k] = t - float(ages[k])
        if snap.get("since_reset") is not None:
            self.last_reset = t - float(snap["since_reset"])
        if snap.get("soc") is not None and self.coulomb:
            self.cc_soc = float(snap["soc"])


cdef inline Why _shared(Why why, double share) except *:
    """``why[:5] + (share,)`` (a None reason cannot be sliced: TypeError, as in the twin)."""
    if why.rule == R_NONE:
        raise TypeError("'NoneType' object is not subscriptable")
    why.share = share
    return why


cdef inline Why _ramped(double cvl, double target, Why why) noexcept:
    """The target's reason once CVL is there, else "ramping"."""
    return why if cvl == target else reason(R_RAMP, -1, -1, NAN, target)


cdef double _follow(
    double out,
    double raw,
    Why* why,
    double t,
    double* until,
    Why* cut,
    double hold,
    double rate,
) noexcept:
    """A current limit that falls at once and rises only after ``hold`` s, by ``rate`` A/step.

    Returns the limit; ``until`` (hold-until time) and ``cut`` (reason of the last cut) are kept
    in place, ``why`` becomes the reason now.
    """
    cdef double new
    if out != out or raw <= out:
        if out == out and raw < out:
            until[0], cut[0] = t + hold, why[0]
        return raw
    if t < until[0]:
        why[0] = reason(R_HELD, -1, -1, NAN, raw)
        return out
    new = out + rate
    if new >= raw:
        return raw
    why[0] = reason(R_RECOVERING, -1, -1, NAN, raw)
    return new


__all__ = [
    "ABSORPTION", "BULK", "CHARGE_BLOCKING", "CHARGE_STATES", "DISCHARGE_BLOCKING", "FLOAT",
    "IMPLEMENTATION", "RULES", "Engine", "PackRules", "fraction",
]
