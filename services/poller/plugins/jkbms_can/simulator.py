"""A simulated CAN bus of JK BMSs: each pack broadcasts its frames from a BatteryModel.

One :meth:`Simulator.broadcast` is one broadcast period: per pack BATT_ST1, CELL_VOLT, CELL_TEMP,
BATT_ST2, BmsSwSta, the per-cell frames (ceil(cells / 4), unused slots 0) and, only while an
alarm is active, ALM_INFO, all at the id + the pack's address, encoded with the family's own
tables in the ``protocol`` layout given (the family's default). The real BMS sends these at
different rates (20 ms to 1 s); the family does not depend on the order. CELL_TEMP names the
hottest and the coldest of the model's sensors; SoH is 100 %.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import encode
from bmsbank.services.poller.can_family import CanFrame, CanSimulator
from bmsbank.services.poller.plugins.jkbms_can.family import (
    ALARM_PAIRS,
    ALARMS,
    CAPACITY,
    CELL_IDS,
    CELL_RANGE,
    CELLS_PER_FRAME,
    FIELDS,
    STATUS,
    SWITCHES,
    TEMPERATURE,
    Family,
)
from bmsbank.services.poller.simulators.battery import BatteryModel


def frame(base: int, address: int, part: str, values: dict[str, Any]) -> CanFrame:
    """The frame of ``part`` from pack ``address``: 8 data bytes, unused ones 0."""
    data = encode(FIELDS[part], values).ljust(8, b"\0")
    return CanFrame(base + address, data, extended=base > 0x7FF)


class Simulator(CanSimulator):
    """JK BMSs broadcasting at the addresses of ``packs``."""

    family = Family

    def __init__(self, packs: dict[int, BatteryModel], protocol: str = "bb_pkg") -> None:
        super().__init__(packs)
        #: the layout of ALM_INFO and BATT_ST2 (the family's ``protocol`` option)
        self.protocol = protocol

    def broadcast(self) -> list[CanFrame]:
        """One broadcast period of every pack."""
        return [f for address, model in sorted(self.packs.items())
                for f in self.pack_frames(address, model)]  # fmt: skip

    def pack_frames(self, address: int, m: BatteryModel) -> list[CanFrame]:
        """The frames one pack sends in one period."""
        cells = m.cell_voltages
        high = max(range(len(cells)), key=cells.__getitem__)
        low = min(range(len(cells)), key=cells.__getitem__)
        temps = m.temperatures
        hot = max(range(len(temps)), key=temps.__getitem__)
        cold = min(range(len(temps)), key=temps.__getitem__)
        word4, word6 = (m.cycles, 100) if self.protocol == "bb_pkg" else (0, m.cycles)
        frames = [
            frame(STATUS, address, "status",
                  {"voltage": m.voltage, "current": m.effective_current, "soc": m.bms_soc}),
            frame(CELL_RANGE, address, "cell_range",
                  {"max_cell": cells[high], "max_cell_no": high + 1,
                   "min_cell": cells[low], "min_cell_no": low + 1}),
            frame(TEMPERATURE, address, "temperature",
                  {"max_temperature": temps[hot], "max_sensor_no": hot + 1,
                   "min_temperature": temps[cold], "min_sensor_no": cold + 1,
                   "average_temperature": sum(temps) / len(temps)}),
            frame(CAPACITY, address, "capacity",
                  {"remaining": m.capacity * m.bms_soc / 100.0, "capacity": m.capacity,
                   "word4": word4, "word6": word6}),
            frame(SWITCHES, address, "switches",
                  {"switches": int(m.charge_fet) | int(m.discharge_fet) << 1
                   | int(any(m.balancing)) << 2}),
        ]  # fmt: skip
        for n, cid in enumerate(CELL_IDS):
            chunk = cells[n * CELLS_PER_FRAME : (n + 1) * CELLS_PER_FRAME]
            if not chunk:
                break  # frames past the cell count are not sent
            slots = chunk + [0.0] * (CELLS_PER_FRAME - len(chunk))
            frames.append(frame(cid, address, f"cells{n + 1}", {"cells": slots}))
        alarms = self.alarm_value(m)
        if alarms:  # ALM_INFO only while an alarm is active
            frames.append(frame(ALARMS, address, "alarms", {"alarms": alarms}))
        return frames

    def alarm_value(self, m: BatteryModel) -> int:
        """ALM_INFO's pairs for the model's active alarms: level 2 (alarm) each."""
        value = 0
        for pair, name in ALARM_PAIRS[self.protocol].items():
            if name in m.active_alarms:
                value |= 2 << 2 * pair
        return value
