"""A simulated RS485 chain of JBD UP-series packs: answers the family's five reads per address.

Requests are found with a ModbusRtu request framer for fn 0x45/0x78 (``long_functions``) and
answered only when they are exactly what the family sends: a known window, n = 0, a pack at the
address; the individual status (fn 0x45) only at the master, address 1. Anything else (another
family's Modbus request, a write, another window) gets silence, as on a shared bus. A reply
repeats the request's function, start and end, then the data length the real packs send (156
bytes of status, 64 of params2, 116 of individual status, 134 of params1, 44 of product
information: DSB's test frames) and the CRC. Values come from the pack's
:class:`BatteryModel`, encoded with the family's layouts, so only the frames in
tests/test_lltjbd_up16s.py tie both to the wire. The master's status carries the bank's limits
(the sum over the packs), its individual status its own, as on the real chain.
"""

from __future__ import annotations

from typing import Any, ClassVar

from bmsbank.native.spec import FrameSpec, ModbusRtu
from bmsbank.services.poller.plugins.base import modbus_frame
from bmsbank.services.poller.plugins.lltjbd_up16s.family import (
    FN_INDIVIDUAL,
    FN_READ,
    INDIVIDUAL,
    MASTER,
    PARAMS1,
    PARAMS2,
    PRODUCT,
    PROTECTIONS,
    STATUS,
    WINDOWS,
    Family,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

#: part -> data bytes of its reply (DSB's test frames)
REPLY_SIZES = {STATUS: 156, PARAMS2: 64, INDIVIDUAL: 116, PARAMS1: 134, PRODUCT: 44}
CHARGE_C_RATE, DISCHARGE_C_RATE = 0.5, 1.0  # the simulated packs' own current limits
CELL_CHARGE_VOLTAGE, CELL_DISCHARGE_VOLTAGE = 3.6, 2.7  # V per cell: the simulated DVCC limits
FIRMWARE = (12, 1, 7)
AMBIENT = 25.0  # °C


class Simulator(base.Simulator):
    """One RS485 chain of JBD UP-series packs at the addresses of ``packs``."""

    family: ClassVar[type[Family]] = Family
    request_framing: ClassVar[FrameSpec | None] = ModbusRtu(
        functions=(FN_INDIVIDUAL, FN_READ), addresses=(1, 255), requests=True,
        long_functions=(FN_INDIVIDUAL, FN_READ),
    )  # fmt: skip

    def answer(self, request: bytes) -> bytes:
        """Answer one read (b"" when nobody on the chain answers it)."""
        address, fn = request[0], request[1]
        start, end = request[2] << 8 | request[3], request[4] << 8 | request[5]
        model = self.packs.get(address)
        if model is None or request[6:8] != b"\0\0":
            return b""
        asked = {(f, first, first + size): p for p, (f, first, size) in WINDOWS.items()}
        part = asked.get((fn, start, end))
        if part is None or (part == INDIVIDUAL and address != MASTER):
            return b""
        values = getattr(self, part)(model, address)
        data = self.encode(part, values).ljust(REPLY_SIZES[part], b"\0")
        return modbus_frame(request[:6] + len(data).to_bytes(2, "big") + data)

    def limits(self, address: int) -> tuple[float, float]:
        """The charge and discharge current limits the status of ``address`` reports [A]."""
        packs = self.packs.values() if address == MASTER else [self.packs[address]]
        return (sum(CHARGE_C_RATE * m.capacity for m in packs),
                sum(DISCHARGE_C_RATE * m.capacity for m in packs))  # fmt: skip

    def status(self, m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the pack status (0x1000)."""
        cells, temps = m.cell_voltages, list(m.temperatures) or [AMBIENT]
        ccl, dcl = self.limits(address)
        hot, cold = temps.index(max(temps)), temps.index(min(temps))
        flags = base.alarm_bits(m, PROTECTIONS)
        return {
            "voltage": m.voltage, "unknown1": 0, "current": m.effective_current,
            "status_soc": round(m.bms_soc, 2), "remaining": m.capacity * m.bms_soc / 100.0,
            "capacity": m.capacity, "rated_capacity": m.capacity,
            "mosfet_temperature": m.mosfet_temperature, "ambient_temperature": AMBIENT,
            "operation_status": 1, "soh": 100,
            "fault_flags": flags & 0xFFFFFFFF, "alarm_flags": flags >> 32,
            "mosfet_flags": m.discharge_fet | m.charge_fet << 1, "connection_flags": 0,
            "cycles": m.cycles,
            "max_cell_number": cells.index(max(cells)) + 1, "max_cell_voltage": max(cells),
            "min_cell_number": cells.index(min(cells)) + 1, "min_cell_voltage": min(cells),
            "avg_cell_voltage": sum(cells) / len(cells),
            "max_sensor_number": hot + 1, "max_temperature": temps[hot],
            "min_sensor_number": cold + 1, "min_temperature": temps[cold],
            "avg_temperature": sum(temps) / len(temps),
            "charge_voltage_limit": CELL_CHARGE_VOLTAGE * m.cells, "charge_current_limit": ccl,
            "discharge_voltage_limit": CELL_DISCHARGE_VOLTAGE * m.cells,
            "discharge_current_limit": dcl,
            "cell_count": m.cells, "cells": cells,
            "sensor_count": len(m.temperatures), "temperatures": list(m.temperatures),
            "unknown2": 0, "balancing": sum(b << i for i, b in enumerate(m.balancing[:16])),
            "firmware": FIRMWARE[0] << 8 | FIRMWARE[1], "pack_serial": self.serial(address),
            "extension": [0] * 10,
        }  # fmt: skip

    @staticmethod
    def params2(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of params2 (0x2000): the high-resolution SoC and the lifetime totals."""
        total = m.cycles * m.capacity
        return {"soc": m.bms_soc, "charged_total": total, "discharged_total": total}

    @staticmethod
    def individual(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the individual status (fn 0x45): the pack's own limits."""
        return {"charge_current_limit": CHARGE_C_RATE * m.capacity,
                "discharge_current_limit": DISCHARGE_C_RATE * m.capacity}  # fmt: skip

    def params1(self, m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of params1 (0x1C00): serials and production dates."""
        return {"bms_serial": f"UP16S015SIM{address:04d}", "bms_date": [2025, 5, 7],
                "pack_serial": self.serial(address), "pack_date": [2025, 4, 6]}  # fmt: skip

    @staticmethod
    def product(m: BatteryModel, address: int) -> dict[str, Any]:
        """Values of the product information (0x2810)."""
        return {"model_id": 33, "hardware_revision": 3, "firmware": list(FIRMWARE),
                "model": f"UP16S015.{m.cells}S{m.capacity:.0f}A", "project": "JBD"}  # fmt: skip

    @staticmethod
    def serial(address: int) -> str:
        """The simulated pack serial at ``address``."""
        return f"JBDSIM{address:05d}"
