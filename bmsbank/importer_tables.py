"""The incumbent's current tables as bmsbank's rows (for :mod:`bmsbank.importer`).

dbus-serialbattery keeps each table as two comma-separated lists, the x values (cell volts, °C,
SoC %) and the fractions of the maximum current, in either order: its ``calc_linear_relationship``
reverses descending lists and holds the end values outside them (utils.py, release
v2.0.20250729). bmsbank takes rows ``[x, fraction]`` with x ascending, the end rows' fractions
also held outside, and for temperatures a window outside which the current is 0 (docs/CONFIG.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bmsbank.importer import Conversion

Rows = list[list[float]]

#: (enable key, x key, fraction key, bmsbank key, what) of the cell-voltage tables
CELL_TABLES = (
    ("CCCM_CV_ENABLE", "CELL_VOLTAGES_WHILE_CHARGING", "MAX_CHARGE_CURRENT_CV_FRACTION",
     "ccl_cell_table", "cell-voltage charge"),
    ("DCCM_CV_ENABLE", "CELL_VOLTAGES_WHILE_DISCHARGING", "MAX_DISCHARGE_CURRENT_CV_FRACTION",
     "dcl_cell_table", "cell-voltage discharge"),
)  # fmt: skip
#: the same plus the window key, of the temperature tables
TEMPERATURE_TABLES = (
    ("CCCM_T_ENABLE", "TEMPERATURES_WHILE_CHARGING", "MAX_CHARGE_CURRENT_T_FRACTION",
     "ccl_temperature_table", "charge_window"),
    ("DCCM_T_ENABLE", "TEMPERATURES_WHILE_DISCHARGING", "MAX_DISCHARGE_CURRENT_T_FRACTION",
     "dcl_temperature_table", "discharge_window"),
)  # fmt: skip
MOSFET_TABLES = (
    ("CCCM_T_MOSFET_ENABLE", "MOSFET_TEMPERATURES_WHILE_CHARGING",
     "MAX_CHARGE_CURRENT_T_MOSFET_FRACTION"),
    ("DCCM_T_MOSFET_ENABLE", "MOSFET_TEMPERATURES_WHILE_DISCHARGING",
     "MAX_DISCHARGE_CURRENT_T_MOSFET_FRACTION"),
)  # fmt: skip
SOC_TABLES = (
    ("CCCM_SOC_ENABLE", "SOC_WHILE_CHARGING", "MAX_CHARGE_CURRENT_SOC_FRACTION", "ccl_soc_table"),
    ("DCCM_SOC_ENABLE", "SOC_WHILE_DISCHARGING", "MAX_DISCHARGE_CURRENT_SOC_FRACTION",
     "dcl_soc_table"),
)  # fmt: skip


def interpolate(rows: Rows, x: float) -> float:
    """The fraction at ``x``: linear between rows, the end rows' outside them."""
    if x <= rows[0][0]:
        return rows[0][1]
    for (x0, f0), (x1, f1) in zip(rows, rows[1:], strict=False):
        if x <= x1:
            return f1 if x1 == x0 else f0 + (f1 - f0) * (x - x0) / (x1 - x0)
    return rows[-1][1]


class Tables:
    """Writes the cell-voltage, temperature, MOSFET and SoC tables of one conversion."""

    def __init__(self, c: Conversion) -> None:
        self.c = c

    def apply(self) -> None:
        """Every table, in the order of config.default.ini."""
        self._cells()
        self._temperatures()
        self._mosfet()
        self._soc()

    def rows(self, xs_key: str, fs_key: str) -> Rows:
        """Rows ``[x, fraction]``, x ascending ("reversed and zipped")."""
        c = self.c
        xs, fs = c.numbers(xs_key), c.numbers(fs_key)
        if not xs:
            raise c.fail(xs_key, "at least one value")
        if len(fs) != len(xs):
            raise c.fail(fs_key, f"{len(xs)} fractions, one per value of {xs_key}")
        if not all(0.0 <= f <= 1.0 for f in fs):
            raise c.fail(fs_key, "fractions 0-1 of the maximum current")
        rows = [[x, f] for x, f in zip(xs, fs, strict=True)]
        if xs == sorted(xs):
            return rows
        if xs == sorted(xs, reverse=True):
            return rows[::-1]
        raise c.fail(xs_key, "values in ascending or descending order")

    def _off(self, enable: str, xs: str, fs: str, what: str) -> None:
        c = self.c
        c.drop(enable, f"bmsbank's {what} cannot be turned off: its defaults stay (docs/CONFIG.md)")
        for key in (xs, fs):
            c.drop(key, f"unused: {enable} = False")

    def _cells(self) -> None:
        for enable, xs, fs, key, what in CELL_TABLES:
            if self.c.flag(enable):
                self.c.set(key, self.rows(xs, fs), enable, xs, fs)
            else:
                self._off(enable, xs, fs, f"{what} table (bank.{key})")

    def _temperatures(self) -> None:
        for enable, xs, fs, key, window_key in TEMPERATURE_TABLES:
            if not self.c.flag(enable):
                self._off(enable, xs, fs, f"bank.{window_key} and bank.{key}")
                continue
            rows = self.rows(xs, fs)
            window, table, note = self._window(rows, xs)
            self.c.set(window_key, window, enable, xs, fs, note=note)
            self.c.set(key, table, xs, fs)

    def _window(self, rows: Rows, xs: str) -> tuple[list[float], Rows, str]:
        """(window, rows inside it, note): the window ends where the fraction stays 0."""
        first = 0
        while first + 1 < len(rows) and rows[first][1] == 0 and rows[first + 1][1] == 0:
            first += 1
        last = len(rows) - 1
        while last - 1 > first and rows[last][1] == 0 and rows[last - 1][1] == 0:
            last -= 1
        table = rows[first : last + 1]
        if table[0][0] >= table[-1][0] or all(f == 0 for _, f in table):
            raise self.c.fail(xs, "a range of temperatures with a current above 0")
        held = [f"{'below' if i == 0 else 'above'} {r[0]:g} °C"
                for i, r in ((0, table[0]), (1, table[-1])) if r[1] > 0]  # fmt: skip
        note = ""
        if held:  # the incumbent held the end fraction there; bmsbank's window stops at 0 A
            note = f"{' and '.join(held)} the incumbent kept its end fraction: bmsbank 0 A there"
        return [table[0][0], table[-1][0]], table, note

    def _mosfet(self) -> None:
        """One MOSFET table (bmsbank has one for charge and discharge): the lower of the two."""
        c = self.c
        on = [(xs, fs, enable) for enable, xs, fs in MOSFET_TABLES if c.flag(enable)]
        if not on:
            self._off(*MOSFET_TABLES[0], "MOSFET temperature table (bank.mosfet_table)")
            self._off(*MOSFET_TABLES[1], "MOSFET temperature table (bank.mosfet_table)")
            return
        tables = [self.rows(xs, fs) for xs, fs, _ in on]
        points = sorted({x for rows in tables for x, _ in rows})
        merged = [[x, min(interpolate(rows, x) for rows in tables)] for x in points]
        lower = "equal tables" if tables[0] == tables[-1] else "the lower fraction at each °C"
        note = f"one table for both: {lower}" if len(on) == 2 else (
            f"applied to charge and discharge: {on[0][2]} alone was on")  # fmt: skip
        keys = [k for xs, fs, enable in on for k in (enable, xs, fs)]
        c.set("mosfet_table", merged, *keys, note=note)
        for enable, xs, fs in MOSFET_TABLES:
            if enable not in keys:
                c.convert(enable, f"bank.mosfet_table ({note})")
                for key in (xs, fs):
                    c.drop(key, f"unused: {enable} = False")

    def _soc(self) -> None:
        for enable, xs, fs, key in SOC_TABLES:
            if self.c.flag(enable):
                self.c.set(key, self.rows(xs, fs), enable, xs, fs)
            else:
                self.c.set(key, [], enable, note="off")
                for k in (xs, fs):
                    self.c.drop(k, f"unused: {enable} = False")
