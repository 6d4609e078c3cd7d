"""Builders for valid messages used across tests."""

from __future__ import annotations

from typing import Any

from bmsbank.state import make_state


def state_msg(port: str = "ttyUSB0", address: int = 1, seq: int = 0, **over: Any) -> dict:
    """A valid state message; keyword arguments override plugin fields."""
    cells = over.pop("cells", [3.30] * 16)
    fields = {
        "voltage": round(sum(cells), 3),
        "current": 5.0,
        "soc": 60.0,
        "capacity": 100.0,
        "remaining": 60.0,
        "cycles": 3,
        "cells": cells,
        "balancing": [0] * len(cells),
        "temperatures": [25.0, 26.0],
        "charge_fet": True,
        "discharge_fet": True,
        "alarms": {"high_cell_voltage": 0, "low_cell_voltage": 0},
    }
    fields.update(over)
    return make_state(port, address, "jbd", seq, fields, {"ok": seq + 1})
