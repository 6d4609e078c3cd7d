"""A simulated RS485 bus of Seplos V2 packs: answers 0x42 / 0x44 requests byte-exactly per address.

Requests are found with the family's own ASCII framer; a request for an address without a pack
(or with another CID1) gets silence, as on the real bus (PDF20 §1.3); another command gets the
RTN 0x04 "CID2 invalid" reply the Enjie EMU1101 notes observed. Replies are encoded with the
family's cursor layouts and framed with
:func:`~bmsbank.services.poller.plugins.seplos.family.frame`, so only the captured frames in
tests/test_seplos.py tie both to the real wire format. Each pack reports its model temperatures
as cell sensors, then a fixed ambient reading, then its MOSFET temperature (K = n + 2); the alarm
events carry the protection bits of the model's active alarms; the last reserved 0x44 byte mirrors
the system state, as in every capture.
"""

from __future__ import annotations

from typing import Any

from bmsbank.services.poller.plugins.seplos.family import (
    CID1,
    CMD_STATUS,
    CMD_TELEMETRY,
    PROTECTIONS,
    RTN_OK,
    STATUS,
    SWITCH_CHARGE,
    SWITCH_DISCHARGE,
    TELEMETRY,
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
STATE_DISCHARGE, STATE_CHARGE, STATE_STANDBY = 0x01, 0x02, 0x10
TELEMETRY_CUSTOM, STATUS_CUSTOM = 10, 20  # P of each reply, as on the wire


class Simulator(base.Simulator):
    """One RS485 bus with Seplos V2 packs at the addresses of ``packs``."""

    family = Family

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        super().__init__(packs, echo)

    def answer(self, request: bytes) -> bytes:
        """Answer a request ``~20 ADR 46 CID2 ...`` (b"" when nobody answers)."""
        head = bytes.fromhex(request[1:9].decode("ascii"))  # VER ADR CID1 CID2
        address, cid1, command = head[1], head[2], head[3]
        model = self.packs.get(address)
        if model is None or cid1 != CID1:
            return b""
        if command == CMD_TELEMETRY:
            return frame(address, RTN_OK, self.encode(TELEMETRY, self.telemetry(model, address)))
        if command == CMD_STATUS:
            return frame(address, RTN_OK, self.encode(STATUS, self.status(model, address)))
        return frame(address, RTN_CID2_INVALID)

    @staticmethod
    def telemetry(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x42 reply from the model."""
        sensors = [*m.temperatures, AMBIENT, m.mosfet_temperature]
        return {
            "dataflag": 0, "group": address,
            "cell_count": m.cells, "cells": m.cell_voltages,
            "sensor_count": len(sensors), "sensors": sensors,
            "current": m.effective_current, "voltage": m.voltage, "remaining": m.remaining,
            "custom_count": TELEMETRY_CUSTOM, "capacity": m.capacity, "soc": m.bms_soc,
            "rated_capacity": m.capacity, "cycles": m.cycles, "soh": 100.0,
            "port_voltage": m.voltage, "extension": [0] * (TELEMETRY_CUSTOM - 6),
        }  # fmt: skip

    @staticmethod
    def status(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the 0x44 reply from the model."""
        events = base.alarm_bits(m, PROTECTIONS).to_bytes(8, "little")
        current, sensors = m.effective_current, len(m.temperatures) + 2
        state = STATE_CHARGE if current > 0 else STATE_DISCHARGE if current < 0 else STATE_STANDBY
        balance = sum(flag << i for i, flag in enumerate(m.balancing[:16]))
        cells = [2 if v >= CELL_OVER_VOLTAGE else 1 if v <= CELL_UNDER_VOLTAGE else 0
                 for v in m.cell_voltages]  # fmt: skip
        return {
            "dataflag": 0, "group": address,
            "cell_count": m.cells, "cell_alarms": cells,
            "sensor_count": sensors, "sensor_alarms": [0] * sensors,
            "current_alarm": 0, "voltage_alarm": 0, "custom_count": STATUS_CUSTOM,
            "events": list(events[:6]),
            "switches": SWITCH_DISCHARGE * m.discharge_fet + SWITCH_CHARGE * m.charge_fet,
            "balance": [balance & 0xFF, balance >> 8], "system_state": state,
            "disconnected": [0, 0], "more_events": list(events[6:8]),
            "extension": [0] * (STATUS_CUSTOM - 15) + [state],
        }  # fmt: skip
