"""A simulated Daly BLE board: answers D2 register reads and writes byte-exactly from a model.

One pack, at device address 0xD2 (the only one a Daly answers on BLE). The register map
0x00-0xCF is encoded from the :class:`BatteryModel` with the family's own table; a read inside
it is answered, one outside gets the Modbus exception 2 (illegal data address). The writes the
family's controls send (0xA5 charge FET, 0xA6 discharge FET, 0xCF balancer; value 0 or 1) are
applied to the model and echoed, as the BMS does; any other write is not answered (batmon-ha's
daly2.py: "if the register is wrong the BMS stays silent"). Replies are whole frames: the BLE
peer in front of it (the fake BlueZ) splits them into notifications. The strings, the extent
and the registers the family does not read are this simulator's choice; only the captures in
tests/test_daly_ble.py tie it to the wire.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import ModbusRtu
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.base import parse_modbus_read
from bmsbank.services.poller.plugins.daly_ble.family import (
    ALARM_BITS,
    DEVICE,
    FC_READ,
    FC_WRITE,
    MAX_CELLS,
    MAX_SENSORS,
    REGISTER_SPAN,
    SWITCHES,
    TEMPERATURE_OFFSET,
    Family,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

ILLEGAL_ADDRESS = 0x02
NO_SENSOR = -TEMPERATURE_OFFSET  # a temperature register left at 0


class Simulator(base.Simulator):
    """A Daly board behind one Bluetooth device (``packs`` holds one model, at 0xD2)."""

    family = Family
    request_framing = ModbusRtu(functions=(FC_READ, FC_WRITE), addresses=(DEVICE, DEVICE),
                                requests=True)  # fmt: skip

    def answer(self, request: bytes) -> bytes:
        """Answer a read or one of the family's writes (b"" when there is nothing to say)."""
        model = self.packs.get(request[0])
        if model is None:
            return b""
        if request[1] == FC_WRITE:
            return request if self.write(model, request) else b""
        read = parse_modbus_read(request, (FC_READ,))
        if read is None:
            return b""
        _address, _function, start, count = read
        first, last = REGISTER_SPAN
        if not count or start < first or start + count > last + 1:
            return frame(bytes((DEVICE, FC_READ | 0x80, ILLEGAL_ADDRESS)))
        data = base.window(self.encode("registers", self.registers(model)), start, count)
        return frame(bytes((DEVICE, FC_READ, len(data))) + data)

    @staticmethod
    def write(m: BatteryModel, request: bytes) -> bool:
        """Apply an FC 06 write of the family's switches to the model; False: not one of them."""
        register, value = request[2] << 8 | request[3], request[4] << 8 | request[5]
        if value not in (0, 1):
            return False
        if register == SWITCHES["charge"]:
            m.charge_fet = bool(value)
        elif register == SWITCHES["discharge"]:
            m.discharge_fet = bool(value)
        elif register == SWITCHES["balance"]:
            m.balancer = bool(value)
        else:
            return False
        return True

    @staticmethod
    def registers(m: BatteryModel) -> dict[str, Any]:
        """The register values of pack ``m`` (at most 32 cells and 8 sensors)."""
        cells = m.cell_voltages[:MAX_CELLS]
        temperatures = list(m.temperatures[:MAX_SENSORS])
        current = m.effective_current
        soc = m.bms_soc
        faults = base.alarm_bits(m, ALARM_BITS)
        return {
            "cells": cells + [0.0] * (MAX_CELLS - len(cells)),
            "temperatures": temperatures + [NO_SENSOR] * (MAX_SENSORS - len(temperatures)),
            "voltage": m.voltage,
            "current": current,
            "soc": soc,
            "max_cell": max(cells),
            "min_cell": min(cells),
            "max_temperature": max(temperatures, default=NO_SENSOR),
            "min_temperature": min(temperatures, default=NO_SENSOR),
            "mode": 1 if current > 0 else 2 if current < 0 else 0,
            "remaining": m.capacity * soc / 100.0,
            "cell_count": len(cells),
            "sensor_count": len(temperatures),
            "cycles": m.cycles,
            "balancer": int(m.balancer),
            "charge_fet": int(m.charge_fet),
            "discharge_fet": int(m.discharge_fet),
            "fault_high": faults >> 32,
            "fault_low": faults & 0xFFFFFFFF,
            "balance_bits": sum(b << i for i, b in enumerate(m.balancing[:MAX_CELLS])),
            "balance_current": 0.0,
            "mosfet_temperature": m.mosfet_temperature,
            "board_temperature": m.mosfet_temperature - 5.0,
            "capacity": m.capacity,
            "cell_type": 0,
            "charge_switch": int(m.charge_fet),
            "discharge_switch": int(m.discharge_fet),
            "software": "SIM-D2-1.0",
            "hardware_version": "H1.0_SIM",
            "machine_code": "DL-SIMULATED",
            "balancer_switch": int(m.balancer),
        }
