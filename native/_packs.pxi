# Compiled per-pack and per-string kernels, included by _limits.pyx; port of _packs_py.py.
#
# The hot part of a cycle, O(packs x cells): each pack's current limits from its own figures (tables
# over cells, temperatures, SoC and MOSFET temperature, FETs and alarms), its cell sums and extremes,
# and the sums of a string of packs in series. Units: V, A (+ = charge), Ah, %, °C.
#
# A line-by-line port: same functions, in the same order, as the twin; the twin's lists and dicts
# are the C structs of _structs.pxi, included before this file (Pack = PackRules.evaluate's list,
# Row = string_row's dict, Why = a reason tuple, built as a tuple only when it leaves the engine).
# Every floating-point operation is the twin's, in the twin's order (setup.py: no FMA), so results
# are equal to the last bit.

from bmsbank.native._packs_py import ALARM_LEVEL, CHARGE_BLOCKING, DISCHARGE_BLOCKING

cdef double NAN = float("nan")
cdef double INF = float("inf")

# PackRules.tables, in the twin's key order
cdef enum:
    T_CCL_CELL, T_DCL_CELL, T_CCL_TEMPERATURE, T_DCL_TEMPERATURE, T_CCL_SOC, T_DCL_SOC, T_MOSFET
    N_TABLES

cdef tuple TABLE_KEYS = (
    "ccl_cell_table", "dcl_cell_table", "ccl_temperature_table", "dcl_temperature_table",
    "ccl_soc_table", "dcl_soc_table", "mosfet_table",
)

cdef long C_ALARM_LEVEL = ALARM_LEVEL
cdef object ZERO = 0
cdef tuple C_CHARGE_BLOCKING = tuple(CHARGE_BLOCKING)
cdef tuple C_DISCHARGE_BLOCKING = tuple(DISCHARGE_BLOCKING)


cdef int _table(Table* t, object rows) except -1:
    """Copy rows ``(x, fraction)`` into ``t`` (empty, as _free_table leaves it) as floats."""
    cdef Py_ssize_t i, n = len(rows)
    t.x = <double*>_alloc(n, sizeof(double))
    t.f = <double*>_alloc(n, sizeof(double))
    for i in range(n):
        r = rows[i]
        t.x[i] = float(r[0])
        t.f[i] = float(r[1])
    t.n = n
    return 0


cdef void _free_table(Table* t) noexcept:
    free(t.x)
    free(t.f)
    t.x = NULL
    t.f = NULL
    t.n = 0


cdef double _fraction(double x, Table* rows, bint linear) noexcept:
    """Fraction 0-1 of a limit at ``x`` from rows ``(x, fraction)`` sorted by x (see fraction)."""
    cdef Py_ssize_t r, n = rows.n
    cdef double x0, x1, f0, f1, m
    if n == 0:
        return 1.0
    if x != x:
        m = rows.f[0]  # as min(): the first of equal values
        for r in range(1, n):
            if rows.f[r] < m:
                m = rows.f[r]
        return m
    if x < rows.x[0]:
        return rows.f[0]
    for r in range(1, n):
        x1 = rows.x[r]
        if x < x1:
            x0 = rows.x[r - 1]
            f0 = rows.f[r - 1]
            f1 = rows.f[r]
            if linear:
                # x0 <= x < x1 here, so x1 - x0 > 0
                return f0 + (f1 - f0) * (x - x0) / (x1 - x0)
            return f0 if f0 < f1 else f1
    return rows.f[n - 1]


def fraction(x, rows, linear):
    """Fraction 0-1 of a limit at ``x`` from rows ``(x, fraction)`` sorted by x.

    Outside the rows the end fraction holds. Between two rows: interpolated when ``linear``,
    else the smaller of the two (a step cuts at the earlier row). NaN gives the smallest fraction.
    """
    cdef Table t
    cdef double v
    if len(rows) == 0:
        return 1.0
    v = float(x)
    t.x = t.f = NULL
    try:
        _table(&t, rows)
        return _fraction(v, &t, bool(linear))
    finally:
        _free_table(&t)


cdef inline Why reason(int rule, Py_ssize_t pack, Py_ssize_t item, double value, double amount) noexcept:
    """A reason ``(rule, pack, item, value, amount, share)`` without a share."""
    cdef Why w
    w.rule = rule
    w.pack = pack
    w.item = item
    w.value = value
    w.amount = amount
    w.share = NAN
    return w


cdef list _pack_list(Pack* q):
    """``q`` as the twin's list (PackRules.evaluate's result)."""
    return [
        q.ccl, _why(q.ccl_why), q.dcl, _why(q.dcl_why), q.cells, q.cell_sum, q.excess, q.max_cell,
        q.max_index, q.min_cell, q.min_index, q.min_temperature, q.min_temperature_index,
        q.max_temperature, q.max_temperature_index, q.temperature_sum, q.temperatures,
    ]


cdef class PackRules:
    """What limits one pack's currents: maxima, tables, temperature windows."""

    cdef double* max_ccl
    cdef double* max_dcl
    cdef Py_ssize_t n_ccl
    cdef Py_ssize_t n_dcl
    cdef readonly bint linear
    cdef double charge_window[2]
    cdef double discharge_window[2]
    cdef Table tables[N_TABLES]

    # the arrays: NULL when the object is made (zeroed memory), freed by _release

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        """Free the arrays; the counts go to 0 first, so nothing reaches a freed array."""
        self.n_ccl = self.n_dcl = 0
        free(self.max_ccl)
        free(self.max_dcl)
        self.max_ccl = self.max_dcl = NULL
        for i in range(N_TABLES):
            _free_table(&self.tables[i])

    def __init__(self, p):
        """Take the per-pack maxima and the tables from the engine parameters."""
        cdef Py_ssize_t i
        self._release()  # set up again: sizes are set once the arrays are there
        max_ccl = [float(x) for x in p["max_charge_current"]]
        max_dcl = [float(x) for x in p["max_discharge_current"]]
        self.max_ccl = <double*>_alloc(len(max_ccl), sizeof(double))
        self.max_dcl = <double*>_alloc(len(max_dcl), sizeof(double))
        for i in range(len(max_ccl)):
            self.max_ccl[i] = max_ccl[i]
        for i in range(len(max_dcl)):
            self.max_dcl[i] = max_dcl[i]
        self.n_ccl, self.n_dcl = len(max_ccl), len(max_dcl)
        self.linear = bool(p["linear"])
        self.charge_window[0] = float(p["charge_window"][0])
        self.charge_window[1] = float(p["charge_window"][1])
        self.discharge_window[0] = float(p["discharge_window"][0])
        self.discharge_window[1] = float(p["discharge_window"][1])
        for i in range(N_TABLES):
            _table(&self.tables[i], p[TABLE_KEYS[i]])

    def evaluate(self, Py_ssize_t k, s, double limit):
        """Limits and cell figures of pack ``k``.

        Returns:
            [ccl, ccl_why, dcl, dcl_why, cells, cell_sum, excess over ``limit``, max cell,
            max index, min cell, min index, min temperature, its index, max temperature, index,
            sum of temperatures, number of sensors]
        """
        cdef Pack q
        self._evaluate(k, s, limit, &q)
        return _pack_list(&q)

    cdef int _evaluate(self, Py_ssize_t k, object s, double limit, Pack* q) except -1:
        cdef object x_obj
        cdef double top_c, top_d, ccl, dcl, a, x, soc
        cdef Why cw, dw
        _cell_figures(s["cells"], limit, q)
        if k < 0 or k >= self.n_ccl or k >= self.n_dcl:
            raise IndexError(f"pack {k} has no max_charge_current / max_discharge_current")
        top_c = self.max_ccl[k]
        top_d = self.max_dcl[k]
        ccl, cw = top_c, reason(R_CONFIG, k, -1, NAN, top_c)
        dcl, dw = top_d, reason(R_CONFIG, k, -1, NAN, top_d)
        x_obj = s["bms_ccl"]
        if x_obj is not None:
            x = float(x_obj)
            if x < ccl:
                ccl, cw = x, reason(R_BMS, k, -1, x, x)
        x_obj = s["bms_dcl"]
        if x_obj is not None:
            x = float(x_obj)
            if x < dcl:
                dcl, dw = x, reason(R_BMS, k, -1, x, x)
        a = _fraction(q.max_cell, &self.tables[T_CCL_CELL], self.linear) * top_c
        if a < ccl:
            ccl, cw = a, reason(R_CELL_TABLE, k, q.max_index, q.max_cell, a)
        a = _fraction(q.min_cell, &self.tables[T_DCL_CELL], self.linear) * top_d
        if a < dcl:
            dcl, dw = a, reason(R_CELL_TABLE, k, q.min_index, q.min_cell, a)
        self._temperatures(k, s["temperatures"], top_c, top_d, &ccl, &cw, &dcl, &dw, q)
        soc = float(s["soc"])
        a = _fraction(soc, &self.tables[T_CCL_SOC], self.linear) * top_c
        if a < ccl:
            ccl, cw = a, reason(R_SOC_TABLE, k, -1, soc, a)
        a = _fraction(soc, &self.tables[T_DCL_SOC], self.linear) * top_d
        if a < dcl:
            dcl, dw = a, reason(R_SOC_TABLE, k, -1, soc, a)
        x_obj = s["mosfet_temperature"]
        if x_obj is not None:
            x = float(x_obj)
            a = _fraction(x, &self.tables[T_MOSFET], self.linear)
            if a * top_c < ccl:
                ccl, cw = a * top_c, reason(R_MOSFET_TABLE, k, -1, x, a * top_c)
            if a * top_d < dcl:
                dcl, dw = a * top_d, reason(R_MOSFET_TABLE, k, -1, x, a * top_d)
        _blocked(s, k, "charge_fet", C_CHARGE_BLOCKING, &ccl, &cw)
        _blocked(s, k, "discharge_fet", C_DISCHARGE_BLOCKING, &dcl, &dw)
        q.ccl = ccl
        q.ccl_why = cw
        q.dcl = dcl
        q.dcl_why = dw
        return 0

    cdef int _temperatures(
        self, Py_ssize_t k, object temps, double top_c, double top_d, double* ccl, Why* cw,
        double* dcl, Why* dw, Pack* q,
    ) except -1:
        """Temperature windows and tables over every sensor of pack ``k``, on its limits so far.

        ``ccl``, ``cw``, ``dcl``, ``dw`` are cut in place; the sensor figures go into ``q``.
        """
        cdef Py_ssize_t nt = len(temps), c, itmin, itmax
        cdef double tmin, tmax, tsum, x
        tmin = tmax = NAN
        itmin = itmax = -1
        tsum = 0.0
        if nt == 0:
            ccl[0], cw[0] = 0.0, reason(R_NO_TEMPERATURE, k, -1, NAN, 0.0)
            dcl[0], dw[0] = 0.0, reason(R_NO_TEMPERATURE, k, -1, NAN, 0.0)
        for c in range(nt):
            x = float(temps[c])
            tsum += x
            if itmin < 0 or x < tmin:
                tmin, itmin = x, c
            if itmax < 0 or x > tmax:
                tmax, itmax = x, c
            _sensor_limit(x, self.charge_window, &self.tables[T_CCL_TEMPERATURE], self.linear,
                          top_c, k, c, ccl, cw)  # fmt: skip
            _sensor_limit(x, self.discharge_window, &self.tables[T_DCL_TEMPERATURE], self.linear,
                          top_d, k, c, dcl, dw)  # fmt: skip
        q.min_temperature = tmin
        q.min_temperature_index = itmin
        q.max_temperature = tmax
        q.max_temperature_index = itmax
        q.temperature_sum = tsum
        q.temperatures = nt
        return 0


cdef inline void _sensor_limit(
    double x, double* window, Table* table, bint linear, double top, Py_ssize_t k,
    Py_ssize_t c, double* limit, Why* why,
) noexcept:
    """Cut ``limit`` (and ``why``) to what sensor ``c`` at ``x`` degC allows.

    0 A outside ``window``, else ``table``'s fraction of ``top``.
    """
    cdef double a
    cdef int rule
    if x < window[0] or x > window[1]:
        a, rule = 0.0, R_TEMPERATURE_WINDOW
    else:
        a, rule = _fraction(x, table, linear) * top, R_TEMPERATURE_TABLE
    if a < limit[0]:
        limit[0], why[0] = a, reason(rule, k, c, x, a)


cdef int _cell_figures(object cells, double limit, Pack* q) except -1:
    """Cells of one pack into ``q``: count, sum, excess over ``limit``, max, its index, min, index."""
    cdef Py_ssize_t nc = len(cells), c, imax, imin
    cdef double csum, excess, cmax, cmin, v
    csum = excess = 0.0
    cmax = cmin = float(cells[0])
    imax = imin = 0
    for c in range(nc):
        v = float(cells[c])
        csum += v
        if v > limit:
            excess += v - limit
        if v > cmax:
            cmax, imax = v, c
        if v < cmin:
            cmin, imin = v, c
    q.cells = nc
    q.cell_sum = csum
    q.excess = excess
    q.max_cell = cmax
    q.max_index = imax
    q.min_cell = cmin
    q.min_index = imin
    return 0


cdef dict extremes(Pack* packs, bint* online, Py_ssize_t n):
    """Highest and lowest cell and temperature, and mean temperature, of every pack online."""
    cdef double max_cell_voltage = NAN, min_cell_voltage = NAN
    cdef double max_temperature = NAN, min_temperature = NAN
    cdef Py_ssize_t max_cell_pack = -1, max_cell_index = -1, min_cell_pack = -1, min_cell_index = -1
    cdef Py_ssize_t max_temperature_pack = -1, max_temperature_index = -1
    cdef Py_ssize_t min_temperature_pack = -1, min_temperature_index = -1
    cdef double tsum = 0.0
    cdef Py_ssize_t tn = 0, k
    cdef Pack* q
    for k in range(n):
        if not online[k]:
            continue
        q = &packs[k]
        tsum += q.temperature_sum
        tn += q.temperatures
        if max_cell_pack < 0 or q.max_cell > max_cell_voltage:
            max_cell_voltage, max_cell_pack, max_cell_index = q.max_cell, k, q.max_index
        if min_cell_pack < 0 or q.min_cell < min_cell_voltage:
            min_cell_voltage, min_cell_pack, min_cell_index = q.min_cell, k, q.min_index
        if q.min_temperature_index >= 0 and (
            min_temperature_pack < 0 or q.min_temperature < min_temperature
        ):
            min_temperature, min_temperature_pack = q.min_temperature, k
            min_temperature_index = q.min_temperature_index
        if q.max_temperature_index >= 0 and (
            max_temperature_pack < 0 or q.max_temperature > max_temperature
        ):
            max_temperature, max_temperature_pack = q.max_temperature, k
            max_temperature_index = q.max_temperature_index
    return {
        "max_cell_voltage": max_cell_voltage, "max_cell_pack": max_cell_pack,
        "max_cell_index": max_cell_index,
        "min_cell_voltage": min_cell_voltage, "min_cell_pack": min_cell_pack,
        "min_cell_index": min_cell_index,
        "max_temperature": max_temperature, "max_temperature_pack": max_temperature_pack,
        "max_temperature_index": max_temperature_index,
        "min_temperature": min_temperature, "min_temperature_pack": min_temperature_pack,
        "min_temperature_index": min_temperature_index,
        "temperature": tsum / tn if tn else NAN,
    }


cdef int _blocked(object s, Py_ssize_t k, str fet, tuple names, double* limit, Why* why) except -1:
    """0 A when the pack's FET is off or one of ``names`` is in alarm (else leaves both)."""
    cdef Py_ssize_t i
    cdef object alarms, level
    if not s[fet]:
        limit[0], why[0] = 0.0, reason(R_FET, k, -1, NAN, 0.0)
        return 0
    alarms = s["alarms"]
    cdef bint exact = type(alarms) is dict
    for i in range(len(names)):
        level = (<dict>alarms).get(names[i], ZERO) if exact else alarms.get(names[i], ZERO)
        if level is ZERO:  # the usual case, an alarm that is off: 0 >= ALARM_LEVEL is False
            continue
        if level >= C_ALARM_LEVEL:
            limit[0], why[0] = 0.0, reason(R_ALARM, k, i, NAN, 0.0)
            return 0
    return 0


cdef int string_row(
    Py_ssize_t* members,
    Py_ssize_t m,
    object states,
    Pack* packs,
    Py_ssize_t* cells_cfg,
    double* caps_cfg,
    Row* row,
) except -1:
    """One string of packs in series: voltages, cells and CVLs add, limits are the smallest."""
    cdef Py_ssize_t j, k
    cdef object s, bms_cvl
    cdef Pack* q
    cdef double cap
    row.packs, row.voltage, row.current, row.power, row.cells = m, 0.0, 0.0, 0.0, 0
    row.cell_sum, row.excess, row.capacity, row.soc, row.bms_cvl = 0.0, 0.0, INF, INF, 0.0
    row.bms_cvl_pack, row.ccl, row.ccl_why.rule, row.dcl, row.dcl_why.rule = -1, INF, R_NONE, INF, R_NONE
    row.max_cell, row.max_pack, row.max_index, row.min_cell = -INF, -1, -1, INF
    for j in range(m):
        k = members[j]
        s = states[k]
        q = &packs[k]
        row.voltage += float(s["voltage"])
        row.current += float(s["current"]) / m
        row.power += float(s["voltage"]) * float(s["current"])
        row.cells += cells_cfg[k] if cells_cfg[k] > 0 else q.cells
        row.cell_sum += q.cell_sum
        row.excess += q.excess
        cap = caps_cfg[k] if caps_cfg[k] > 0.0 else float(s["capacity"])
        if cap < row.capacity:
            row.capacity = cap
        if float(s["soc"]) < row.soc:
            row.soc = float(s["soc"])
        bms_cvl = s["bms_cvl"]
        if bms_cvl is not None and row.bms_cvl == row.bms_cvl:
            row.bms_cvl += float(bms_cvl)
            row.bms_cvl_pack = k
        else:
            row.bms_cvl = NAN
        if q.ccl < row.ccl:
            row.ccl, row.ccl_why = q.ccl, q.ccl_why
        if q.dcl < row.dcl:
            row.dcl, row.dcl_why = q.dcl, q.dcl_why
        if q.max_cell > row.max_cell:
            row.max_cell, row.max_pack, row.max_index = q.max_cell, k, q.max_index
        if q.min_cell < row.min_cell:
            row.min_cell = q.min_cell
    if row.bms_cvl != row.bms_cvl or row.bms_cvl_pack < 0:
        row.bms_cvl = INF  # only a string whose every pack reports a CVL has one
    return 0


cdef Py_ssize_t configured_cells(
    Py_ssize_t* members, Py_ssize_t* start, Py_ssize_t* count, Py_ssize_t ns, Py_ssize_t* cells
) noexcept:
    """Series cells of the bank from the config (0 when some pack's count is not configured)."""
    cdef Py_ssize_t i, j, total, best = 0, totals = 0
    for i in range(ns):
        total = 0
        for j in range(start[i], start[i] + count[i]):
            if cells[members[j]] <= 0:
                break
            total += cells[members[j]]
        else:
            if totals == 0 or total < best:
                best = total
            totals += 1
    return best if totals and totals == ns else 0


cdef double spread(Row* rows, Py_ssize_t* idx, Py_ssize_t n) noexcept:
    """Highest minus lowest cell over the strings ``rows[idx[:n]]`` [V] (NaN when none)."""
    cdef Py_ssize_t j
    cdef double high, low
    if n == 0:
        return NAN
    high = rows[idx[0]].max_cell  # as max() and min(): the first of equal values
    low = rows[idx[0]].min_cell
    for j in range(1, n):
        if rows[idx[j]].max_cell > high:
            high = rows[idx[j]].max_cell
    for j in range(1, n):
        if rows[idx[j]].min_cell < low:
            low = rows[idx[j]].min_cell
    return high - low
