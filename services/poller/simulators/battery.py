"""A small LiFePO4 pack model behind every simulator (cells, temperatures, current, SoC).

Good enough to exercise decoding and the bank view: SoC moves with current, cell voltages follow a
LiFePO4 open-circuit curve plus I*R and a settable imbalance, protection flags follow the cells.
Protocol encoders read the attributes; tests and the demo set them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (SoC %, open-circuit cell voltage V): flat in the middle, steep knees at both ends.
LFP_OCV = (
    (0.0, 2.50), (5.0, 3.00), (10.0, 3.20), (20.0, 3.25), (30.0, 3.28), (40.0, 3.29),
    (50.0, 3.30), (60.0, 3.31), (70.0, 3.32), (80.0, 3.33), (90.0, 3.35), (95.0, 3.38),
    (98.0, 3.45), (100.0, 3.60),
)  # fmt: skip

CELL_OVER_VOLTAGE = 3.65  # V, BMS cuts charge above this
CELL_UNDER_VOLTAGE = 2.50  # V, BMS cuts discharge below this


def ocv(soc: float) -> float:
    """Open-circuit voltage [V] of a LiFePO4 cell at ``soc`` [%] (linear between points)."""
    soc = min(100.0, max(0.0, soc))
    for (s0, v0), (s1, v1) in zip(LFP_OCV, LFP_OCV[1:], strict=False):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return LFP_OCV[-1][1]


@dataclass
class BatteryModel:
    """State of one simulated pack. Units: V, A (+ = charge), Ah, %, °C."""

    cells: int = 16
    capacity: float = 100.0
    soc: float = 60.0
    current: float = 0.0
    temperatures: list[float] = field(default_factory=lambda: [25.0, 26.0])
    mosfet_temperature: float = 30.0
    imbalance: float = 0.0  #: V added linearly across the cells (last cell highest)
    resistance: float = 0.0005  #: Ω per cell
    cycles: int = 12
    charge_fet: bool = True  #: the charge FET conducts (a write can switch it off)
    discharge_fet: bool = True  #: the discharge FET conducts
    balancer: bool = True  #: the balancer is enabled (no balancing flags when off)
    soc_error: float = 0.0  #: % the BMS's own counted SoC is off the true one (drift)
    faults: set[str] = field(default_factory=set)  #: alarm names forced active (schema.ALARMS)

    def step(self, dt: float) -> None:
        """Advance the model by ``dt`` seconds: integrate current into SoC."""
        current = self.effective_current
        self.soc = min(100.0, max(0.0, self.soc + current * dt / 36.0 / self.capacity))

    @property
    def effective_current(self) -> float:
        """Current that can flow with the FETs as they are [A]."""
        if self.current > 0 and not self.charge_fet:
            return 0.0
        if self.current < 0 and not self.discharge_fet:
            return 0.0
        return self.current

    @property
    def bms_soc(self) -> float:
        """The SoC the BMS reports [%]: the true one plus its drift (``soc_error``)."""
        return min(100.0, max(0.0, self.soc + self.soc_error))

    def resync_soc(self) -> None:
        """The BMS re-synchronises its counted SoC (a "reset SoC" command): no more drift."""
        self.soc_error = 0.0

    @property
    def cell_voltages(self) -> list[float]:
        """Cell voltages [V], cell 1 first."""
        base = ocv(self.soc) + self.effective_current * self.resistance
        n = self.cells
        return [base + (self.imbalance * i / (n - 1) if n > 1 else 0.0) for i in range(n)]

    @property
    def voltage(self) -> float:
        """Pack voltage [V]."""
        return sum(self.cell_voltages)

    @property
    def remaining(self) -> float:
        """Remaining capacity [Ah]."""
        return self.capacity * self.soc / 100.0

    @property
    def balancing(self) -> list[int]:
        """1 for each cell the balancer bleeds (10 mV above the lowest, above 3.40 V)."""
        cells = self.cell_voltages
        low = min(cells)
        on = self.balancer and max(cells) > 3.40
        return [1 if on and v - low > 0.010 else 0 for v in cells]

    @property
    def active_alarms(self) -> set[str]:
        """Alarm names a real BMS would flag now (forced faults plus cell protection)."""
        active = set(self.faults)
        cells = self.cell_voltages
        if max(cells) >= CELL_OVER_VOLTAGE:
            active.add("high_cell_voltage")
        if min(cells) <= CELL_UNDER_VOLTAGE:
            active.add("low_cell_voltage")
        return active

    def snapshot(self) -> dict:
        """The true values, for tests that compare what the bank shows with what the pack has."""
        return {
            "voltage": self.voltage,
            "current": self.effective_current,
            "soc": self.soc,
            "capacity": self.capacity,
            "remaining": self.remaining,
            "cells": self.cell_voltages,
            "temperatures": list(self.temperatures),
            "charge_fet": self.charge_fet,
            "discharge_fet": self.discharge_fet,
            "alarms": sorted(self.active_alarms),
        }
