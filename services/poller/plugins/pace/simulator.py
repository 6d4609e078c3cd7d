"""A simulated RS485 bus of Pace packs: answers 0x42 / 0x44 / 0xC1 / 0xC2 and the MOSFET switches.

Requests are found with the family's own ASCII framer; one for an address without a pack, with
another VER or CID1 (another family on the same bus), or a known read whose INFO is not what the
family sends, gets silence, as on a shared bus; another command of this protocol gets the RTN 0x04
"CID2 invalid" reply. Replies are encoded with the family's layouts and framed with
:func:`~bmsbank.services.poller.plugins.pace.family.frame`, so only the captured frames in
tests/test_pace.py tie both to the real wire. Each pack reports its model temperatures as cell
sensors, then its MOSFET and a fixed environment reading (K = n + 2); the protection and fault
bits carry the model's active alarms; 0x9A / 0x9B switch the model's FETs and are acknowledged
with RTN 00 and the byte NK's captures show.
"""

from __future__ import annotations

from typing import Any

from bmsbank.services.poller.plugins.pace.family import (
    ANALOG,
    CID1,
    CMD_ANALOG,
    CMD_CHARGE_FET,
    CMD_DISCHARGE_FET,
    CMD_HARDWARE,
    CMD_SERIAL,
    CMD_STATUS,
    CONFIG_CHARGE_OFF,
    CONFIG_DISCHARGE_OFF,
    FET_CLOSE,
    FET_OPEN,
    HARDWARE,
    INFO_AT,
    PROTECTIONS,
    RTN_OK,
    SERIAL,
    STATUS,
    SYSTEM_CHARGE_FET,
    SYSTEM_CHARGING,
    SYSTEM_DISCHARGE_FET,
    SYSTEM_DISCHARGING,
    VER,
    Family,
    frame,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import (
    CELL_OVER_VOLTAGE,
    CELL_UNDER_VOLTAGE,
    BatteryModel,
)

RTN_CID2_INVALID = 0x04
AMBIENT = 25.0  # °C, the simulated environment sensor
USER_DEFINED = 3  # the "standard" variant of NK's captures
#: the byte a MOSFET switch ack carries (NK's captures: charge open 26, close 24; discharge 04)
SWITCH_ACK = {
    (CMD_CHARGE_FET, FET_OPEN): 0x26,
    (CMD_CHARGE_FET, FET_CLOSE): 0x24,
    (CMD_DISCHARGE_FET, FET_OPEN): 0x04,
    (CMD_DISCHARGE_FET, FET_CLOSE): 0x04,
}


class Simulator(base.Simulator):
    """One RS485 bus with Pace packs at the addresses of ``packs``."""

    family = Family

    def answer(self, request: bytes) -> bytes:
        """Answer a request ``~25 ADR 46 CID2 ...`` (b"" when nobody answers)."""
        req = self._framer.payload(request)
        address, command, info = req[1], req[3], req[INFO_AT:]
        model = self.packs.get(address)
        if model is None or req[0] != VER or req[2] != CID1:
            return b""
        if command in (CMD_ANALOG, CMD_STATUS):
            if info != bytes((address,)):
                return b""
            part = ANALOG if command == CMD_ANALOG else STATUS
            values = self.analog(model, address) if part == ANALOG else self.status(model, address)
            return frame(address, RTN_OK, self.encode(part, values))
        if command in (CMD_HARDWARE, CMD_SERIAL):
            if info:
                return b""
            text = f"P{model.cells}S{model.capacity:.0f}A-SIM-1.00" if command == CMD_HARDWARE \
                else f"SIMPACE{address:02d}"  # fmt: skip
            size = 20 if command == CMD_HARDWARE else 40
            part = HARDWARE if command == CMD_HARDWARE else SERIAL
            return frame(address, RTN_OK, self.encode(part, {"text": text}).ljust(size, b" "))
        if command in (CMD_CHARGE_FET, CMD_DISCHARGE_FET):
            if len(info) != 1 or info[0] not in (FET_OPEN, FET_CLOSE):
                return b""
            if command == CMD_CHARGE_FET:
                model.charge_fet = info[0] == FET_CLOSE
            else:
                model.discharge_fet = info[0] == FET_CLOSE
            return frame(address, RTN_OK, bytes((SWITCH_ACK[command, info[0]],)))
        return frame(address, RTN_CID2_INVALID)

    @staticmethod
    def analog(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x42 reply from the model."""
        sensors = [*m.temperatures, m.mosfet_temperature, AMBIENT]
        return {
            "dataflag": 0, "group": address,
            "cell_count": m.cells, "cells": m.cell_voltages,
            "sensor_count": len(sensors), "sensors": sensors,
            "current": m.effective_current, "voltage": m.voltage,
            "remaining": m.capacity * m.bms_soc / 100.0, "user_defined": USER_DEFINED,
            "capacity": m.capacity, "cycles": m.cycles, "design_capacity": m.capacity,
            "extension": [],
        }  # fmt: skip

    @staticmethod
    def status(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x44 reply from the model."""
        events = base.alarm_bits(m, PROTECTIONS)
        current, sensors = m.effective_current, len(m.temperatures) + 2
        system = (
            SYSTEM_CHARGE_FET * m.charge_fet
            | SYSTEM_DISCHARGE_FET * m.discharge_fet
            | (SYSTEM_CHARGING if current > 0 else SYSTEM_DISCHARGING if current < 0 else 0)
        )
        off = CONFIG_CHARGE_OFF * (not m.charge_fet) | CONFIG_DISCHARGE_OFF * (not m.discharge_fet)
        cells = [2 if v >= CELL_OVER_VOLTAGE else 1 if v <= CELL_UNDER_VOLTAGE else 0
                 for v in m.cell_voltages]  # fmt: skip
        return {
            "dataflag": 0, "group": address,
            "cell_count": m.cells, "cell_alarms": cells,
            "sensor_count": sensors, "sensor_alarms": [0] * sensors,
            "charge_current_alarm": 0, "voltage_alarm": 0, "discharge_current_alarm": 0,
            "protection1": events & 0xFF, "protection2": events >> 8 & 0xFF,
            "system": system, "configuration": off, "fault": events >> 16 & 0xFF,
            "balance": sum(flag << i for i, flag in enumerate(m.balancing[:16])),
            "warning1": 0, "warning2": 0, "extension": [],
        }  # fmt: skip
