"""Message schema (msgpack over ZeroMQ) and its validation.

Two kinds of messages travel as two-part ZeroMQ messages ``[topic, msgpack(body)]``:

``state`` (poller -> arbiter, topic ``b"state"``), one pack's reading:
    v (schema version), kind="state", pack (pack id "port:address"), port, address, bms (plugin
    name), seq (per poller, +1 per message), mono (poller monotonic clock [s]), time (unix [s]),
    voltage [V], current [A, + = charge], power [W], soc [%], soh [%] or None, capacity [Ah],
    remaining [Ah], cycles, cells [V] (cell 1 first), balancing [0/1 per cell], temperatures [°C],
    mosfet_temperature [°C] or None, charge_fet, discharge_fet (bool: the FET is on),
    bms_ccl [A], bms_dcl [A], bms_cvl [V] (limits the BMS itself reports, or None),
    min_cell_voltage, max_cell_voltage, cell_delta [V] (derived centrally), alarms
    ({name: 0 ok, 1 warning, 2 alarm} with names from :data:`ALARMS`), hardware (str),
    link ({counter: int}, errors of the serial link, see ``LINK_COUNTERS``).

``bank`` (arbiter -> publisher and tap, topic ``b"bank"``): see
:mod:`bmsbank.services.arbiter.bank`.

A receiver validates every message with :func:`validate_state` / :func:`validate_bank` and counts
the ones it rejects: NaN, infinities, wrong types and values outside physical bounds never reach
the limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack

from bmsbank.errors import MessageError

SCHEMA_VERSION = 1
TOPIC_STATE = b"state"
TOPIC_BANK = b"bank"

#: Alarm names, in Venus /Alarms/<Name> spelling after snake_case -> CamelCase.
ALARMS = (
    "low_voltage",
    "high_voltage",
    "low_cell_voltage",
    "high_cell_voltage",
    "low_soc",
    "high_charge_current",
    "high_discharge_current",
    "high_current",
    "cell_imbalance",
    "high_charge_temperature",
    "low_charge_temperature",
    "high_temperature",
    "low_temperature",
    "high_internal_temperature",
    "internal_failure",
    "short_circuit",
    "bms_cable",
)
OK, WARNING, ALARM = 0, 1, 2

#: Serial link counters carried in every state message.
LINK_COUNTERS = (
    "ok",  # complete replies decoded
    "timeout",  # no byte at all before the reply timeout
    "truncated",  # some bytes, but no complete frame before the timeout
    "checksum",  # a complete frame whose check value is wrong
    "malformed",  # a frame that fails length, trailer or content checks
    "address",  # a reply from another address than the one asked
    "unexpected",  # a valid reply that does not answer the request
    "noise_bytes",  # bytes skipped between frames
    "port_errors",  # the port could not be opened, read or written
)

# name -> (low, high) physical bounds; None where a value may be absent.
_NUMBERS: dict[str, tuple[float, float]] = {
    "voltage": (0.0, 1000.0),
    "current": (-10000.0, 10000.0),
    "power": (-1.0e7, 1.0e7),
    "soc": (0.0, 100.0),
    "capacity": (0.0, 1.0e5),
    "remaining": (0.0, 1.0e5),
    "mono": (0.0, 1.0e12),
    "time": (0.0, 1.0e11),
}
_OPTIONAL_NUMBERS: dict[str, tuple[float, float]] = {
    "soh": (0.0, 100.0),
    "mosfet_temperature": (-60.0, 200.0),
    "bms_ccl": (0.0, 10000.0),
    "bms_dcl": (0.0, 10000.0),
    "bms_cvl": (0.0, 1000.0),
}
CELL_BOUNDS = (0.0, 6.0)  # V
TEMPERATURE_BOUNDS = (-60.0, 150.0)  # °C
MAX_CELLS = 64
MAX_TEMPERATURES = 16


def _number(msg: Mapping, key: str, low: float, high: float) -> float:
    x = msg.get(key)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise MessageError(f"{key}: expected a number, got {type(x).__name__}")
    if not math.isfinite(x) or not low <= x <= high:
        raise MessageError(f"{key}: {x!r} outside [{low}, {high}]")
    return float(x)


def _numbers(msg: Mapping, key: str, bounds: tuple[float, float], most: int) -> None:
    xs = msg.get(key)
    if not isinstance(xs, list) or len(xs) > most:
        raise MessageError(f"{key}: expected a list of at most {most} numbers")
    low, high = bounds
    for i, x in enumerate(xs):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise MessageError(f"{key}[{i}]: expected a finite number, got {x!r}")
        if not low <= x <= high:
            raise MessageError(f"{key}[{i}]: {x!r} outside [{low}, {high}]")


def _integer(msg: Mapping, key: str, low: int, high: int) -> int:
    x = msg.get(key)
    if isinstance(x, bool) or not isinstance(x, int) or not low <= x <= high:
        raise MessageError(f"{key}: expected an integer in [{low}, {high}], got {x!r}")
    return x


def _string(msg: Mapping, key: str, most: int = 64) -> str:
    x = msg.get(key)
    if not isinstance(x, str) or not 0 < len(x) <= most:
        raise MessageError(f"{key}: expected a non-empty string of at most {most} characters")
    return x


def _alarms(msg: Mapping, key: str = "alarms") -> None:
    alarms = msg.get(key)
    if not isinstance(alarms, dict):
        raise MessageError(f"{key}: expected a map of alarm name to level")
    for name, level in alarms.items():
        if name not in ALARMS:
            raise MessageError(f"{key}: unknown alarm {name!r}")
        if level not in (OK, WARNING, ALARM) or isinstance(level, bool):
            raise MessageError(f"{key}.{name}: level must be 0, 1 or 2, got {level!r}")


def validate_state(msg: Any) -> dict:
    """Check a decoded state message and return it unchanged.

    Raises:
        MessageError: naming the first field that is missing, of the wrong type, not finite or
            outside physical bounds.

    """
    if not isinstance(msg, dict):
        raise MessageError("state: expected a map")
    if msg.get("v") != SCHEMA_VERSION or msg.get("kind") != "state":
        raise MessageError(f"state: unsupported schema {msg.get('v')!r}/{msg.get('kind')!r}")
    _string(msg, "pack")
    _string(msg, "port")
    _string(msg, "bms")
    _integer(msg, "address", 0, 255)
    _integer(msg, "seq", 0, 2**63 - 1)
    _integer(msg, "cycles", 0, 10**6)
    for key, (low, high) in _NUMBERS.items():
        _number(msg, key, low, high)
    for key, (low, high) in _OPTIONAL_NUMBERS.items():
        if msg.get(key) is not None:
            _number(msg, key, low, high)
    _numbers(msg, "cells", CELL_BOUNDS, MAX_CELLS)
    if not msg["cells"]:
        raise MessageError("cells: a pack reports at least one cell")
    _numbers(msg, "temperatures", TEMPERATURE_BOUNDS, MAX_TEMPERATURES)
    balancing = msg.get("balancing")
    if not isinstance(balancing, list) or len(balancing) != len(msg["cells"]):
        raise MessageError("balancing: expected one 0/1 flag per cell")
    if any(b not in (0, 1) for b in balancing):
        raise MessageError("balancing: flags must be 0 or 1")
    for key in ("charge_fet", "discharge_fet"):
        if not isinstance(msg.get(key), bool):
            raise MessageError(f"{key}: expected a boolean")
    if msg["remaining"] > msg["capacity"] * 1.5 + 1.0:
        raise MessageError("remaining: more than the pack's capacity")
    _alarms(msg)
    link = msg.get("link")
    if not isinstance(link, dict) or any(
        not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in link.values()
    ):
        raise MessageError("link: expected a map of non-negative counters")
    return msg


def validate_bank(msg: Any) -> dict:
    """Check a decoded bank message: the numbers the publisher sends to chargers must be sane.

    Raises:
        MessageError: naming the first field that fails.

    """
    if not isinstance(msg, dict):
        raise MessageError("bank: expected a map")
    if msg.get("v") != SCHEMA_VERSION or msg.get("kind") != "bank":
        raise MessageError(f"bank: unsupported schema {msg.get('v')!r}/{msg.get('kind')!r}")
    _integer(msg, "seq", 0, 2**63 - 1)
    _number(msg, "cvl", 0.0, 1000.0)
    _number(msg, "ccl", 0.0, 10000.0)
    _number(msg, "dcl", 0.0, 10000.0)
    for key in ("online", "offline", "blocking_charge", "blocking_discharge"):
        _integer(msg, key, 0, 10000)
    _alarms(msg)
    if not isinstance(msg.get("packs"), list):
        raise MessageError("packs: expected a list")
    return msg


def pack(body: Mapping) -> bytes:
    """Serialise a message body with msgpack."""
    return msgpack.packb(body, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Deserialise a msgpack body (raises MessageError on bytes that are not msgpack)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"not a msgpack message: {exc}") from exc
