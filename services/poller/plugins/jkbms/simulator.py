"""A simulated JK BMS on the ``4E 57`` UART protocol: answers read-all requests from a model.

A read-all request (CMD 0x06, or 0x03 with ID 0 as powermon sends it; TYPE 0) is answered with the
command echoed, SRC 0 (BMS), TYPE 1 (reply), the TLV stream encoded from the
:class:`BatteryModel` with the family's own tag table (only the IDs the family decodes, in
ascending order; a real BMS also sends its settings), record number 0, the 0x68 end flag and
``00 00`` + sum16, built with the family's
:func:`~bmsbank.services.poller.plugins.jkbms.family.pack_frame`. Anything else gets silence,
as on a real BMS (no error reply is documented). ``protocol_version=0`` simulates NW_1_0_0
firmware: no 0xC0 and the current as 10000 - 10 mA steps. Only the captured frames in
tests/test_jkbms.py tie the plugin and this simulator to the real wire format.
"""

from __future__ import annotations

from typing import Any

from bmsbank.services.poller.plugins.jkbms.family import (
    CHARGING,
    CMD_AT,
    CMD_READ,
    CMD_READ_ALL,
    CURRENT_ZERO_V0,
    ID_ALL,
    INFO_AT,
    SRC_BMS,
    STATUS_BALANCER,
    STATUS_CHARGE,
    STATUS_DISCHARGE,
    TAIL,
    TYPE_AT,
    TYPE_REPLY,
    TYPE_REQUEST,
    WARNING_ALARMS,
    ZERO_C,
    Family,
    pack_frame,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

SOFTWARE = "11.XW_SIM_1.0__"  # 0xB7, 15 characters like "11.XW_S11.261__"
CHARGE_OCP, DISCHARGE_OCP = 100, 150  # A, the simulated 0x99 / 0x97 settings


def raw_temperature(celsius: float) -> int:
    """The 0x80-0x82 reading of ``celsius`` (1 °C steps; 100 + |t| below 0, at most 99 above)."""
    t = round(celsius)
    return min(t, ZERO_C - 1) if t >= 0 else ZERO_C - t


def raw_current(amps: float, version: int) -> int:
    """The 0x84 reading of ``amps`` (+ = charge) under protocol ``version``."""
    steps = round(amps * 100)
    if version == 0:
        return min(0xFFFF, max(0, CURRENT_ZERO_V0 - steps))
    return min(abs(steps), 0x7FFF) | (CHARGING if steps > 0 else 0)


class Simulator(base.Simulator):
    """One JK BMS on a UART (the key of ``packs`` is nominal: the protocol has no address)."""

    family = Family

    def __init__(
        self, packs: dict[int, BatteryModel], echo: bool = False, protocol_version: int = 1
    ) -> None:
        if len(packs) != 1:
            raise ValueError(f"a JK UART port carries exactly one BMS, got {len(packs)}")
        super().__init__(packs, echo)
        self.protocol_version = protocol_version

    @property
    def model(self) -> BatteryModel:
        """The pack behind this BMS."""
        return next(iter(self.packs.values()))

    def answer(self, request: bytes) -> bytes:
        """Answer a read-all request; silence for anything else."""
        info = request[INFO_AT:-TAIL]
        command = request[CMD_AT]
        if request[TYPE_AT] != TYPE_REQUEST or command not in (CMD_READ_ALL, CMD_READ):
            return b""
        if info != bytes((ID_ALL,)):
            return b""
        tlv = self.encode("all", self.values())
        return pack_frame(command, tlv, source=SRC_BMS, ftype=TYPE_REPLY)

    def values(self) -> dict[str, Any]:
        """The decoded values of a read-all reply, from the model."""
        m = self.model
        temps = (list(m.temperatures) + [m.mosfet_temperature] * 2)[:2]  # T1 box, T2 battery
        status = ((STATUS_CHARGE if m.charge_fet else 0)
                  | (STATUS_DISCHARGE if m.discharge_fet else 0)
                  | (STATUS_BALANCER if any(m.balancing) else 0))  # fmt: skip
        values: dict[str, Any] = {
            "cell_numbers": list(range(1, m.cells + 1)),
            "cells": m.cell_voltages,
            "mosfet_temperature": raw_temperature(m.mosfet_temperature),
            "temperature_1": raw_temperature(temps[0]),
            "temperature_2": raw_temperature(temps[1]),
            "voltage": m.voltage,
            "current_raw": raw_current(m.effective_current, self.protocol_version),
            "soc": round(m.bms_soc),
            "cycles": m.cycles,
            "cell_count": m.cells,
            "warnings": base.alarm_bits(m, WARNING_ALARMS),
            "status": status,
            "discharge_overcurrent": DISCHARGE_OCP,
            "charge_overcurrent": CHARGE_OCP,
            "capacity": round(m.capacity),
            "software_version": SOFTWARE,
        }
        if self.protocol_version:
            values["protocol_version"] = self.protocol_version
        return values
