"""A simulated ECS bus: GreenMeters and their LiPro modules answer FC03 reads byte-exactly.

Each pack of ``packs`` is a bank: its GreenMeter at the pack's address and one LiPro module per
cell at the addresses after it (the family's default layout). A read answers any window inside
one of the register blocks a device has (the GreenMeter: 0-3, 30-31, 46-47, 102-103, 108-109,
114-115, 128-131; a LiPro module: 0 and 100-102) and gets the Modbus exception 2 (illegal data
address) otherwise; an address with no device, or a request that is not an FC03 read, gets
silence. The block extents are this simulator's choice; only the frames in tests/test_ecs.py
tie it to the protocol as the public driver reads it.
"""

from __future__ import annotations

from typing import Any

from bmsbank.native.spec import ModbusRtu, encode
from bmsbank.services.poller.plugins.base import modbus_frame as frame
from bmsbank.services.poller.plugins.ecs import MAX_MODULES
from bmsbank.services.poller.plugins.ecs.family import (
    CHARGE_STATES,
    DISCHARGE_STATES,
    FC_HOLDING,
    GREENMETER,
    MODULE,
    Family,
    parse_request,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

ILLEGAL_ADDRESS = 0x02
METER_ID, LIPRO_ID = 501, 104  # a 250 A GreenMeter, LiPro1-X v3 modules
METER_BLOCKS = ((0, 3), (30, 31), (46, 47), (102, 103), (108, 109), (114, 115), (128, 131))
MODULE_BLOCKS = ((0, 0), (100, 102))
CURRENT_LIMIT = 100.0  # A, both ways
BALANCING = 100  # register 102 of a balancing module (above the family's 50)


def state_code(model: BatteryModel, table: dict[int, str]) -> int:
    """The state register's code for the model's first active alarm of ``table`` (0: none)."""
    active = model.active_alarms
    return next((code for code, name in sorted(table.items()) if name in active), 0)


class Simulator(base.Simulator):
    """One RS485 bus with an ECS bank (GreenMeter + LiPros) per entry of ``packs``."""

    family = Family
    request_framing = ModbusRtu(functions=(FC_HOLDING,), requests=True)

    def answer(self, request: bytes) -> bytes:
        """Answer an FC03 read for a GreenMeter or LiPro module on the bus (b"": nobody)."""
        read = parse_request(request)
        if read is None:
            return b""
        address, start, count = read
        device = self.device(address)
        if device is None:
            return b""
        blocks, words = device
        if not count or not any(a <= start and start + count <= b + 1 for a, b in blocks):
            return frame(bytes((address, FC_HOLDING | 0x80, ILLEGAL_ADDRESS)))
        data = base.window(words, start, count)
        return frame(bytes((address, FC_HOLDING, len(data))) + data)

    def device(self, address: int) -> tuple[tuple[tuple[int, int], ...], bytes] | None:
        """(register blocks, encoded registers) of the device at ``address``, or None."""
        model = self.packs.get(address)
        if model is not None:
            return METER_BLOCKS, encode(GREENMETER, self.meter(model, address), "registers")
        for meter, m in self.packs.items():
            n = address - meter
            cells = m.cell_voltages[:MAX_MODULES]
            if 1 <= n <= len(cells):
                values = {"module_id": LIPRO_ID, "cell_voltage": cells[n - 1],
                          "cell_temperature": m.temperatures[0] if m.temperatures else 25.0,
                          "cell_balance": BALANCING if m.balancing[n - 1] else 0}  # fmt: skip
                return MODULE_BLOCKS, encode(MODULE, values, "registers")
        return None

    @staticmethod
    def meter(m: BatteryModel, address: int) -> dict[str, Any]:
        """The GreenMeter's register values for bank ``m`` at ``address``."""
        probes = (m.temperatures + m.temperatures[-1:])[:2] if m.temperatures else [25.0] * 2
        return {
            "meter_id": METER_ID,
            "production": 20240000 + address,
            "discharge_current_limit": -CURRENT_LIMIT,  # DSB takes the magnitude
            "charge_current_limit": CURRENT_LIMIT,
            "capacity": m.capacity,
            "temperatures": probes,
            "voltage": m.voltage,
            "current": m.effective_current,
            "soc_raw": round(m.bms_soc * 1000),
            "over_voltage": state_code(m, CHARGE_STATES),
            "under_voltage": state_code(m, DISCHARGE_STATES),
        }
