# cython: language_level=3
"""Compiled bank kernels; same API and results as :mod:`bmsbank.native._limits_py`."""

IMPLEMENTATION = "cython"

cdef double NAN = float("nan")


def aggregate(packs):
    """Aggregate the states of packs connected in parallel (see the twin for the contract)."""
    cdef Py_ssize_t n = len(packs), k, c, nc
    cdef double v_sum = 0.0, i_sum = 0.0, p_sum = 0.0, soc_cap = 0.0, soc_sum = 0.0
    cdef double cap_sum = 0.0, rem_sum = 0.0, t_sum = 0.0, v, i, cap, x
    cdef Py_ssize_t t_n = 0, ncells_min = 0, ncells_max = 0
    cdef double cmin = NAN, cmax = NAN, tmin = NAN, tmax = NAN
    cdef Py_ssize_t cmin_p = -1, cmin_i = -1, cmax_p = -1, cmax_i = -1
    cdef Py_ssize_t tmin_p = -1, tmin_i = -1, tmax_p = -1, tmax_i = -1
    cdef object s, cells, temps
    for k in range(n):
        s = packs[k]
        v = s["voltage"]
        i = s["current"]
        cap = s["capacity"]
        v_sum += v
        i_sum += i
        p_sum += v * i
        soc_cap += <double>s["soc"] * cap
        soc_sum += <double>s["soc"]
        cap_sum += cap
        rem_sum += <double>s["remaining"]
        cells = s["cells"]
        nc = len(cells)
        if k == 0 or nc < ncells_min:
            ncells_min = nc
        if nc > ncells_max:
            ncells_max = nc
        for c in range(nc):
            x = cells[c]
            if cmin_p < 0 or x < cmin:
                cmin = x
                cmin_p = k
                cmin_i = c
            if cmax_p < 0 or x > cmax:
                cmax = x
                cmax_p = k
                cmax_i = c
        temps = s["temperatures"]
        for c in range(len(temps)):
            x = temps[c]
            t_sum += x
            t_n += 1
            if tmin_p < 0 or x < tmin:
                tmin = x
                tmin_p = k
                tmin_i = c
            if tmax_p < 0 or x > tmax:
                tmax = x
                tmax_p = k
                tmax_i = c
    return {
        "packs": n,
        "voltage": v_sum / n if n else 0.0,
        "current": i_sum,
        "power": p_sum,
        "soc": (soc_cap / cap_sum) if cap_sum > 0.0 else (soc_sum / n if n else 0.0),
        "capacity": cap_sum,
        "remaining": rem_sum,
        "cells_min": ncells_min,
        "cells_max": ncells_max,
        "min_cell_voltage": cmin,
        "min_cell_pack": cmin_p,
        "min_cell_index": cmin_i,
        "max_cell_voltage": cmax,
        "max_cell_pack": cmax_p,
        "max_cell_index": cmax_i,
        "temperature": t_sum / t_n if t_n else NAN,
        "min_temperature": tmin,
        "min_temperature_pack": tmin_p,
        "min_temperature_index": tmin_i,
        "max_temperature": tmax,
        "max_temperature_pack": tmax_p,
        "max_temperature_index": tmax_i,
    }


def step_factor(double value, table, bint high):
    """Factor from a step table of ``(threshold, factor)`` rows (see the twin for the contract)."""
    cdef double best = 1.0, threshold, factor
    cdef Py_ssize_t r, row = -1
    cdef bint reached
    for r in range(len(table)):
        threshold = table[r][0]
        factor = table[r][1]
        if value != value:
            reached = True
        elif high:
            reached = value >= threshold
        else:
            reached = value <= threshold
        if reached and factor < best:
            best = factor
            row = r
    return best, row
