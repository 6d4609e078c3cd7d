"""Pure-Python twin of :mod:`._messages`: the usual case of a state message's validation.

Same API and the same answers as the compiled module (a test compares them); see its docstring.
"""

from __future__ import annotations

from typing import Any

IMPLEMENTATION = "python"

_COUNTER = 2**63 - 1  # largest counter, sequence or epoch
_EXACT = 2**53  # integers beyond are not compared as floats (rounding could land them in bounds)


def _number(x: Any, low: float, high: float) -> bool:
    """An exact int or float within [low, high] (NaN fails both comparisons)."""
    if type(x) is float:
        return low <= x <= high
    if type(x) is int:
        return -_EXACT <= x <= _EXACT and low <= float(x) <= high
    return False


def _numbers(xs: Any, low: float, high: float, most: int) -> bool:
    return type(xs) is list and len(xs) <= most and all(_number(x, low, high) for x in xs)


def _text(x: Any, most: int) -> bool:
    return type(x) is str and 0 < len(x) <= most


def _count(x: Any, low: int, high: int) -> bool:
    return type(x) is int and low <= x <= high


def state_ok(msg: dict, spec: tuple) -> bool:
    """True when ``msg`` certainly passes every state check (see ``_messages``).

    Args:
        msg: a decoded message.
        spec: ``bmsbank.schema.STATE_SPEC``.

    """
    (version, keys, numbers, optional, alarm_names, link_names, cell_low, cell_high, most_cells,
     t_low, t_high, most_sensors, longest, most_hardware) = spec  # fmt: skip
    if (type(msg.get("v")) is not int or msg.get("v") != version or msg.get("kind") != "state"
            or msg.keys() != keys):  # fmt: skip
        return False
    if not all(_text(msg.get(key), longest) for key in ("pack", "port", "bms")):
        return False
    hardware = msg["hardware"]
    if type(hardware) is not str or len(hardware) > most_hardware:
        return False
    serial = msg["serial"]
    if type(serial) is not str or len(serial) > longest:
        return False
    if not (_count(msg["address"], 0, 255) and _count(msg["epoch"], 0, _COUNTER)
            and _count(msg["seq"], 0, _COUNTER) and _count(msg["cycles"], 0, 10**6)):  # fmt: skip
        return False
    if msg["pack"] != f"{msg['port']}:{msg['address']}":
        return False
    if not all(_number(msg.get(key), low, high) for key, low, high in numbers):
        return False
    for key, low, high in optional:
        x = msg.get(key)
        if x is not None and not _number(x, low, high):
            return False
    cells = msg.get("cells")
    if not _numbers(cells, cell_low, cell_high, most_cells) or not cells:
        return False
    if not _numbers(msg.get("temperatures"), t_low, t_high, most_sensors):
        return False
    balancing = msg.get("balancing")
    if type(balancing) is not list or len(balancing) != len(cells):
        return False
    if not all(type(x) is int and x in (0, 1) for x in balancing):
        return False
    if type(msg.get("charge_fet")) is not bool or type(msg.get("discharge_fet")) is not bool:
        return False
    if not msg["remaining"] <= msg["capacity"] * 1.5 + 1.0:
        return False
    alarms = msg.get("alarms")
    if type(alarms) is not dict:
        return False
    if not all(name in alarm_names and _count(x, 0, 2) for name, x in alarms.items()):
        return False
    link = msg.get("link")
    if type(link) is not dict or not all(
        name in link_names and _count(x, 0, _COUNTER) for name, x in link.items()
    ):
        return False
    return _derived_ok(msg, cells)


def _derived_ok(msg: dict, cells: list) -> bool:
    """The derived values are exactly what the readings give (power within 1e-6 relative)."""
    low, high = min(cells), max(cells)
    x = msg["min_cell_voltage"]
    if type(x) not in (int, float) or x != low:
        return False
    x = msg["max_cell_voltage"]
    if type(x) not in (int, float) or x != high:
        return False
    x = msg["cell_delta"]
    if type(x) not in (int, float) or not abs(x - (high - low)) <= 1e-9:
        return False
    power = msg["voltage"] * msg["current"]
    return abs(msg["power"] - power) <= 1e-6 * abs(power) + 1e-6


def state_body(fields: dict, defaults: dict, header: dict) -> dict:
    """A state message body: ``defaults``, then ``fields``, the derived values, then ``header``.

    Derived, for every family alike: power [W] = voltage x current, min and max cell voltage and
    their delta [V] (0.0 without cells).
    """
    out = dict(defaults)
    out.update(fields)
    out["power"] = float(out["voltage"]) * float(out["current"])
    cells = out.get("cells")
    low, high = (min(cells), max(cells)) if cells else (0.0, 0.0)
    out["min_cell_voltage"] = low
    out["max_cell_voltage"] = high
    out["cell_delta"] = high - low
    out.update(header)
    return out
