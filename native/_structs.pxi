# C declarations of the compiled limits engine, included first by _limits.pyx; no twin.
#
# The C structs that stand for the twin's lists, dicts and tuples (Why = a reason tuple, Table = a
# table's rows, Pack = PackRules.evaluate's list, Row = string_row's dict, Bank = the dict of
# Engine._strings), the rule code of a Why and the tuple it becomes when it leaves the engine, C
# arrays, and float helpers that add and divide as the twin's Python does. Used by the ports
# _packs.pxi (of _packs_py.py), _charge.pxi (of _charge_py.py) and _limits.pyx (of _limits_py.py).

from libc.math cimport fabs
from libc.stdlib cimport calloc, free

# Rule codes of a Why; RULE_NAMES[code] is the rule's name in a reason tuple (see _limits_py.RULES).
cdef enum:
    R_NONE = -1  # no reason: None
    R_CONFIG, R_BMS, R_CELL_TABLE, R_TEMPERATURE_WINDOW, R_TEMPERATURE_TABLE, R_NO_TEMPERATURE
    R_SOC_TABLE, R_MOSFET_TABLE, R_FET, R_ALARM, R_CELLS_MISMATCH, R_NO_PACK, R_RECOVERING
    R_NO_CELLS, R_STATE, R_BMS_CVL, R_UNSEEN, R_CELL_OVER, R_RAMP, R_HELD, R_RESUME

cdef tuple RULE_NAMES = (
    "config", "bms", "cell_table", "temperature_window", "temperature_table", "no_temperature",
    "soc_table", "mosfet_table", "fet", "alarm", "cells_mismatch", "no_pack", "recovering",
    "no_cells", "state", "bms_cvl", "unseen", "cell_over", "ramp", "held", "resume",
)


cdef struct Why:
    # a reason tuple (rule, pack, item, value, amount, share); rule R_NONE stands for None
    int rule
    Py_ssize_t pack
    Py_ssize_t item
    double value
    double amount
    double share


cdef struct Table:
    # rows (x, fraction) sorted by x
    Py_ssize_t n
    double* x
    double* f


cdef struct Pack:
    # PackRules.evaluate's list, item by item
    double ccl
    Why ccl_why
    double dcl
    Why dcl_why
    Py_ssize_t cells
    double cell_sum
    double excess
    double max_cell
    Py_ssize_t max_index
    double min_cell
    Py_ssize_t min_index
    double min_temperature
    Py_ssize_t min_temperature_index
    double max_temperature
    Py_ssize_t max_temperature_index
    double temperature_sum
    Py_ssize_t temperatures


cdef struct Row:
    # string_row's dict, key by key
    Py_ssize_t packs
    double voltage
    double current
    double power
    Py_ssize_t cells
    double cell_sum
    double excess
    double capacity
    double soc
    double bms_cvl
    Py_ssize_t bms_cvl_pack
    double ccl
    Why ccl_why
    double dcl
    Why dcl_why
    double max_cell
    Py_ssize_t max_pack
    Py_ssize_t max_index
    double min_cell


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


cdef object _why(Why w):
    """The reason tuple of ``w`` (None for R_NONE)."""
    if w.rule == R_NONE:
        return None
    return (RULE_NAMES[w.rule], w.pack, w.item, w.value, w.amount, w.share)


cdef void* _alloc(Py_ssize_t n, size_t size) except NULL:
    """Zeroed C array of ``n`` items (at least one), freed by the owner's __dealloc__."""
    cdef void* p = calloc(n if n > 0 else 1, size)
    if p == NULL:
        raise MemoryError()
    return p


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
