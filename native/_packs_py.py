"""Pure-Python twin of the per-pack and per-string kernels compiled into :mod:`._limits`.

Ported line by line to ``_packs.pxi`` (same names in the same order, same comments). The hot part
of a cycle, O(packs x cells): each pack's current limits from its own figures (tables over cells,
temperatures, SoC and MOSFET temperature, FETs and alarms), its cell sums and extremes, and the
sums of a string of packs in series. Used by the engine (``_limits_py``) and its charge side
(``_charge_py``). Units: V, A (+ = charge), Ah, %, °C.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NAN = float("nan")
INF = float("inf")

#: alarms that mean a pack cannot take charge / cannot deliver
CHARGE_BLOCKING = (
    "high_voltage", "high_cell_voltage", "high_charge_temperature", "low_charge_temperature",
    "high_charge_current", "short_circuit", "internal_failure",
)  # fmt: skip
DISCHARGE_BLOCKING = (
    "low_voltage", "low_cell_voltage", "high_temperature", "low_temperature",
    "high_discharge_current", "short_circuit", "internal_failure",
)  # fmt: skip
ALARM_LEVEL = 2


def fraction(x: float, rows: Sequence[Sequence[float]], linear: bool) -> float:
    """Fraction 0-1 of a limit at ``x`` from rows ``(x, fraction)`` sorted by x.

    Outside the rows the end fraction holds. Between two rows: interpolated when ``linear``,
    else the smaller of the two (a step cuts at the earlier row). NaN gives the smallest fraction.
    """
    n = len(rows)
    if n == 0:
        return 1.0
    if x != x:
        return min(float(r[1]) for r in rows)
    if x < rows[0][0]:
        return float(rows[0][1])
    for r in range(1, n):
        x1 = float(rows[r][0])
        if x < x1:
            x0 = float(rows[r - 1][0])
            f0 = float(rows[r - 1][1])
            f1 = float(rows[r][1])
            if linear:
                return f0 + (f1 - f0) * (x - x0) / (x1 - x0)
            return f0 if f0 < f1 else f1
    return float(rows[n - 1][1])


def reason(rule: str, pack: int, item: int, value: float, amount: float) -> tuple:
    """A reason tuple ``(rule, pack, item, value, amount, share)`` without a share."""
    return (rule, pack, item, value, amount, NAN)


class PackRules:
    """What limits one pack's currents: maxima, tables, temperature windows."""

    def __init__(self, p: Mapping[str, Any]) -> None:
        """Take the per-pack maxima and the tables from the engine parameters."""
        self.max_ccl = [float(x) for x in p["max_charge_current"]]
        self.max_dcl = [float(x) for x in p["max_discharge_current"]]
        self.linear = bool(p["linear"])
        self.charge_window = (float(p["charge_window"][0]), float(p["charge_window"][1]))
        self.discharge_window = (float(p["discharge_window"][0]), float(p["discharge_window"][1]))
        self.tables = {
            key: [(float(r[0]), float(r[1])) for r in p[key]]
            for key in (
                "ccl_cell_table", "dcl_cell_table", "ccl_temperature_table",
                "dcl_temperature_table", "ccl_soc_table", "dcl_soc_table", "mosfet_table",
            )
        }  # fmt: skip

    def evaluate(self, k: int, s: Mapping[str, Any], limit: float) -> list:
        """Limits and cell figures of pack ``k``.

        Returns:
            [ccl, ccl_why, dcl, dcl_why, cells, cell_sum, excess over ``limit``, max cell,
            max index, min cell, min index, min temperature, its index, max temperature, index,
            sum of temperatures, number of sensors]
        """
        nc, csum, excess, cmax, imax, cmin, imin = _cell_figures(s["cells"], limit)
        top_c = self.max_ccl[k]
        top_d = self.max_dcl[k]
        ccl, cw = top_c, reason("config", k, -1, NAN, top_c)
        dcl, dw = top_d, reason("config", k, -1, NAN, top_d)
        x = s["bms_ccl"]
        if x is not None and x < ccl:
            ccl, cw = float(x), reason("bms", k, -1, float(x), float(x))
        x = s["bms_dcl"]
        if x is not None and x < dcl:
            dcl, dw = float(x), reason("bms", k, -1, float(x), float(x))
        a = fraction(cmax, self.tables["ccl_cell_table"], self.linear) * top_c
        if a < ccl:
            ccl, cw = a, reason("cell_table", k, imax, cmax, a)
        a = fraction(cmin, self.tables["dcl_cell_table"], self.linear) * top_d
        if a < dcl:
            dcl, dw = a, reason("cell_table", k, imin, cmin, a)
        ccl, cw, dcl, dw, temperatures = self._temperatures(
            k, s["temperatures"], top_c, top_d, ccl, cw, dcl, dw
        )
        soc = float(s["soc"])
        a = fraction(soc, self.tables["ccl_soc_table"], self.linear) * top_c
        if a < ccl:
            ccl, cw = a, reason("soc_table", k, -1, soc, a)
        a = fraction(soc, self.tables["dcl_soc_table"], self.linear) * top_d
        if a < dcl:
            dcl, dw = a, reason("soc_table", k, -1, soc, a)
        x = s["mosfet_temperature"]
        if x is not None:
            a = fraction(float(x), self.tables["mosfet_table"], self.linear)
            if a * top_c < ccl:
                ccl, cw = a * top_c, reason("mosfet_table", k, -1, float(x), a * top_c)
            if a * top_d < dcl:
                dcl, dw = a * top_d, reason("mosfet_table", k, -1, float(x), a * top_d)
        ccl, cw = _blocked(s, k, "charge_fet", CHARGE_BLOCKING, ccl, cw)
        dcl, dw = _blocked(s, k, "discharge_fet", DISCHARGE_BLOCKING, dcl, dw)
        return [ccl, cw, dcl, dw, nc, csum, excess, cmax, imax, cmin, imin, *temperatures]

    def _temperatures(
        self,
        k: int,
        temps: Sequence[float],
        top_c: float,
        top_d: float,
        ccl: float,
        cw: tuple,
        dcl: float,
        dw: tuple,
    ) -> tuple[float, tuple, float, tuple, list]:
        """Temperature windows and tables over every sensor of pack ``k``, on its limits so far.

        Returns:
            (ccl, ccl_why, dcl, dcl_why, [min temperature, its index, max temperature, index, sum
            of temperatures, number of sensors]).
        """
        tmin = tmax = NAN
        itmin = itmax = -1
        tsum = 0.0
        if len(temps) == 0:
            ccl, cw = 0.0, reason("no_temperature", k, -1, NAN, 0.0)
            dcl, dw = 0.0, reason("no_temperature", k, -1, NAN, 0.0)
        for c in range(len(temps)):
            x = float(temps[c])
            tsum += x
            if itmin < 0 or x < tmin:
                tmin, itmin = x, c
            if itmax < 0 or x > tmax:
                tmax, itmax = x, c
            ccl, cw = _sensor_limit(x, self.charge_window, self.tables["ccl_temperature_table"],
                                    self.linear, top_c, k, c, ccl, cw)  # fmt: skip
            dcl, dw = _sensor_limit(x, self.discharge_window, self.tables["dcl_temperature_table"],
                                    self.linear, top_d, k, c, dcl, dw)  # fmt: skip
        return ccl, cw, dcl, dw, [tmin, itmin, tmax, itmax, tsum, len(temps)]


def _sensor_limit(
    x: float, window: Sequence[float], table: Sequence[Sequence[float]], linear: bool, top: float,
    k: int, c: int, limit: float, why: tuple,
) -> tuple[float, tuple]:  # fmt: skip
    """Cut ``limit`` to what sensor ``c`` at ``x`` degC allows; returns (limit, reason).

    0 A outside ``window``, else ``table``'s fraction of ``top``.
    """
    if x < window[0] or x > window[1]:
        a, rule = 0.0, "temperature_window"
    else:
        a, rule = fraction(x, table, linear) * top, "temperature_table"
    return (a, reason(rule, k, c, x, a)) if a < limit else (limit, why)


def _cell_figures(cells: Sequence[float], limit: float) -> tuple:
    """Cells of one pack: (count, sum, excess over ``limit``, max, its index, min, its index)."""
    nc = len(cells)
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
    return nc, csum, excess, cmax, imax, cmin, imin


def extremes(packs: list) -> dict:
    """Highest and lowest cell and temperature, and mean temperature, of every pack online."""
    out = {
            "max_cell_voltage": NAN, "max_cell_pack": -1, "max_cell_index": -1,
            "min_cell_voltage": NAN, "min_cell_pack": -1, "min_cell_index": -1,
            "max_temperature": NAN, "max_temperature_pack": -1, "max_temperature_index": -1,
            "min_temperature": NAN, "min_temperature_pack": -1, "min_temperature_index": -1,
        }  # fmt: skip
    tsum = 0.0
    tn = 0
    for k in range(len(packs)):
        q = packs[k]
        if q is None:
            continue
        tsum += q[15]
        tn += q[16]
        if out["max_cell_pack"] < 0 or q[7] > out["max_cell_voltage"]:
            out.update(max_cell_voltage=q[7], max_cell_pack=k, max_cell_index=q[8])
        if out["min_cell_pack"] < 0 or q[9] < out["min_cell_voltage"]:
            out.update(min_cell_voltage=q[9], min_cell_pack=k, min_cell_index=q[10])
        if q[12] >= 0 and (out["min_temperature_pack"] < 0 or q[11] < out["min_temperature"]):
            out.update(min_temperature=q[11], min_temperature_pack=k,
                           min_temperature_index=q[12])  # fmt: skip
        if q[14] >= 0 and (out["max_temperature_pack"] < 0 or q[13] > out["max_temperature"]):
            out.update(max_temperature=q[13], max_temperature_pack=k,
                           max_temperature_index=q[14])  # fmt: skip
    out["temperature"] = tsum / tn if tn else NAN
    return out


def _blocked(
    s: Mapping[str, Any], k: int, fet: str, names: Sequence[str], limit: float, why: tuple
) -> tuple[float, tuple]:
    """0 A when the pack's FET is off or one of ``names`` is in alarm."""
    if not s[fet]:
        return 0.0, reason("fet", k, -1, NAN, 0.0)
    alarms = s["alarms"]
    for i in range(len(names)):
        if alarms.get(names[i], 0) >= ALARM_LEVEL:
            return 0.0, reason("alarm", k, i, NAN, 0.0)
    return limit, why


def string_row(
    members: Sequence[int],
    states: Sequence[Any],
    packs: list,
    cells_cfg: Sequence[int],
    caps_cfg: Sequence[float],
) -> dict:
    """One string of packs in series: voltages, cells and CVLs add, limits are the smallest."""
    row: dict = {
        "packs": len(members), "voltage": 0.0, "current": 0.0, "power": 0.0, "cells": 0,
        "cell_sum": 0.0, "excess": 0.0, "capacity": INF, "soc": INF, "bms_cvl": 0.0,
        "bms_cvl_pack": -1, "ccl": INF, "ccl_why": None, "dcl": INF, "dcl_why": None,
        "max_cell": -INF, "max_pack": -1, "max_index": -1, "min_cell": INF,
    }  # fmt: skip
    for k in members:
        s = states[k]
        q = packs[k]
        row["voltage"] += float(s["voltage"])
        row["current"] += float(s["current"]) / len(members)
        row["power"] += float(s["voltage"]) * float(s["current"])
        row["cells"] += cells_cfg[k] if cells_cfg[k] > 0 else q[4]
        row["cell_sum"] += q[5]
        row["excess"] += q[6]
        cap = caps_cfg[k] if caps_cfg[k] > 0.0 else float(s["capacity"])
        if cap < row["capacity"]:
            row["capacity"] = cap
        if float(s["soc"]) < row["soc"]:
            row["soc"] = float(s["soc"])
        bms_cvl = s["bms_cvl"]
        if bms_cvl is not None and row["bms_cvl"] == row["bms_cvl"]:
            row["bms_cvl"] += float(bms_cvl)
            row["bms_cvl_pack"] = k
        else:
            row["bms_cvl"] = NAN
        if q[0] < row["ccl"]:
            row["ccl"], row["ccl_why"] = q[0], q[1]
        if q[2] < row["dcl"]:
            row["dcl"], row["dcl_why"] = q[2], q[3]
        if q[7] > row["max_cell"]:
            row["max_cell"], row["max_pack"], row["max_index"] = q[7], k, q[8]
        if q[9] < row["min_cell"]:
            row["min_cell"] = q[9]
    if row["bms_cvl"] != row["bms_cvl"] or row["bms_cvl_pack"] < 0:
        row["bms_cvl"] = INF  # only a string whose every pack reports a CVL has one
    return row


def configured_cells(strings: Sequence[Sequence[int]], cells: Sequence[int]) -> int:
    """Series cells of the bank from the config (0 when some pack's count is not configured)."""
    totals = [sum(cells[k] for k in s) for s in strings if all(cells[k] > 0 for k in s)]
    return min(totals) if totals and len(totals) == len(strings) else 0


def spread(rows: Sequence[Mapping[str, Any]]) -> float:
    """Highest minus lowest cell over the strings [V] (NaN when none)."""
    if not rows:
        return NAN
    return max(row["max_cell"] for row in rows) - min(row["min_cell"] for row in rows)


__all__ = [
    "CHARGE_BLOCKING", "DISCHARGE_BLOCKING", "PackRules", "configured_cells", "extremes",
    "fraction", "reason", "spread", "string_row",
]  # fmt: skip
