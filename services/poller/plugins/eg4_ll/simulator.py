"""A simulated RS485 bus of EG4 LL packs: answers FC03 reads byte-exactly per address.

Each pack's register map (status 0-38, identity 105-127) is encoded from its
:class:`BatteryModel` with the family's own register table, in the PDF's units (10 mA, Ah); a
read answers any window inside registers 0-135 (the status, settings and identity blocks DSB
reads; registers the model does not fill read 0) and gets the Modbus exception 2 (illegal data
address) beyond. An address without a pack, and any request that is not an FC03 read, stay
silent. Only the captured frames in tests/test_eg4_ll.py tie this to the real wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import ModbusRtu
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.eg4_ll.family import (
    CELLS,
    ERROR_BITS,
    FC_READ,
    PROBES,
    PROTECTION_BITS,
    REPORTED_PROBES,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

ILLEGAL_ADDRESS = 0x02
LAST_REGISTER = 0x87  # the end of DSB's settings read 0x002D x 0x5B
CHARGING, DISCHARGING = 0x0001, 0x0002
CHARGE_C = 1.0  # max charging current per Ah (WOM's capture: 100 A for 100 Ah)


def probe_words(temperatures: list[float]) -> list[int]:
    """Six one-byte probes (°C, two's complement) packed two per register, first high."""
    raw = [round(t) & 0xFF for t in temperatures[:REPORTED_PROBES]]
    raw += [0] * (PROBES - len(raw))
    return [raw[i] << 8 | raw[i + 1] for i in range(0, PROBES, 2)]


class Simulator(base.Simulator):
    """One RS485 bus with EG4 LL packs at the addresses of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(FC_READ,), requests=True)

    def answer(self, request: bytes) -> bytes:
        """Answer an FC03 read for a pack on the bus (b"" when nobody is there)."""
        read = parse_request(request)
        model = self.packs.get(request[0])
        if read is None or model is None:
            return b""
        address, start, count = read
        if not count or start + count - 1 > LAST_REGISTER:
            return frame(bytes((address, FC_READ | 0x80, ILLEGAL_ADDRESS)))
        data = base.window(self.encode("registers", self.registers(model)), start, count)
        return frame(bytes((address, FC_READ, len(data))) + data)

    @staticmethod
    def registers(m: BatteryModel) -> dict[str, Any]:
        """The register values of pack ``m`` (raw where the family scales by its option)."""
        cells = m.cell_voltages[:CELLS]
        probes = m.temperatures[:REPORTED_PROBES]
        current = m.effective_current
        return {
            "voltage": m.voltage,
            "current_raw": round(current * 100),
            "cells": cells + [0.0] * (CELLS - len(cells)),
            "pcb_temperature": m.mosfet_temperature,
            "average_temperature": sum(probes) / len(probes) if probes else 0.0,
            "max_temperature": max(probes, default=0.0),
            "remaining_raw": round(m.capacity * m.bms_soc / 100.0),
            "charge_current_limit_raw": round(CHARGE_C * m.capacity),
            "soh": 100,
            "soc": round(m.bms_soc),
            "status": CHARGING if current > 0 else DISCHARGING if current < 0 else 0,
            "warning": 0,
            "protection": base.alarm_bits(m, PROTECTION_BITS),
            "error": base.alarm_bits(m, ERROR_BITS),
            "cycles": m.cycles,
            "full_capacity": m.capacity,
            "probe_words": probe_words(probes),
            "cell_count": len(cells),
            "design_capacity": m.capacity,
            "balancing_bits": sum(b << i for i, b in enumerate(m.balancing[:CELLS])),
            "model": f"LFP-{len(cells) * 3.2:.1f}V{round(m.capacity)}Ah-V1.0",
            "firmware": "Z02T04",
            "serial": f"SIM-{m.cycles:06d}",
        }
