"""Build state messages: derived values computed once, here, for every BMS family."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bmsbank.native.messages import state_body
from bmsbank.schema import MAX_HARDWARE, MAX_SERIAL, SCHEMA_VERSION

#: this process's run: a receiver tells a restarted poller (a new epoch, its sequence from 0)
#: from a replay of an earlier run [unix µs at import]
EPOCH = time.time_ns() // 1000

#: fields a plugin may leave out, with the value a state message carries then
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "soh": None,
    "mosfet_temperature": None,
    "bms_ccl": None,
    "bms_dcl": None,
    "bms_cvl": None,
    "hardware": "",
    "serial": "",
    "cycles": 0,
    "alarms": {},
}


def pack_id(port: str, address: int) -> str:
    """The id of the pack at ``address`` on ``port``: ``"port:address"``."""
    return f"{port}:{address}"


def derive(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Add power [W], min/max cell voltage and cell delta [V] to a plugin's fields."""
    return state_body(fields if type(fields) is dict else dict(fields), OPTIONAL_DEFAULTS, {})


def make_state(
    port: str,
    address: int,
    bms: str,
    seq: int,
    fields: Mapping[str, Any],
    link: Mapping[str, int],
    mono: float | None = None,
    wall: float | None = None,
    epoch: int | None = None,
) -> dict[str, Any]:
    """A complete state message body for one pack reading.

    Args:
        port: port name from the config.
        address: pack address on the port.
        bms: plugin name.
        seq: the poller's message sequence number.
        fields: what the plugin decoded (see ``Plugin.state``).
        link: the link's error counters.
        mono: monotonic time of the reading [s] (default: now).
        wall: unix time of the reading [s] (default: now).
        epoch: the sender's run (default: this process's :data:`EPOCH`).

    """
    fields = fields if type(fields) is dict else dict(fields)
    hardware = fields.get("hardware")
    if type(hardware) is str and len(hardware) > MAX_HARDWARE:  # a BMS's text is not ours to bound
        fields = {**fields, "hardware": hardware[:MAX_HARDWARE]}
    serial = fields.get("serial")
    if type(serial) is str and len(serial) > MAX_SERIAL:
        fields = {**fields, "serial": serial[:MAX_SERIAL]}
    # one compiled call per state: defaults, the family's fields, derived values, then the header
    return state_body(
        fields,
        OPTIONAL_DEFAULTS,
        {
            "v": SCHEMA_VERSION,
            "kind": "state",
            "pack": pack_id(port, address),
            "port": port,
            "address": address,
            "bms": bms,
            "epoch": EPOCH if epoch is None else epoch,
            "seq": seq,
            "mono": time.monotonic() if mono is None else mono,
            "time": time.time() if wall is None else wall,
            "link": dict(link),
        },
    )
