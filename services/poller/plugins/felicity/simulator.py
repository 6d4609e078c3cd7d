"""A simulated RS485 bus of Felicity packs: answers FC03 reads byte-exactly per address.

Each pack's data block (0x1300-0x1341) and device block (0xF800-0xF80F) are encoded from its
:class:`BatteryModel` with the family's own register maps; a read answers any window inside one
block and gets the Modbus exception 2 (illegal data address) otherwise. An address without a pack
stays silent. The block extents are this simulator's choice (no document gives them); only the
frames in tests/test_felicity.py tie it to the protocol as the public drivers read it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bmsbank.native.spec import ModbusRtu, encode
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.felicity.family import (
    CELLS,
    CHARGE_ENABLED,
    CHARGE_FAULT_BITS,
    DATA,
    DEVICE,
    DEVICE_REGISTERS,
    DISCHARGE_ENABLED,
    FAULT_BITS,
    FC_HOLDING,
    PROBES,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

ILLEGAL_ADDRESS = 0x02
FIRMWARE = 418  # DSB's tested firmware
CHARGE_REQUESTED = 1  # bit of 0x1302, set below 10 % SoC here
CURRENT_LIMIT = 100.0  # A, both ways
CELL_CHARGE_VOLTAGE, CELL_CUTOFF = 3.5, 2.9  # V per cell for the voltage limits


class Simulator(base.Simulator):
    """One RS485 bus with Felicity packs at the addresses of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(FC_HOLDING,), requests=True)
    #: the device block's map counted from its first register (encoded without 0xF800 zeros)
    device_fields = tuple(replace(f, offset=f.offset - DEVICE[0]) for f in DEVICE_REGISTERS)

    def answer(self, request: bytes) -> bytes:
        """Answer an FC03 read for a pack on the bus (b"" when nobody is there)."""
        read = parse_request(request)
        model = self.packs.get(request[0])
        if read is None or model is None:
            return b""
        address, start, count = read
        block = next((b for b in (DATA, DEVICE) if b[0] <= start and start + count <= b[1] + 1),
                     None)  # fmt: skip
        if block is None or not count:
            return frame(bytes((address, FC_HOLDING | 0x80, ILLEGAL_ADDRESS)))
        if block == DATA:
            data = base.window(self.encode("registers", self.registers(model)), start, count)
        else:
            words = encode(self.device_fields, self.device(address), "registers")
            data = base.window(words, start - DEVICE[0], count)
        return frame(bytes((address, FC_HOLDING, len(data))) + data)

    @staticmethod
    def registers(m: BatteryModel) -> dict[str, Any]:
        """The data block's values of pack ``m`` (unpopulated slots as 0x7FFF)."""
        cells = m.cell_voltages[:CELLS]
        probes = m.temperatures[:PROBES]
        status = (m.charge_fet << CHARGE_ENABLED | m.discharge_fet << DISCHARGE_ENABLED
                  | (m.bms_soc < 10.0) << CHARGE_REQUESTED)  # fmt: skip
        faults = base.alarm_bits(m, FAULT_BITS) | base.alarm_bits(m, CHARGE_FAULT_BITS)
        return {
            "status": status,
            "faults": faults,
            "voltage": m.voltage,
            "current": m.effective_current,
            "bms_temperature": m.mosfet_temperature,
            "soc": m.bms_soc,
            "charge_voltage_limit": CELL_CHARGE_VOLTAGE * len(cells),
            "discharge_voltage_limit": CELL_CUTOFF * len(cells),
            "charge_current_limit": CURRENT_LIMIT if m.charge_fet else 0.0,
            "discharge_current_limit": CURRENT_LIMIT if m.discharge_fet else 0.0,
            "cells": cells + [None] * (CELLS - len(cells)),
            "cell_temperatures": probes + [None] * (PROBES - len(probes)),
        }

    @staticmethod
    def device(address: int) -> dict[str, Any]:
        """The device block's values: the firmware and a serial number per address."""
        return {"serial_words": [2024, 11, 28, 100, address], "version": FIRMWARE}
