# cython: language_level=3
"""Compiled bank limits engine: same API and results as :mod:`bmsbank.native._limits_py`.

A line-by-line port of the twins (``_packs_py.py`` -> ``_packs.pxi``, ``_charge_py.py`` ->
``_charge.pxi``, ``_currents_py.py`` -> ``_currents.pxi``, ``_limits_py.py`` -> here, the Engine):
same names in the same order, the twin's lists and dicts as the C structs of ``_structs.pxi``, every
floating-point operation the twin's in the twin's order, so each step's output equals the twin's to
the last bit (see the equivalence tests). Time ``t`` and ``seen`` are taken as floats. Port twin
changes here.
"""

from bmsbank.native._limits_py import MAX_AGE, RULES, check_snapshot

include "_structs.pxi"
include "_packs.pxi"
include "_charge.pxi"
include "_currents.pxi"

IMPLEMENTATION = "cython"

if not set(RULE_NAMES) <= set(RULES):  # a rule renamed in the twin and not here
    raise ImportError(f"_limits: rules {set(RULE_NAMES) - set(RULES)} are not in the twin's RULES")


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
    cdef double stale_after
    cdef readonly ChargeControl charge  # the charge side: its parameters and state
    cdef readonly CurrentLimits currents  # the current side: its parameters and state
    cdef double rejoin_window
    cdef bint coulomb
    cdef double avg_time
    cdef double* soc_points
    cdef Py_ssize_t n_points
    # what survives between cycles
    cdef readonly double t
    cdef readonly Py_ssize_t cells
    cdef bint* joined
    cdef double cc_soc, current_avg
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
        free(self.packs)
        free(self.online)
        free(self.bank.rows)
        free(self.bank.joined)
        free(self.bank.complete)
        free(self.tmp)
        self.members = self.start = self.count = self.string_of = self.cells_cfg = NULL
        self.caps_cfg = self.soc_points = self.tmp = NULL
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
        cdef Py_ssize_t i, n, ns, n_points
        p = params
        self._release()  # set up again: sizes are set last, once every array is there
        self.rules = PackRules(p)
        n = len(cells)
        strings = [list(s) for s in strings]
        ns = len(strings)
        self._layout(strings, cells, capacities)
        self.stale_after = float(p["stale_after"])
        self.charge = ChargeControl(p, n)  # the charge side: its parameters and state
        self.currents = CurrentLimits(p)  # the current side: its parameters and state
        self.rejoin_window = float(p["rejoin_window"])
        self.coulomb = bool(p["coulomb_counting"])
        self.avg_time = float(p["current_average_time"])
        soc_points = [float(x) for x in p["time_to_soc"]]
        n_points = len(soc_points)
        self.soc_points = <double*>_alloc(n_points, sizeof(double))
        for i in range(n_points):
            self.soc_points[i] = soc_points[i]
        # what survives between cycles
        self.t = NAN
        self.cells = configured_cells(self.members, self.start, self.count, ns, self.cells_cfg)
        self.joined = <bint*>_alloc(ns, sizeof(bint))
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

    cdef int _layout(self, list strings, object cells, object capacities) except -1:
        """The twin's strings, cells_cfg and caps_cfg as C arrays (and string_of, per pack)."""
        cdef Py_ssize_t i, j, k, n = len(cells), ns = len(strings)
        cdef Py_ssize_t m = sum(len(s) for s in strings)
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
        return 0

    @property
    def state(self):
        """The charge state (one of ``CHARGE_STATES``)."""
        return self.charge.state

    @property
    def cvl(self):
        """The charge voltage limit [V] (NaN before the first)."""
        return self.charge.cvl

    @property
    def ccl(self):
        """The charge current limit [A] (NaN before the first joined string)."""
        return self.currents.ccl

    @property
    def dcl(self):
        """The discharge current limit [A] (NaN before the first joined string)."""
        return self.currents.dcl

    # ---- per pack -----------------------------------------------------------------------------

    cdef Py_ssize_t _evaluate(
        self, double t, object states, object seen, double limit, Py_ssize_t* first_unseen
    ) except -1:
        """Limits and figures of every pack online into ``packs`` (online[k] False for the others).

        Returns the packs online; ``first_unseen`` becomes the first pack not online (-1 = none).
        """
        cdef Py_ssize_t k, online = 0
        cdef double when
        cdef object s, when_obj
        first_unseen[0] = -1
        for k in range(self.n):
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
            if first_unseen[0] < 0:
                first_unseen[0] = k
        return online

    cdef list _pack_rows(self, double t):
        """Per pack [online, joined, ccl, ccl_why, dcl, dcl_why, since full [s]]."""
        cdef Py_ssize_t k
        cdef Pack* q
        cdef list packs = [None] * self.n
        for k in range(self.n):
            q = &self.packs[k]
            if self.online[k]:
                packs[k] = [
                    True, self._joined_pack(k), q.ccl, _why(q.ccl_why), q.dcl, _why(q.dcl_why),
                    t - self.charge.last_full[k],
                ]
            else:
                packs[k] = [
                    False, False, 0.0, _why(reason(R_NO_PACK, k, -1, NAN, 0.0)), 0.0,
                    _why(reason(R_NO_PACK, k, -1, NAN, 0.0)), t - self.charge.last_full[k],
                ]
        return packs

    cdef bint _joined_pack(self, Py_ssize_t k) noexcept:
        cdef Py_ssize_t i = self.string_of[k]
        return self.joined[i] if i >= 0 else False

    cdef Py_ssize_t _blocking(self, bint charge) noexcept:
        """The twin's ``sum(1 for q in packs if q is not None and q[0 or 2] <= 0.0)``."""
        cdef Py_ssize_t k, blocking = 0
        for k in range(self.n):
            if self.online[k] and (self.packs[k].ccl if charge else self.packs[k].dcl) <= 0.0:
                blocking += 1
        return blocking

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
        cdef Py_ssize_t n, online, first_unseen = -1  # first_unseen: set by _evaluate
        cdef double dt, limit, soc, ccl = NAN, dcl = NAN
        cdef bint unseen
        cdef Why cvl_why, ccl_why, dcl_why
        cdef dict out
        dt = t - self.t if self.t == self.t else 0.0
        if dt < 0.0:
            dt = 0.0
        self.t = t
        n = self.n
        limit = self.charge.limit(self.cells)  # cell voltage the over-voltage cut holds cells to
        online = self._evaluate(t, states, seen, limit, &first_unseen)
        self._strings(states)
        soc = self._bank_soc()
        unseen = first_unseen >= 0
        if self.charge.state_machine(t, &self.bank, self.cells, unseen, soc, self.members,
                                     self.start, self.count, self.ns, self.joined):
            self._full()
        cvl_why = self.charge.charge_voltage(t, &self.bank, self.cells, limit, first_unseen)
        self.currents.limits(
            t, dt, &self.bank, self.packs, self.online, n, self.tmp, &ccl, &ccl_why, &dcl, &dcl_why
        )
        self._soc(dt)
        out = extremes(self.packs, self.online, n)
        out.update(
            t=t,
            cvl=self.charge.cvl if self.charge.cvl == self.charge.cvl else 0.0,
            ccl=ccl,
            dcl=dcl,
            charge_state=self.charge.state,
            reasons={"cvl": _why(cvl_why), "ccl": _why(ccl_why), "dcl": _why(dcl_why),
                     "ccl_cut": _why(self.currents.ccl_cut),
                     "dcl_cut": _why(self.currents.dcl_cut)},
            online=online,
            offline=n - online,
            waiting=self.bank.waiting,
            unseen=unseen,
            blocking_charge=self._blocking(True),
            blocking_discharge=self._blocking(False),
            cells=self.cells,
            **self._measurements(),
        )
        out["packs"] = self._pack_rows(t)
        return out

    cdef int _strings(self, object states) except -1:
        """Series sums per string, rejoin checks, and the parallel combination of joined strings."""
        cdef Py_ssize_t i, j, lo, hi
        cdef double ref_sum
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
        self.bank.waiting = self._rejoin(ref_sum, ref_n)
        self.bank.n_joined = 0
        for j in range(self.bank.n_complete):
            i = self.bank.complete[j]
            if self.joined[i]:
                self.bank.joined[self.bank.n_joined] = i
                self.bank.n_joined += 1
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

    cdef Py_ssize_t _rejoin(self, double ref_sum, Py_ssize_t ref_n) noexcept:
        """Join each complete string within the rejoin window of the joined ones' mean voltage.

        Returns the packs in the strings left waiting.
        """
        cdef Py_ssize_t i, j, waiting = 0
        cdef double window
        cdef Row* row
        for j in range(self.bank.n_complete):
            i = self.bank.complete[j]
            row = &self.bank.rows[i]
            if self.joined[i]:
                continue
            window = self.rejoin_window * row.cells
            if ref_n == 0 or fabs(row.voltage - ref_sum / ref_n) <= window:
                self.joined[i] = True
            else:
                waiting += self.count[i]
        return waiting

    cdef void _full(self) noexcept:
        """A full charge (``self.charge`` says when): resynchronise the counter."""
        if self.coulomb and self.bank.n_joined:
            self.cc_soc = 100.0

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
                "spread": NAN, "full_due": self.charge.full_due(self.t),
                "since_full": self.charge.since_full(self.t),
                "state_for": self.t - self.charge.state_since,
                "ovp_left": max(0.0, self.charge.ovp_until - self.t),
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
            "full_due": self.charge.full_due(self.t),
            "since_full": self.charge.since_full(self.t),
            "state_for": self.t - self.charge.state_since,
            "ovp_left": max(0.0, self.charge.ovp_until - self.t),
        }

    # ---- persistence --------------------------------------------------------------------------

    def snapshot(self):
        """What must survive a restart, as ages relative to the last step (JSON-friendly)."""
        snap = self.charge.snapshot(self.t)  # since_full, since_reset
        snap["soc"] = None if self.cc_soc != self.cc_soc else self.cc_soc
        return snap

    def restore(self, double t, snap):
        """Take back a :meth:`snapshot` at engine time ``t`` (ages are counted from ``t``).

        Raises:
            ValueError: ``snap`` is not a snapshot of this bank (the twin's ``check_snapshot``,
                shared); the engine is left as it was.
        """
        snap = check_snapshot(snap, self.n)
        self.charge.restore(t, snap)
        if snap.get("soc") is not None and self.coulomb:
            self.cc_soc = float(snap["soc"])


__all__ = [
    "ABSORPTION", "BULK", "CHARGE_BLOCKING", "CHARGE_STATES", "DISCHARGE_BLOCKING", "FLOAT",
    "IMPLEMENTATION", "MAX_AGE", "RULES", "Engine", "PackRules", "check_snapshot", "fraction",
]
