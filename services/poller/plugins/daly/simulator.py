"""A simulated bus of Daly boards: answers real ``A5`` requests byte-exactly from BatteryModels.

A request for board N (address byte 0x3F + N) is answered only when a pack sits at N, with the
reply's address byte N, as Daly boards do (see the family's docstring). Replies are encoded with
the family's own layouts; 0x95 and 0x96 answer ceil(cells / 3) and ceil(sensors / 7) frames
(``cell_frames`` = 16 models firmware that always sends all 16), and the current uses the
family's default sign. Data bytes the protocol leaves undefined are zero here (real boards repeat
the previous reply's bytes), so only the captures in tests/test_daly.py tie both to the wire.

Writes are applied to the model and answered with the same command: 0xDA / 0xD9 with data byte 0
= 1 or 0 switch the charge / discharge FET, the reply's byte 0 is the FET's state after it; 0x21
sets the SoC the board counts (data bytes 6-7, 0.1 %; the model's ``soc_error`` absorbs the
difference), the reply's byte 0 is 1, or 0 for a value above 100 %.
"""

from __future__ import annotations

import math
from typing import Any

from bmsbank.services.poller.plugins.daly.family import (
    ALARM_BITS,
    CHARGE_MOS,
    DATA_LENGTH,
    DISCHARGE_MOS,
    HOST,
    PARTS,
    SET_SOC,
    Family,
    pack_frame,
)
from bmsbank.services.poller.simulators import base
from bmsbank.services.poller.simulators.battery import BatteryModel

NOMINAL_CELL = 3.2  # V, LiFePO4 (0x50 bytes 4-7)
#: multi-frame part -> (list field, items per frame)
COLLECTED = {"cells": ("cells", 3), "temperatures": ("temperatures", 7)}


class Simulator(base.Simulator):
    """Daly boards at the board numbers of ``packs``."""

    family = Family

    def __init__(self, packs: dict[int, BatteryModel], echo: bool = False) -> None:
        super().__init__(packs, echo)
        #: 0x95 frames per reply; 0: ceil(cells / 3)
        self.cell_frames = 0

    def answer(self, request: bytes) -> bytes | list[bytes]:
        """Answer a request for a board on this bus; other boards' requests get silence."""
        board, command = request[1] - HOST, request[2]
        model = self.packs.get(board)
        part = PARTS.get(command)
        if model is None or part is None or request[3] != DATA_LENGTH:
            return b""
        data = request[4:-1]
        if command in (CHARGE_MOS, DISCHARGE_MOS, SET_SOC):
            return pack_frame(board, command, bytes((self.write(model, command, data),)))
        values = self.values(part, model)
        if values is None:
            return b""  # 0x91/0x92: not simulated
        if part not in COLLECTED:
            return pack_frame(board, command, self.encode(part, values))
        name, per = COLLECTED[part]
        items = values[name]
        count = max(1, math.ceil(len(items) / per))
        if part == "cells" and self.cell_frames:
            count = self.cell_frames
        chunks = [{"frame": i + 1, name: items[i * per : (i + 1) * per]} for i in range(count)]
        return [pack_frame(board, command, self.encode(part, chunk)) for chunk in chunks]

    def values(self, part: str, m: BatteryModel) -> dict[str, Any] | None:
        """The values of a read reply from the model (None: not simulated)."""
        current = m.effective_current
        if part == "rated":
            return {"capacity": m.capacity, "cell_voltage": NOMINAL_CELL}
        if part == "soc":
            return {"voltage": m.voltage, "acquired_voltage": 0.0, "current": current,
                    "soc": m.bms_soc}  # fmt: skip
        if part == "fets":
            return {"mode": 1 if current > 0 else 2 if current < 0 else 0,
                    "charge_fet": int(m.charge_fet), "discharge_fet": int(m.discharge_fet),
                    "life": 0, "remaining": m.capacity * m.bms_soc / 100.0}  # fmt: skip
        if part == "status":
            return {"cell_count": m.cells, "sensor_count": len(m.temperatures),
                    "charger": int(current > 0), "load": int(current < 0), "dio": 0,
                    "cycles": m.cycles}  # fmt: skip
        if part == "cells":
            return {"cells": m.cell_voltages}
        if part == "temperatures":
            return {"temperatures": list(m.temperatures)}
        if part == "balance":
            flags = sum(flag << i for i, flag in enumerate(m.balancing[:48]))
            return {"balance": list(flags.to_bytes(6, "little"))}
        if part == "failure":
            return {"failure": list(base.alarm_bits(m, ALARM_BITS).to_bytes(7, "little")),
                    "fault_code": 0}  # fmt: skip
        return None

    @staticmethod
    def write(m: BatteryModel, command: int, data: bytes) -> int:
        """Apply a write to the model; return byte 0 of the reply."""
        if command == SET_SOC:
            soc = int.from_bytes(data[6:8], "big") / 10
            if soc > 100.0:
                return 0
            m.soc_error = soc - m.soc
            return 1
        name = "charge_fet" if command == CHARGE_MOS else "discharge_fet"
        if data[0] in (0, 1):
            setattr(m, name, bool(data[0]))
        return int(getattr(m, name))
