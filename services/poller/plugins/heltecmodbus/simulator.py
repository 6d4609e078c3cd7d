"""A simulated RS485 bus of Heltec Modbus packs: answers FC03 reads byte-exactly per address.

Each pack's registers 0-199 are encoded from its :class:`BatteryModel` with the family's own
register map (byte-swapped values, text and byte pairs in wire order); a read answers any window
inside them and gets the Modbus exception 2 (illegal data address) otherwise. An address without
a pack stays silent, and so does a request that is not an FC03 read. The extent and the text
values are this simulator's choice; only the frames in tests/test_heltecmodbus.py tie it to the
protocol as the public drivers read it.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import ModbusRtu
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.heltecmodbus.family import (
    CHARGE_PROTECTION,
    DISCHARGE_PROTECTION,
    FC_HOLDING,
    MAX_CELLS,
    REGISTER_SPAN,
    TEMPERATURE_OFFSET,
    WARNING_BITS,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

ILLEGAL_ADDRESS = 0x02
LFP = 1  # cell type byte: 0 ternary lithium, 1 LiFePO4, 2 lithium titanate (DSB)
CHARGE_SETTING, DISCHARGE_SETTING = 100.0, 150.0  # A


def temperature_byte(celsius: float) -> int:
    """One temperature byte: whole °C + 40, clamped to a byte."""
    return min(255, max(0, round(celsius) + TEMPERATURE_OFFSET))


class Simulator(base.Simulator):
    """One RS485 bus with Heltec Modbus packs at the addresses of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(FC_HOLDING,), requests=True)

    def answer(self, request: bytes) -> bytes:
        """Answer an FC03 read for a pack on the bus (b"" when nobody is there)."""
        read = parse_request(request)
        model = self.packs.get(request[0])
        if read is None or model is None:
            return b""
        address, start, count = read
        first, last = REGISTER_SPAN
        if not count or start < first or start + count > last + 1:
            return frame(bytes((address, FC_HOLDING | 0x80, ILLEGAL_ADDRESS)))
        words = self.encode("registers", self.registers(model, address))
        data = base.window(words, start, count)
        return frame(bytes((address, FC_HOLDING, len(data))) + data)

    @staticmethod
    def registers(m: BatteryModel, address: int) -> dict[str, Any]:
        """The register values of pack ``m`` at ``address`` (at most 24 cells)."""
        cells = m.cell_voltages[:MAX_CELLS]
        probes = (m.temperatures + m.temperatures[-1:] * 2)[:2] if m.temperatures else [25.0] * 2
        run_state = ((not m.charge_fet) << CHARGE_PROTECTION
                     | (not m.discharge_fet) << DISCHARGE_PROTECTION)  # fmt: skip
        mos = temperature_byte(m.mosfet_temperature)
        return {
            "serial_words": [0x5948, 0x2024, 0x1128, address],
            "type_name": "SmartBMS 24S 150A",
            "hardware_word": 2 << 8,
            "device_name": f"HT-BMS-{address:02d}",
            "cell_word": len(cells) << 8 | LFP,
            "voltage_raw": round(m.voltage * 1000),
            "current": m.effective_current,
            "cells": cells + [0.0] * (MAX_CELLS - len(cells)),
            "board_temperatures": mos << 8 | temperature_byte(m.mosfet_temperature - 5),
            "probe_temperatures": temperature_byte(probes[1]) << 8 | temperature_byte(probes[0]),
            "capacity": m.capacity,
            "actual_capacity": m.capacity,
            "soc_soh": round(m.bms_soc) << 8 | 100,
            "learned_capacity": m.capacity,
            "cycle_word": m.cycles & 0xFF,
            "balance_bits": sum(b << i for i, b in enumerate(m.balancing[:MAX_CELLS])),
            "run_state": run_state,
            "warnings": base.alarm_bits(m, WARNING_BITS),
            "charge_current_setting": CHARGE_SETTING,
            "discharge_current_setting": DISCHARGE_SETTING,
        }
