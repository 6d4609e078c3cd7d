# Compiled current side of the bank limits engine, included by _limits.pyx; port of _currents_py.py.
#
# CurrentLimits: the charge and discharge current limits (CCL, DCL) of the bank, the joined strings'
# limits over their shares of the bank current, cut at once, raised only after a hold and then
# ramped, and the reason of the last cut of each. The engine owns one and passes in what it needs
# each cycle (see the twin's module docstring).
#
# A line-by-line port: same names, in the same order, as the twin; the twin's bank dict is a Bank,
# its packs list the engine's Pack array (online[k] False = None), reasons are Why structs
# (_structs.pxi). Every floating-point operation is the twin's, in the twin's order.


cdef class CurrentLimits:
    """CCL and DCL of one bank, with their holds and ramps (see the twin's module docstring)."""

    cdef double current_hold, current_ramp, safe_ccl, safe_dcl
    cdef bint by_capacity
    # what survives between cycles
    cdef readonly double ccl
    cdef readonly double dcl
    cdef double ccl_until, dcl_until
    cdef Why ccl_cut, dcl_cut

    def __init__(self, params):
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
        self.ccl_cut = reason(R_NO_PACK, -1, -1, NAN, 0.0)
        self.dcl_cut = reason(R_NO_PACK, -1, -1, NAN, 0.0)

    cdef int limits(
        self, double t, double dt, Bank* bank, Pack* packs, bint* online, Py_ssize_t n,
        double* tmp, double* ccl, Why* ccl_why, double* dcl, Why* dcl_why,
    ) except -1:
        """CCL and DCL: shares of the joined strings, cuts at once, hold then ramp.

        ``packs`` and ``online`` are the engine's ``n`` packs, ``tmp`` scratch for a sum over the
        joined strings (see the twin for the other arguments); ``ccl``, ``ccl_why``, ``dcl``,
        ``dcl_why`` become the ccl, its reason, the dcl, its reason.
        """
        cdef Py_ssize_t j, npacks
        cdef double raw_c = INF, raw_d = INF, rate  # raw_*: set by _shares
        cdef Why why, why_c, why_d
        if bank.n_joined == 0:
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
        self._shares(bank, packs, online, n, tmp, &raw_c, &why_c, &raw_d, &why_d)
        npacks = 0
        for j in range(bank.n_joined):
            npacks += bank.rows[bank.joined[j]].packs
        rate = self.current_ramp * npacks * dt
        self.ccl = _follow(
            self.ccl, raw_c, &why_c, t, &self.ccl_until, &self.ccl_cut, self.current_hold, rate
        )
        self.dcl = _follow(
            self.dcl, raw_d, &why_d, t, &self.dcl_until, &self.dcl_cut, self.current_hold, rate
        )
        ccl[0], ccl_why[0], dcl[0], dcl_why[0] = self.ccl, why_c, self.dcl, why_d
        return 0

    cdef int _shares(
        self, Bank* bank, Pack* packs, bint* online, Py_ssize_t n, double* tmp,
        double* raw_c, Why* why_c, double* raw_d, Why* why_d,
    ) except -1:
        """The bank's CCL and DCL now, before hold and ramp: the joined strings' over their shares.

        ``raw_c``, ``why_c``, ``raw_d``, ``why_d`` become the ccl, its reason, the dcl, its reason.
        """
        cdef Py_ssize_t j, k, n_joined = bank.n_joined
        cdef double total, share
        cdef bint by_cap
        cdef Row* row
        cdef Pack* q
        for j in range(n_joined):
            tmp[j] = bank.rows[bank.joined[j]].capacity
        total = _fsum(tmp, n_joined)
        # by capacity only when every string has a share (a capacity of ~0 Ah would underflow)
        by_cap = self.by_capacity and total > 0.0
        for j in range(n_joined):
            if not by_cap:
                break
            if not _fdiv(bank.rows[bank.joined[j]].capacity, total) > 0.0:
                by_cap = False
        raw_c[0], why_c.rule = INF, R_NONE
        raw_d[0], why_d.rule = INF, R_NONE
        for j in range(n_joined):
            row = &bank.rows[bank.joined[j]]
            share = _fdiv(row.capacity, total) if by_cap else 1.0 / n_joined
            if _fdiv(row.ccl, share) < raw_c[0]:
                raw_c[0] = row.ccl / share
                why_c[0] = _shared(row.ccl_why, share)
            if _fdiv(row.dcl, share) < raw_d[0]:
                raw_d[0] = row.dcl / share
                why_d[0] = _shared(row.dcl_why, share)
        for k in range(n):  # a waiting pack that blocks still blocks the bank
            q = &packs[k]
            if online[k] and q.ccl <= 0.0 and raw_c[0] > 0.0:
                raw_c[0], why_c[0] = 0.0, q.ccl_why
            if online[k] and q.dcl <= 0.0 and raw_d[0] > 0.0:
                raw_d[0], why_d[0] = 0.0, q.dcl_why
        if bank.mismatch:
            raw_c[0], why_c[0] = 0.0, reason(R_CELLS_MISMATCH, -1, -1, NAN, 0.0)
        return 0


cdef inline Why _shared(Why why, double share) except *:
    """``why[:5] + (share,)`` (a None reason cannot be sliced: TypeError, as in the twin)."""
    if why.rule == R_NONE:
        raise TypeError("'NoneType' object is not subscriptable")
    why.share = share
    return why


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
