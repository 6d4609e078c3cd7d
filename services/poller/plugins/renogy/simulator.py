"""A simulated RS485 bus of Renogy smart batteries: answers FC03 reads byte-exactly per address.

Each battery's register map (5000-5052 and 5100-5131) is encoded from its :class:`BatteryModel`
with the family's own register table; a read answers any window inside one of those two ranges
(the ranges Grmume/renogy-smart-battery's register scan found answering) and gets the Modbus
exception 2 (illegal data address) otherwise. An address without a battery stays silent. Only
the captured frames in tests/test_renogy.py tie this to the real wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import ModbusRtu
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.renogy.family import (
    CELLS,
    CHARGE_FET_BIT,
    DISCHARGE_FET_BIT,
    FC_READ,
    OTHER_ALARMS,
    PROBES,
    STATUS1_ALARMS,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

ILLEGAL_ADDRESS = 0x02
#: register ranges a battery answers, first and last (inclusive)
RANGES = ((5000, 5052), (5100, 5131))
#: the BMS's limits per cell and per Ah of capacity (Grmume's scan of a 4-cell 100 Ah pack reads
#: 50 A charge and -100 A discharge; 3.55 V per cell charge is the usual LiFePO4 absorption)
CELL_CHARGE_VOLTAGE, CELL_DISCHARGE_VOLTAGE = 3.55, 2.5
CHARGE_C, DISCHARGE_C = 0.5, 1.0


class Simulator(base.Simulator):
    """One RS485 bus with Renogy batteries at the addresses of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(FC_READ,), requests=True)

    def answer(self, request: bytes) -> bytes:
        """Answer an FC03 read for a battery on the bus (b"" when nobody is there)."""
        read = parse_request(request)
        model = self.packs.get(request[0])
        if read is None or model is None:
            return b""
        address, start, count = read
        if not count or not any(lo <= start and start + count - 1 <= hi for lo, hi in RANGES):
            return frame(bytes((address, FC_READ | 0x80, ILLEGAL_ADDRESS)))
        data = base.window(self.encode("registers", self.registers(model)), start, count)
        return frame(bytes((address, FC_READ, len(data))) + data)

    @staticmethod
    def registers(m: BatteryModel) -> dict[str, Any]:
        """The register values of battery ``m``."""
        cells = m.cell_voltages[:CELLS]
        probes = m.temperatures[:PROBES]
        status1 = base.alarm_bits(m, STATUS1_ALARMS)
        status1 |= m.charge_fet << CHARGE_FET_BIT | m.discharge_fet << DISCHARGE_FET_BIT
        return {
            "cell_count": len(cells),
            "cells": cells + [0.0] * (CELLS - len(cells)),
            "probe_count": len(probes),
            "cell_temperatures": probes + [0.0] * (PROBES - len(probes)),
            "current": m.effective_current,
            "voltage": m.voltage,
            "remaining": m.capacity * m.bms_soc / 100.0,
            "capacity": m.capacity,
            "cycles": m.cycles,
            "charge_voltage_limit": CELL_CHARGE_VOLTAGE * len(cells),
            "discharge_voltage_limit": CELL_DISCHARGE_VOLTAGE * len(cells),
            "charge_current_limit": CHARGE_C * m.capacity,
            "discharge_current_limit": -DISCHARGE_C * m.capacity,
            "cell_voltage_alarms": 0,
            "cell_temperature_alarms": 0,
            "other_alarms": base.alarm_bits(m, OTHER_ALARMS),
            "status1": status1,
            "status2": 0,
            "serial": f"SIM{m.cycles:05d}",
            "name": f"RBT{round(m.capacity)}LFP12S",
            "software_version": "0119",
        }
