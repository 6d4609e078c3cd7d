"""Pure-Python twin of :mod:`bmsbank.native._limits` (same API, same results).

Kernels only: aggregation of validated pack states and the current-limit step tables. Policy (which
kernels run, in which order, with which config) lives in ``bmsbank.services.arbiter``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

IMPLEMENTATION = "python"

NAN = float("nan")


def aggregate(packs: Sequence[Mapping]) -> dict:
    """Aggregate the states of packs connected in parallel.

    Args:
        packs: validated state dicts (voltage [V], current [A, + = charge], soc [%],
            capacity [Ah], remaining [Ah], cells [V...], temperatures [°C...]).

    Returns:
        dict with voltage [V] (mean), current [A] (sum), power [W] (sum of V*I), soc [%]
        (capacity-weighted; plain mean when no capacity is known), capacity and remaining [Ah]
        (sums), cell extremes (``min_cell_voltage`` [V], ``min_cell_pack`` index into ``packs``,
        ``min_cell_index`` 0-based, and the same for max), ``cells_min``/``cells_max`` (fewest and
        most cells in a pack), temperature [°C] (mean of all sensors) and temperature extremes
        with pack and sensor indexes. Extremes are NaN with index -1 when no pack reports them.

    """
    n = len(packs)
    v_sum = i_sum = p_sum = soc_cap = soc_sum = cap_sum = rem_sum = t_sum = 0.0
    t_n = 0
    cmin, cmin_p, cmin_i, cmax, cmax_p, cmax_i = NAN, -1, -1, NAN, -1, -1
    tmin, tmin_p, tmin_i, tmax, tmax_p, tmax_i = NAN, -1, -1, NAN, -1, -1
    ncells_min = ncells_max = 0
    for k in range(n):
        s = packs[k]
        v = float(s["voltage"])
        i = float(s["current"])
        cap = float(s["capacity"])
        v_sum += v
        i_sum += i
        p_sum += v * i
        soc_cap += float(s["soc"]) * cap
        soc_sum += float(s["soc"])
        cap_sum += cap
        rem_sum += float(s["remaining"])
        cells = s["cells"]
        nc = len(cells)
        if k == 0 or nc < ncells_min:
            ncells_min = nc
        if nc > ncells_max:
            ncells_max = nc
        for c in range(nc):
            x = float(cells[c])
            if cmin_p < 0 or x < cmin:
                cmin, cmin_p, cmin_i = x, k, c
            if cmax_p < 0 or x > cmax:
                cmax, cmax_p, cmax_i = x, k, c
        temps = s["temperatures"]
        for c in range(len(temps)):
            x = float(temps[c])
            t_sum += x
            t_n += 1
            if tmin_p < 0 or x < tmin:
                tmin, tmin_p, tmin_i = x, k, c
            if tmax_p < 0 or x > tmax:
                tmax, tmax_p, tmax_i = x, k, c
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


def step_factor(value: float, table: Sequence[Sequence[float]], high: bool) -> tuple[float, int]:
    """Factor from a step table of ``(threshold, factor)`` rows.

    Args:
        value: the measured value (for example the highest cell voltage [V]).
        table: rows ``(threshold, factor)``; every row whose threshold is reached applies and the
            smallest factor wins, so row order does not matter.
        high: True when a row applies at ``value >= threshold`` (charge side), False when it
            applies at ``value <= threshold`` (discharge side).

    Returns:
        ``(factor, row)``: 1.0 and -1 when no row applies; a NaN value applies the most
        restrictive row (unknown data is treated as the worst case).

    """
    best, row = 1.0, -1
    for r in range(len(table)):
        threshold = float(table[r][0])
        factor = float(table[r][1])
        reached = value != value or (value >= threshold if high else value <= threshold)
        if reached and factor < best:
            best, row = factor, r
    return best, row


__all__ = ["IMPLEMENTATION", "aggregate", "step_factor"]
