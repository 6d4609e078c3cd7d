"""A simulated RS485 bus of Seplos v3 packs: answers FC04/FC01 reads byte-exactly per address.

Each pack's whole register map (PIA, PIB, SPA) and coil map (PIC) are encoded from its
:class:`BatteryModel` with the family's own layouts; a read answers any window inside one block
the pack has (the blocks of :data:`~.family.BLOCKS`) and gets the Modbus exception 2 (illegal data
address) otherwise, as a real pack answers an over-long read (see the family's sources). An
address without a pack stays silent. Only the captured frames in tests/test_seplosv3.py tie this
to the real wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import ModbusRtu
from bmsbank.services.poller.plugins.base import bits
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.seplosv3.family import (
    BLOCKS,
    CELLS,
    CHARGE_FET,
    DISCHARGE_FET,
    FC_INPUTS,
    PROBES,
    PROTECTION_BITS,
    STATUS,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import (
    CELL_OVER_VOLTAGE,
    CELL_UNDER_VOLTAGE,
    BatteryModel,
)

ILLEGAL_ADDRESS = 0x02
CURRENT_LIMIT = 180  # A, as every capture shows
CELL_CHARGE_VOLTAGE = 3.47  # V, 55.52 V / 16 in serialbattery issue #1056
AMBIENT = 25.0  # °C
#: TB09 system state bits
DISCHARGING, CHARGING, STANDBY = 0, 1, 4


class Simulator(base.Simulator):
    """One RS485 bus with Seplos v3 packs at the addresses of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(1, 4), requests=True)

    def answer(self, request: bytes) -> bytes:
        """Answer an FC01/FC04 read for a pack on the bus (b"" when nobody is there)."""
        read = parse_request(request)
        model = self.packs.get(request[0])
        if read is None or model is None:
            return b""
        address, function, start, count = read
        if not any(fc == function and first <= start and start + count <= first + n
                   for fc, first, n in BLOCKS.values()) or not count:  # fmt: skip
            return frame(bytes((address, function | 0x80, ILLEGAL_ADDRESS)))
        if function == FC_INPUTS:
            data = base.window(self.encode("registers", self.registers(model)), start, count)
        else:
            data = base.window(self.encode("coils", self.coils(model)), start, count, width=1)
        return frame(bytes((address, function, len(data))) + data)

    @staticmethod
    def registers(m: BatteryModel) -> dict[str, Any]:
        """The register values (PIA, PIB, SPA) of pack ``m``."""
        cells = m.cell_voltages[:CELLS]
        probes = m.temperatures[:PROBES]
        return {
            "voltage": m.voltage,
            "current": m.effective_current,
            "remaining": m.remaining,
            "capacity": m.capacity,
            "discharged_total": m.cycles * m.capacity,
            "soc": m.bms_soc,
            "soh": 100.0,
            "cycles": m.cycles,
            "cell_average": sum(cells) / len(cells),
            "temperature_average": sum(probes) / len(probes) if probes else 0.0,
            "cell_max": max(cells),
            "cell_min": min(cells),
            "temperature_max": max(probes, default=0.0),
            "temperature_min": min(probes, default=0.0),
            "max_discharge_current": CURRENT_LIMIT,
            "max_charge_current": CURRENT_LIMIT,
            "cells": cells + [0.0] * (CELLS - len(cells)),
            "cell_temperatures": probes + [0.0] * (PROBES - len(probes)),  # 2731: no probe
            "ambient_temperature": AMBIENT,
            "mosfet_temperature": m.mosfet_temperature,
            "ntc_count": len(probes),
            "cell_count": len(cells),
            "rated_capacity": m.capacity,
            "charge_voltage_limit": CELL_CHARGE_VOLTAGE * len(cells),
            "charge_current_limit": CURRENT_LIMIT,
            "discharge_current_limit": -CURRENT_LIMIT,
        }

    @staticmethod
    def coils(m: BatteryModel) -> dict[str, Any]:
        """The coil values (PIC) of pack ``m``."""
        cells = m.cell_voltages[:CELLS] + [3.3] * (CELLS - min(m.cells, CELLS))
        current = m.effective_current
        status = base.alarm_bits(m, PROTECTION_BITS)
        status |= 1 << (DISCHARGING if current < 0 else CHARGING if current > 0 else STANDBY)
        status |= m.discharge_fet << DISCHARGE_FET - STATUS | m.charge_fet << CHARGE_FET - STATUS
        return {
            "cell_low_voltage": [int(v <= CELL_UNDER_VOLTAGE) for v in cells],
            "cell_high_voltage": [int(v >= CELL_OVER_VOLTAGE) for v in cells],
            "probe_low_temperature": [0] * 8,
            "probe_high_temperature": [0] * 8,
            "balancing": (m.balancing + [0] * CELLS)[:CELLS],
            "status": bits(status, 80),
        }
