"""A simulated ANT BMS on the legacy UART protocol: answers ``DB DB 00 00 00 00`` from a model.

The 140-byte status frame is encoded from the :class:`BatteryModel` with the family's own field
table and closed with the family's sum16; any other request gets silence (nothing else is
documented to answer). A fault of the model is sent the way the BMS reports it: as the status code
of the FET it switched off (the charge FET's code where both tables have the fault). Only the
captured frames in tests/test_ant.py tie this to the real wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.frames import checksum
from bmsbank.services.poller.plugins.ant.family import (
    CHARGE_ALARMS,
    DISCHARGE_ALARMS,
    FET_ON,
    FRAME_LENGTH,
    HEADER,
    MAX_CELLS,
    PROBES,
    READ_STATUS,
    REQUEST_FRAMING,
    Family,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

AUTOMATIC_BALANCING = 4  # balancer status code while it bleeds cells (OLD's table)


def fet_codes(m: BatteryModel) -> tuple[int, int]:
    """The charge and discharge FET status codes of ``m``: a protection's code, else on / off."""
    charge_codes, discharge_codes = base.invert(CHARGE_ALARMS), base.invert(DISCHARGE_ALARMS)
    charge = FET_ON if m.charge_fet else 0
    discharge = FET_ON if m.discharge_fet else 0
    for name in sorted(m.active_alarms):
        if name in charge_codes:
            charge = charge_codes[name]
        elif name in discharge_codes:
            discharge = discharge_codes[name]
    return charge, discharge


class Simulator(base.Simulator):
    """One ANT BMS on a UART (the key of ``packs`` is nominal: the protocol has no address)."""

    family = Family
    request_framing = REQUEST_FRAMING

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        if len(packs) != 1:
            raise ValueError(f"an ANT UART port carries exactly one BMS, got {len(packs)}")
        super().__init__(packs, echo)

    @property
    def model(self) -> BatteryModel:
        """The pack behind this BMS."""
        return next(iter(self.packs.values()))

    def answer(self, request: bytes) -> bytes:
        """The status frame for the status request; silence for anything else."""
        if request != READ_STATUS:
            return b""
        body = bytearray(self.encode("status", self.values()).ljust(FRAME_LENGTH - 2, b"\0"))
        body[: len(HEADER)] = HEADER
        return bytes(body) + checksum("sum16", body[len(HEADER) :]).to_bytes(2, "big")

    def values(self) -> dict[str, Any]:
        """The decoded values of a status frame, from the model."""
        m = self.model
        cells = m.cell_voltages[:MAX_CELLS]
        current = m.effective_current
        charge, discharge = fet_codes(m)
        balancing = m.balancing[:MAX_CELLS]
        probes = list(m.temperatures[:PROBES])
        return {
            "voltage": m.voltage,
            "cells": cells + [0.0] * (MAX_CELLS - len(cells)),
            "discharge_current": -current,
            "soc": round(m.bms_soc),
            "capacity": m.capacity,
            "remaining": m.remaining,
            "cycle_capacity": m.cycles * m.capacity + 0.5,  # mid-cycle: floor gives m.cycles
            "uptime": 3600,
            "temperatures": probes + [None] * (PROBES - len(probes)),  # None: NO_PROBE
            "charge_status": charge,
            "discharge_status": discharge,
            "balancer_status": AUTOMATIC_BALANCING if any(balancing) else 0,
            "power": round(-current * m.voltage),
            "cell_max_number": cells.index(max(cells)) + 1,
            "cell_max": max(cells),
            "cell_min_number": cells.index(min(cells)) + 1,
            "cell_min": min(cells),
            "cell_average": sum(cells) / len(cells),
            "cell_count": len(cells),
            "balancing_bits": sum(b << i for i, b in enumerate(balancing)),
        }
