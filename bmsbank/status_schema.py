"""Schema of the "why" messages: port/link state, output health, and their bank fields.

Two small messages travel on the control channel, the one validated path backwards (see
:mod:`bmsbank.services.arbiter.control`), each sent on a change and as a slow heartbeat, never
per poll:

``link`` (poller -> arbiter, topic ``b"link"``): v, kind="link", port (name), device (path),
    state ("missing" or "open": the port), since (unix [s] of that state), detail (why, for a
    human, "" when nothing to say), packs (list of {address (0-255), state (one of
    :data:`LINK_STATES`), since (unix [s]), ok, bad, timeouts (counters of the link since the
    poller started), detail (text: the poller's own rejection, the noise it heard)}).
``health`` (publisher -> arbiter, topic ``b"health"``): v, kind="health", outputs
    ({name: {ok, detail}}, name one of :data:`OUTPUT_NAMES`; ok true, false, or None when not
    configured or not known yet).

In the bank message (see :mod:`bmsbank.services.arbiter.bank`) every pack summary carries
``reason`` (text or None) and ``link`` ({state, since, ok, bad, timeouts} or None), and the bank
carries ``outputs`` ({name: {ok, detail, age}}). :func:`check_pack_why` and
:func:`check_outputs` validate those; :func:`bmsbank.schema.validate_bank` calls them.

A pack summary also carries ``cell_health`` (:mod:`bmsbank.services.arbiter.cell_health`), None
while nothing was learnt of the pack, else {status (one of :data:`CELL_HEALTH_STATES`),
resistance (per cell: internal resistance [mΩ] at 25 °C, or None while not enough current steps
were seen), resistance_median ([mΩ] or None), capacity (per cell: capacity [% of the pack's
median cell], or None while not enough charges were measured), steps (current steps used),
charges (charges measured), warnings (texts, one per weak cell finding)};
:func:`check_cell_health` validates it.

This module imports nothing of :mod:`bmsbank.schema` (which imports it); its version is the same
number (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bmsbank.errors import MessageError

STATUS_VERSION = 1  #: the schema version (the same as bmsbank.schema.SCHEMA_VERSION)
#: a port's state: missing (cannot be opened, since when) or open
PORT_STATES = ("missing", "open")
#: a pack's link state as its poller sees it:
#: waiting (not asked yet), answering (its last poll gave a state), silent (no byte for
#: ``silent_polls`` polls), noise (bytes, but no valid reply), incomplete (replies, but not all the
#: parts of a state), implausible (a state the poller itself refused: wrong cell count...)
LINK_STATES = ("waiting", "answering", "silent", "noise", "incomplete", "implausible")
#: the link states in a bank's pack summary: the pack's, or "missing" when its port is
BANK_LINK_STATES = ("missing", *LINK_STATES)
#: the outputs whose health the publisher reports: D-Bus name owned, CAN bus sending, GX heard
OUTPUT_NAMES = ("dbus", "can", "gx")
MAX_DETAIL = 256  #: characters of a detail text
MAX_DEVICE = 256  #: characters of a device path
MAX_LINK_PACKS = 256  #: packs in one link message
MAX_COUNT = 2**63 - 1
MAX_TIME = 1.0e11  #: unix [s]
MAX_AGE = 1.0e12  #: s
_LINK_KEYS = frozenset(("v", "kind", "port", "device", "state", "since", "detail", "packs"))
_LINK_PACK_KEYS = frozenset(("address", "state", "since", "ok", "bad", "timeouts", "detail"))
_HEALTH_KEYS = frozenset(("v", "kind", "outputs"))
_OUTPUT_KEYS = frozenset(("ok", "detail"))
_BANK_LINK_KEYS = frozenset(("state", "since", "ok", "bad", "timeouts"))
_BANK_OUTPUT_KEYS = frozenset(("ok", "detail", "age"))
COUNTERS = ("ok", "bad", "timeouts")
#: what the cell-health estimator can say of a pack: no current step or charge seen yet;
#: some cells estimated; every cell's resistance known
CELL_HEALTH_STATES = ("not enough data", "learning", "ok")
MAX_HEALTH_CELLS = 64  #: cells in a cell_health list (as a state's cells)
MAX_WARNING = 200  #: characters of a cell-health warning
_CELL_HEALTH_KEYS = frozenset(
    ("status", "resistance", "resistance_median", "capacity", "steps", "charges", "warnings")
)


def _only(msg: Mapping, keys: frozenset[str], kind: str) -> None:
    extra = set(msg) - keys
    missing = keys - set(msg)
    if extra:
        raise MessageError(f"{kind}: unknown field(s) {sorted(map(str, extra))[:4]}")
    if missing:
        raise MessageError(f"{kind}: missing field(s) {sorted(missing)[:4]}")


def _text(msg: Mapping, key: str, most: int, empty: bool = True) -> str:
    x = msg.get(key)
    if not isinstance(x, str) or len(x) > most or (not empty and not x):
        raise MessageError(f"{key}: expected a string of at most {most} characters")
    return x


def _real(msg: Mapping, key: str, high: float, none: bool = False) -> None:
    x: Any = msg.get(key)
    if x is None and none:
        return
    if type(x) not in (int, float) or not math.isfinite(x) or not 0.0 <= x <= high:
        raise MessageError(f"{key}: expected a number in [0, {high:g}], got {x!r}")


def _count(msg: Mapping, key: str) -> None:
    x = msg.get(key)
    if type(x) is not int or not 0 <= x <= MAX_COUNT:
        raise MessageError(f"{key}: expected a non-negative integer, got {x!r}")


def _one_of(msg: Mapping, key: str, names: tuple[str, ...]) -> None:
    if msg.get(key) not in names:
        raise MessageError(f"{key}: expected one of {', '.join(names)}, got {msg.get(key)!r}")


def _ok(msg: Mapping) -> None:
    if msg.get("ok") is not None and not isinstance(msg.get("ok"), bool):
        raise MessageError("ok: expected true, false or null")


def _header(msg: Any, kind: str) -> dict:
    if not isinstance(msg, dict):
        raise MessageError(f"{kind}: expected a map")
    v = msg.get("v")
    if type(v) is not int or v != STATUS_VERSION or msg.get("kind") != kind:
        raise MessageError(f"{kind}: unsupported schema {v!r}/{msg.get('kind')!r}")
    return msg


def validate_link(msg: Any) -> dict:
    """Check a decoded link message (a poller's port and pack link states); return it.

    Raises:
        MessageError: naming the first field that fails.

    """
    _only(_header(msg, "link"), _LINK_KEYS, "link")
    _text(msg, "port", 32, empty=False)
    _text(msg, "device", MAX_DEVICE)
    _one_of(msg, "state", PORT_STATES)
    _real(msg, "since", MAX_TIME)
    _text(msg, "detail", MAX_DETAIL)
    packs = msg["packs"]
    if not isinstance(packs, list) or len(packs) > MAX_LINK_PACKS:
        raise MessageError(f"packs: expected a list of at most {MAX_LINK_PACKS} pack links")
    for i, p in enumerate(packs):
        try:
            if not isinstance(p, dict):
                raise MessageError("expected a map")
            _only(p, _LINK_PACK_KEYS, "pack link")
            if type(p["address"]) is not int or not 0 <= p["address"] <= 255:
                raise MessageError(f"address: expected 0-255, got {p['address']!r}")
            _one_of(p, "state", LINK_STATES)
            _real(p, "since", MAX_TIME)
            for key in COUNTERS:
                _count(p, key)
            _text(p, "detail", MAX_DETAIL)
        except MessageError as exc:
            raise MessageError(f"packs[{i}]: {exc}") from None
    return msg


def validate_health(msg: Any) -> dict:
    """Check a decoded health message (the publisher's outputs); return it.

    Raises:
        MessageError: naming the first field that fails.

    """
    _only(_header(msg, "health"), _HEALTH_KEYS, "health")
    _check_output_map(msg["outputs"], _OUTPUT_KEYS, "output")
    return msg


def _check_output_map(outputs: Any, keys: frozenset[str], kind: str, aged: bool = False) -> None:
    """``outputs``: a map of :data:`OUTPUT_NAMES` to {ok, detail} (+ age when ``aged``)."""
    if not isinstance(outputs, dict) or not set(outputs) <= set(OUTPUT_NAMES):
        raise MessageError(f"outputs: expected a map of {', '.join(OUTPUT_NAMES)}")
    for name, out in outputs.items():
        try:
            if not isinstance(out, dict):
                raise MessageError("expected a map")
            _only(out, keys, kind)
            _ok(out)
            _text(out, "detail", MAX_DETAIL)
            if aged:
                _real(out, "age", MAX_AGE, none=True)
        except MessageError as exc:
            raise MessageError(f"outputs.{name}: {exc}") from None


def check_pack_why(p: Mapping, max_reason: int) -> None:
    """Check a bank pack summary's ``reason`` and ``link`` (both may be absent or None).

    Raises:
        MessageError: naming the field that fails.

    """
    reason = p.get("reason")
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= max_reason):
        raise MessageError(f"reason: expected a text of at most {max_reason} characters, or null")
    link = p.get("link")
    if link is None:
        return
    if not isinstance(link, dict):
        raise MessageError("link: expected a map or null")
    _only(link, _BANK_LINK_KEYS, "link")
    try:
        _one_of(link, "state", BANK_LINK_STATES)
        _real(link, "since", MAX_TIME, none=True)
        for key in COUNTERS:
            _count(link, key)
    except MessageError as exc:
        raise MessageError(f"link.{exc}") from None


def check_outputs(msg: Mapping) -> None:
    """Check a bank's ``outputs`` (absent or a map of :data:`OUTPUT_NAMES`).

    Raises:
        MessageError: naming the field that fails.

    """
    outputs = msg.get("outputs")
    if outputs is not None:
        _check_output_map(outputs, _BANK_OUTPUT_KEYS, "fields", aged=True)


def _cell_values(health: Mapping, key: str, high: float) -> None:
    values = health.get(key)
    if not isinstance(values, list) or len(values) > MAX_HEALTH_CELLS:
        raise MessageError(f"{key}: expected a list of at most {MAX_HEALTH_CELLS} values")
    # every bank carries these lists: one pass over them, the message only for a bad one
    if all(x is None or (type(x) in (int, float) and 0.0 <= x <= high) for x in values):
        return
    for k, x in enumerate(values):
        _real({f"{key}[{k}]": x}, f"{key}[{k}]", high, none=True)


def check_cell_health(p: Mapping) -> None:
    """Check a bank pack summary's ``cell_health`` (absent or None is fine).

    Raises:
        MessageError: naming the field ("cell_health.resistance[3]: ...").

    """
    health = p.get("cell_health")
    if health is None:
        return
    try:
        if not isinstance(health, dict):
            raise MessageError("expected a map or null")
        _only(health, _CELL_HEALTH_KEYS, "cell_health")
        _one_of(health, "status", CELL_HEALTH_STATES)
        _cell_values(health, "resistance", 1000.0)  # mΩ: a cell of 1 Ω is no cell
        _real(health, "resistance_median", 1000.0, none=True)
        _cell_values(health, "capacity", 1000.0)  # % of the median cell
        _count(health, "steps")
        _count(health, "charges")
        warnings = health.get("warnings")
        if not isinstance(warnings, list) or len(warnings) > MAX_HEALTH_CELLS:
            raise MessageError(f"warnings: expected a list of at most {MAX_HEALTH_CELLS} texts")
        for k, text in enumerate(warnings):
            _text({f"warnings[{k}]": text}, f"warnings[{k}]", MAX_WARNING, empty=False)
    except MessageError as exc:
        raise MessageError(f"cell_health.{exc}") from None
