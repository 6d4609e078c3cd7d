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
    serial (str: the serial number or id string the BMS reports, "" when it reports none; the
    arbiter tells a swapped cable or two packs with one id by it), link ({counter: int},
    errors of the serial link, see ``LINK_COUNTERS``).

``bank`` (arbiter -> publisher and tap, topic ``b"bank"``): see
:mod:`bmsbank.services.arbiter.bank`.

The control channel, the only path backwards (ROUTER/DEALER, topics below; see
:mod:`bmsbank.services.arbiter.control`):

``control`` (requester -> arbiter -> owning poller, topic ``b"control"``): v, kind="control",
    id (1-64 characters chosen by the requester, echoed back), pack (pack id "port:address"),
    action (one of :data:`CONTROL_ACTIONS`), value (``charge``/``discharge``/``balance``: bool,
    true = allowed/enabled; ``reset_soc``: true, "re-synchronise the SoC the BMS's own way"),
    optional timeout (the requester's patience [s], 0-60) and expires (unix time [s] after which
    a poller must not carry the request out; set by the arbiter).
``control_result`` (poller -> arbiter -> requester, topic ``b"control_result"``): v,
    kind="control_result", id, pack, action (echoed; "" when the request had none valid),
    ok (bool), error (None when ok, else a sentence for a human).
``hello`` (poller -> arbiter, topic ``b"hello"``, every few seconds): v, kind="hello", port,
    bms (plugin name), packs (the pack ids the poller owns).
``link`` (poller -> arbiter) and ``health`` (publisher -> arbiter), topics ``b"link"`` and
    ``b"health"``, on a change and as a slow heartbeat: see :mod:`bmsbank.status_schema`.

A receiver validates every message with :func:`validate_state` / :func:`validate_bank` and counts
the ones it rejects: NaN, infinities, wrong types and values outside physical bounds never reach
the limits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import msgpack

from bmsbank.errors import LINK_COUNTERS as LINK_COUNTERS
from bmsbank.errors import MessageError
from bmsbank.native.messages import state_ok
from bmsbank.status_schema import check_cell_health, check_outputs, check_pack_why

SCHEMA_VERSION = 1
TOPIC_STATE = b"state"
TOPIC_BANK = b"bank"
TOPIC_CONTROL = b"control"
TOPIC_CONTROL_RESULT = b"control_result"
TOPIC_HELLO = b"hello"
TOPIC_LINK = b"link"
TOPIC_HEALTH = b"health"

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
CELL_BOUNDS = (0.0, 6.0)  # V (the schema's bounds; a pack's own are in bmsbank.plausibility)
TEMPERATURE_BOUNDS = (-60.0, 150.0)  # °C
MAX_CELLS = 64
MAX_TEMPERATURES = 16
MAX_HARDWARE = 128  # characters of the hardware text (make_state cuts a longer one)
MAX_SERIAL = 64  # characters of the serial number (make_state cuts a longer one)
MAX_COUNTER = 2**63 - 1
#: every key of a state message, exactly: an unknown key is rejected (a newer or foreign producer
#: is refused, not half-understood), so the message size is bounded by the bounds below
STATE_KEYS = frozenset((
    "v", "kind", "pack", "port", "address", "bms", "epoch", "seq", "mono", "time",
    "voltage", "current", "power", "soc", "soh", "capacity", "remaining", "cycles", "cells",
    "balancing", "temperatures", "mosfet_temperature", "charge_fet", "discharge_fet",
    "bms_ccl", "bms_dcl", "bms_cvl", "min_cell_voltage", "max_cell_voltage", "cell_delta",
    "alarms", "hardware", "serial", "link",
))  # fmt: skip


def _number(msg: Mapping, key: str, low: float, high: float) -> float:
    x = msg.get(key)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise MessageError(f"{key}: expected a number, got {type(x).__name__}")
    if not math.isfinite(x) or not low <= x <= high:
        raise MessageError(f"{key}: {x!r} outside [{low}, {high}]")
    return float(x)


_REAL_TYPES = frozenset((int, float))  # exactly: a bool is not a reading
_NUMBER_CHECKS = tuple((key, low, high) for key, (low, high) in _NUMBERS.items())
_OPTIONAL_CHECKS = tuple((key, low, high) for key, (low, high) in _OPTIONAL_NUMBERS.items())
_LONGEST_TEXT = 64  # characters of a pack id, port or family name
#: what :func:`bmsbank.native.messages.state_ok` checks a state against (built once)
STATE_SPEC = (SCHEMA_VERSION, STATE_KEYS, _NUMBER_CHECKS, _OPTIONAL_CHECKS, frozenset(ALARMS),
              frozenset(LINK_COUNTERS), *CELL_BOUNDS, MAX_CELLS, *TEMPERATURE_BOUNDS,
              MAX_TEMPERATURES, _LONGEST_TEXT, MAX_HARDWARE)  # fmt: skip
#: largest state body on the wire [bytes]: the largest valid state (64 cells, 16 sensors, every
#: alarm and counter, the longest texts) packs to under 2.5 KiB (tested); the arbiter's socket
#: drops a peer that sends more (ZeroMQ's MAXMSGSIZE), so no sender can make it hold more
MAX_STATE_BYTES = 4096
#: largest bank body on the wire [bytes] (256 packs' summaries fit several times)
MAX_BANK_BYTES = 1 << 20
#: how far a derived value may be from its recomputation (power: relative, plus watts)
POWER_TOLERANCE = (1e-6, 1e-6)
_INT_TYPE = frozenset((int,))
_FLAGS = frozenset((0, 1))


def _numbers(msg: Mapping, key: str, bounds: tuple[float, float], most: int) -> None:
    xs = msg.get(key)
    if not isinstance(xs, list) or len(xs) > most:
        raise MessageError(f"{key}: expected a list of at most {most} numbers")
    low, high = bounds
    # The usual case in C-level calls (this runs for every state in two processes); anything
    # else goes the slow way below, which names the first bad element.
    if not xs or (
        _REAL_TYPES.issuperset(map(type, xs))
        and all(map(math.isfinite, xs))
        and low <= min(xs)
        and max(xs) <= high
    ):
        return
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


def _string(msg: Mapping, key: str, most: int = _LONGEST_TEXT) -> str:
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


def _version(msg: Mapping) -> bool:
    """The schema version, exactly (``True`` equals 1 in Python, but it is not a version)."""
    v = msg.get("v")
    return type(v) is int and v == SCHEMA_VERSION


def validate_state(msg: Any) -> dict:
    """Check a decoded state message and return it unchanged.

    Raises:
        MessageError: naming the first field that is missing, of the wrong type, not finite or
            outside physical bounds.

    """
    # The usual case in compiled code (this runs for every state in three processes); any doubt
    # and the checks below decide, naming what is wrong. state_ok is never laxer (tested).
    if type(msg) is dict and state_ok(msg, STATE_SPEC):
        return msg
    return _check_state(msg)


def _check_state(msg: Any) -> dict:
    """Every check of :func:`validate_state`, one by one, raising at the first that fails."""
    if not isinstance(msg, dict):
        raise MessageError("state: expected a map")
    if not _version(msg) or msg.get("kind") != "state":
        raise MessageError(f"state: unsupported schema {msg.get('v')!r}/{msg.get('kind')!r}")
    _only(msg, STATE_KEYS, "state")
    missing = STATE_KEYS.difference(msg)
    if missing:
        raise MessageError(f"state: missing field(s) {sorted(missing)[:4]}")
    _string(msg, "pack")
    _string(msg, "port")
    _string(msg, "bms")
    if msg["pack"] != f"{msg['port']}:{msg['address']}":
        raise MessageError(f"pack: {msg['pack']!r} is not port:address of this state")
    if not isinstance(msg["hardware"], str) or len(msg["hardware"]) > MAX_HARDWARE:
        raise MessageError(f"hardware: expected a string of at most {MAX_HARDWARE} characters")
    if not isinstance(msg["serial"], str) or len(msg["serial"]) > MAX_SERIAL:
        raise MessageError(f"serial: expected a string of at most {MAX_SERIAL} characters")
    _integer(msg, "address", 0, 255)
    _integer(msg, "epoch", 0, MAX_COUNTER)
    _integer(msg, "seq", 0, MAX_COUNTER)
    _integer(msg, "cycles", 0, 10**6)
    get = msg.get
    # Inline in the usual case (this runs for every state in two processes): an exact int or
    # float inside its bounds (NaN fails both comparisons); anything else goes to _number,
    # which says what is wrong.
    x: Any
    for key, low, high in _NUMBER_CHECKS:
        x = get(key)
        if type(x) not in _REAL_TYPES or not low <= x <= high:
            _number(msg, key, low, high)
    for key, low, high in _OPTIONAL_CHECKS:
        x = get(key)
        if x is not None and (type(x) not in _REAL_TYPES or not low <= x <= high):
            _number(msg, key, low, high)
    _numbers(msg, "cells", CELL_BOUNDS, MAX_CELLS)
    if not msg["cells"]:
        raise MessageError("cells: a pack reports at least one cell")
    _numbers(msg, "temperatures", TEMPERATURE_BOUNDS, MAX_TEMPERATURES)
    balancing = msg.get("balancing")
    if not isinstance(balancing, list) or len(balancing) != len(msg["cells"]):
        raise MessageError("balancing: expected one 0/1 flag per cell")
    if not _FLAGS.issuperset(balancing):
        raise MessageError("balancing: flags must be 0 or 1")
    for key in ("charge_fet", "discharge_fet"):
        if not isinstance(msg.get(key), bool):
            raise MessageError(f"{key}: expected a boolean")
    if msg["remaining"] > msg["capacity"] * 1.5 + 1.0:
        raise MessageError("remaining: more than the pack's capacity")
    _alarms(msg)
    link = msg.get("link")
    if not isinstance(link, dict) or not (
        _INT_TYPE.issuperset(map(type, link.values()))
        and min(link.values(), default=0) >= 0
        and max(link.values(), default=0) <= MAX_COUNTER
    ):
        raise MessageError("link: expected a map of non-negative counters")
    _only(link, set(LINK_COUNTERS), "link")
    _derived(msg)
    return msg


def _derived(msg: dict) -> None:
    """The derived fields must be what the readings give (a receiver trusts them for display)."""
    cells = msg["cells"]
    for key, value in (("min_cell_voltage", min(cells)), ("max_cell_voltage", max(cells))):
        if msg.get(key) != value or type(msg.get(key)) not in _REAL_TYPES:
            raise MessageError(f"{key}: {msg.get(key)!r} is not the {key[:3]} of the cells")
    delta = msg.get("cell_delta")
    if type(delta) not in _REAL_TYPES or not abs(delta - (max(cells) - min(cells))) <= 1e-9:
        raise MessageError(f"cell_delta: {delta!r} is not the spread of the cells")
    power = msg["voltage"] * msg["current"]
    if not abs(msg["power"] - power) <= POWER_TOLERANCE[0] * abs(power) + POWER_TOLERANCE[1]:
        raise MessageError(f"power: {msg['power']!r} is not voltage x current ({power!r})")


#: bank fields that are a number or None (unknown), with their bounds
_BANK_NUMBERS: dict[str, tuple[float, float]] = {
    "voltage": (0.0, 1000.0), "current": (-1.0e5, 1.0e5), "current_avg": (-1.0e5, 1.0e5),
    "power": (-1.0e8, 1.0e8), "soc": (0.0, 100.0), "soh": (0.0, 100.0),
    "capacity": (0.0, 1.0e7), "installed_capacity": (0.0, 1.0e7), "remaining": (0.0, 1.0e7),
    "consumed": (0.0, 1.0e7), "time_to_go": (0.0, 1.0e10), "temperature": TEMPERATURE_BOUNDS,
    "min_temperature": TEMPERATURE_BOUNDS, "max_temperature": TEMPERATURE_BOUNDS,
    "min_cell_voltage": CELL_BOUNDS, "max_cell_voltage": CELL_BOUNDS,
    "days_since_full": (0.0, 1.0e6), "low_voltage": (0.0, 1000.0), "cycles": (0, 10**6),
    "time": (0.0, 1.0e11), "mono": (0.0, 1.0e12),
}  # fmt: skip
_BANK_COUNTS = ("online", "offline", "waiting", "blocking_charge", "blocking_discharge",
                "balancing", "cells_per_pack")  # fmt: skip
_BANK_FLAGS = ("allow_charge", "allow_discharge", "full_charge_due")
_BANK_IDS = ("min_temperature_id", "max_temperature_id", "min_cell_id", "max_cell_id")
CHARGE_STATE_NAMES = ("bulk", "absorption", "float")
MAX_PACKS = 256  # packs in one bank
MAX_REASON_LENGTH = 512
#: per-pack summary fields of a bank that are a number or None
_PACK_NUMBERS: dict[str, tuple[float, float]] = {
    "age": (0.0, 1.0e12), "voltage": (0.0, 1000.0), "current": (-10000.0, 10000.0),
    "soc": (0.0, 100.0), "capacity": (0.0, 1.0e5), "min_cell_voltage": CELL_BOUNDS,
    "max_cell_voltage": CELL_BOUNDS, "ccl": (0.0, 10000.0), "dcl": (0.0, 10000.0),
    "days_since_full": (0.0, 1.0e6),
}  # fmt: skip


def _maybe(msg: Mapping, key: str, low: float, high: float) -> None:
    if msg.get(key) is not None:
        _number(msg, key, low, high)


def _text_or_none(msg: Mapping, key: str, most: int) -> None:
    x = msg.get(key)
    if x is not None and (not isinstance(x, str) or len(x) > most):
        raise MessageError(f"{key}: expected a string of at most {most} characters, or null")


def validate_bank(msg: Any) -> dict:
    """Check a decoded bank message: every field the publisher reads, and the limits above all.

    Raises:
        MessageError: naming the first field that fails.

    """
    if not isinstance(msg, dict):
        raise MessageError("bank: expected a map")
    if not _version(msg) or msg.get("kind") != "bank":
        raise MessageError(f"bank: unsupported schema {msg.get('v')!r}/{msg.get('kind')!r}")
    _integer(msg, "seq", 0, MAX_COUNTER)
    _number(msg, "cvl", 0.0, 1000.0)
    _number(msg, "ccl", 0.0, 10000.0)
    _number(msg, "dcl", 0.0, 10000.0)
    for key in ("online", "offline", "blocking_charge", "blocking_discharge"):
        _integer(msg, key, 0, 10000)
    # The rest is checked where present: the publisher reads each with a default.
    _text_or_none(msg, "name", _LONGEST_TEXT)
    for key, (low, high) in _BANK_NUMBERS.items():
        _maybe(msg, key, low, high)
    for key in _BANK_COUNTS:
        if msg.get(key) is not None:
            _integer(msg, key, 0, 10000)
    for key in _BANK_FLAGS:
        if msg.get(key) is not None and not isinstance(msg[key], bool):
            raise MessageError(f"{key}: expected a boolean")
    for key in _BANK_IDS:
        _text_or_none(msg, key, _LONGEST_TEXT)
    if msg.get("charge_state", "bulk") not in CHARGE_STATE_NAMES:
        raise MessageError(f"charge_state: expected one of {', '.join(CHARGE_STATE_NAMES)}")
    reasons = msg.get("reasons", {})
    if not isinstance(reasons, dict) or not set(reasons) <= {"cvl", "ccl", "dcl"}:
        raise MessageError("reasons: expected a map of cvl, ccl and dcl to texts")
    for key, text in reasons.items():
        _string({key: text}, key, MAX_REASON_LENGTH)
    to_soc = msg.get("time_to_soc", {})
    if not isinstance(to_soc, dict) or len(to_soc) > 101:
        raise MessageError("time_to_soc: expected a map of SoC to seconds or null")
    for key, x in to_soc.items():
        if not isinstance(key, str):
            raise MessageError("time_to_soc: expected SoC texts as keys")
        _maybe({key: x}, key, 0.0, 1.0e10)
    _alarms(msg)
    timers = msg.get("timers", {})
    if not isinstance(timers, dict) or len(timers) > 8:
        raise MessageError("timers: expected a map of at most 8 names to seconds")
    for key, x in timers.items():
        if not isinstance(key, str) or len(key) > 32:
            raise MessageError("timers: expected names of at most 32 characters")
        _maybe({key: x}, key, 0.0, 1.0e10)
    packs = msg.get("packs")
    if not isinstance(packs, list) or len(packs) > MAX_PACKS:
        raise MessageError(f"packs: expected a list of at most {MAX_PACKS} pack summaries")
    for i, summary in enumerate(packs):
        try:
            _pack_summary(summary)
        except MessageError as exc:
            raise MessageError(f"packs[{i}].{exc}") from None
    if not isinstance(msg.get("counters", {}), dict):
        raise MessageError("counters: expected a map")
    check_outputs(msg)
    return msg


def _pack_summary(p: Any) -> None:
    """One entry of a bank's ``packs``, as the publisher's per-pack services read it."""
    if not isinstance(p, dict):
        raise MessageError("pack summary: expected a map")
    _string(p, "id")
    _text_or_none(p, "bms", _LONGEST_TEXT)
    for key in ("online", "joined"):
        if p.get(key) is not None and not isinstance(p[key], bool):
            raise MessageError(f"{key}: expected a boolean")
    for key, (low, high) in _PACK_NUMBERS.items():
        _maybe(p, key, low, high)
    if p.get("temperatures") is not None:
        _numbers(p, "temperatures", TEMPERATURE_BOUNDS, MAX_TEMPERATURES)
    for key in ("ccl_reason", "dcl_reason", "blocking_charge", "blocking_discharge",
                "last_rejection"):  # fmt: skip
        _text_or_none(p, key, MAX_REASON_LENGTH)
    alarms = p.get("alarms", [])
    if not isinstance(alarms, list) or not all(a in ALARMS for a in alarms):
        raise MessageError("alarms: expected a list of alarm names")
    rejected = p.get("rejected", {})
    if not isinstance(rejected, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in rejected.items()
    ):
        raise MessageError("rejected: expected a map of reason to count")
    check_pack_why(p, MAX_REASON_LENGTH)
    check_cell_health(p)


def pack(body: Mapping) -> bytes:
    """Serialise a message body with msgpack."""
    return msgpack.packb(body, use_bin_type=True)


def packer() -> Callable[[Mapping], bytes]:
    """A reusable :func:`pack` for one thread (a msgpack Packer keeps its buffer between calls)."""
    return msgpack.Packer(use_bin_type=True).pack


def unpack(data: bytes) -> Any:
    """Deserialise a msgpack body (raises MessageError on bytes that are not msgpack)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"not a msgpack message: {exc}") from exc


# -- control channel ---------------------------------------------------------------------------
#: action -> the value it takes: "bool" (true = allowed/enabled) or "true" (a trigger)
CONTROL_ACTIONS: dict[str, str] = {
    "charge": "bool",  # the charge FET may conduct
    "discharge": "bool",  # the discharge FET may conduct
    "balance": "bool",  # the cell balancer is enabled
    "reset_soc": "true",  # the BMS re-synchronises its SoC its own way (no family takes a target)
}
#: largest control, control_result or hello body accepted from the wire [bytes]
MAX_CONTROL_BYTES = 4096
MAX_CONTROL_TIMEOUT = 60.0  # s
MAX_ERROR_LENGTH = 256
MAX_HELLO_PACKS = 256
PACK_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}:(\d{1,3})$")
_CONTROL_KEYS = {"v", "kind", "id", "pack", "action", "value", "timeout", "expires"}
_RESULT_KEYS = {"v", "kind", "id", "pack", "action", "ok", "error"}


def is_pack_id(x: Any) -> bool:
    """Whether ``x`` is a pack id: "port:address" with a port name and an address 0-255."""
    match = PACK_ID_RE.match(x) if isinstance(x, str) else None
    return match is not None and int(match.group(1)) <= 255


def _pack_id(msg: Mapping, key: str = "pack") -> str:
    pid = msg.get(key)
    if not isinstance(pid, str) or not is_pack_id(pid):
        raise MessageError(f'{key}: expected a pack id "port:address", got {pid!r}')
    return pid


def _only(msg: Mapping, keys: AbstractSet[str], kind: str) -> None:
    extra = set(msg) - keys
    if extra:
        raise MessageError(f"{kind}: unknown field(s) {sorted(map(str, extra))[:4]}")


def _control_value(action: str, value: Any) -> None:
    if CONTROL_ACTIONS[action] == "bool" and not isinstance(value, bool):
        raise MessageError(f"value: {action} takes true or false, got {value!r}")
    if CONTROL_ACTIONS[action] == "true" and value is not True:
        raise MessageError(f"value: {action} takes true (no BMS family takes a SoC), got {value!r}")


def validate_control(msg: Any) -> dict:
    """Check a decoded control request and return it unchanged.

    Raises:
        MessageError: naming the first field that is missing, of the wrong type, unknown or
            outside its range (an unknown action, a value the action does not take, NaN).

    """
    if not isinstance(msg, dict):
        raise MessageError("control: expected a map")
    if not _version(msg) or msg.get("kind") != "control":
        raise MessageError(f"control: unsupported schema {msg.get('v')!r}/{msg.get('kind')!r}")
    _only(msg, _CONTROL_KEYS, "control")
    _string(msg, "id")
    _pack_id(msg)
    action = msg.get("action")
    if action not in CONTROL_ACTIONS:
        raise MessageError(f"action: expected one of {', '.join(CONTROL_ACTIONS)}, got {action!r}")
    _control_value(action, msg.get("value"))
    if msg.get("timeout") is not None:
        _number(msg, "timeout", 0.0, MAX_CONTROL_TIMEOUT)
        if msg["timeout"] <= 0:
            raise MessageError("timeout: must be above 0 s")
    if msg.get("expires") is not None:
        _number(msg, "expires", 0.0, 1.0e11)
    return msg


def validate_control_result(msg: Any) -> dict:
    """Check a decoded control result and return it unchanged.

    ``id``, ``pack`` and ``action`` may be empty strings: the arbiter answers a request too
    malformed to echo them. ``error`` is None exactly when ``ok`` is true.

    Raises:
        MessageError: naming the first field that fails.

    """
    if not isinstance(msg, dict):
        raise MessageError("control_result: expected a map")
    kind = msg.get("kind")
    if not _version(msg) or kind != "control_result":
        raise MessageError(f"control_result: unsupported schema {msg.get('v')!r}/{kind!r}")
    _only(msg, _RESULT_KEYS, "control_result")
    for key in ("id", "pack"):
        if not isinstance(msg.get(key), str) or len(msg[key]) > 64:
            raise MessageError(f"{key}: expected a string of at most 64 characters")
    if msg["pack"]:
        _pack_id(msg)
    if msg.get("action") not in (*CONTROL_ACTIONS, ""):
        raise MessageError(f'action: expected one of {", ".join(CONTROL_ACTIONS)} or ""')
    ok, error = msg.get("ok"), msg.get("error")
    if not isinstance(ok, bool):
        raise MessageError("ok: expected a boolean")
    if ok and error is not None:
        raise MessageError("error: must be null when ok is true")
    if not ok:
        _string(msg, "error", MAX_ERROR_LENGTH)
    return msg


def validate_hello(msg: Any) -> dict:
    """Check a decoded hello (a poller announcing its port and packs) and return it unchanged.

    Raises:
        MessageError: naming the first field that fails (a pack on another port included).

    """
    if not isinstance(msg, dict):
        raise MessageError("hello: expected a map")
    if not _version(msg) or msg.get("kind") != "hello":
        raise MessageError(f"hello: unsupported schema {msg.get('v')!r}/{msg.get('kind')!r}")
    port = _string(msg, "port", 32)
    _string(msg, "bms", 32)
    packs = msg.get("packs")
    if not isinstance(packs, list) or len(packs) > MAX_HELLO_PACKS:
        raise MessageError(f"packs: expected a list of at most {MAX_HELLO_PACKS} pack ids")
    for i, pid in enumerate(packs):
        if _pack_id({"pack": pid}, "pack").rsplit(":", 1)[0] != port:
            raise MessageError(f"packs[{i}]: {pid!r} is not on port {port!r}")
    return msg


def control_request(
    request_id: str, pack_id: str, action: str, value: Any, timeout: float | None = None
) -> dict[str, Any]:
    """A control request body (validated).

    Raises:
        MessageError: the arguments do not make a valid request.

    """
    msg = {"v": SCHEMA_VERSION, "kind": "control", "id": request_id, "pack": pack_id,
           "action": action, "value": value}  # fmt: skip
    if timeout is not None:
        msg["timeout"] = timeout
    return validate_control(msg)


def control_result(request: Mapping, ok: bool, error: str | None = None) -> dict[str, Any]:
    """The result of ``request`` (ids, pack and action echoed when they are valid strings).

    An error longer than the schema allows is cut, so a result can always be built.
    """

    def echo(key: str) -> str:
        x = request.get(key)
        return x if isinstance(x, str) and len(x) <= 64 else ""

    action = request.get("action")
    return {
        "v": SCHEMA_VERSION,
        "kind": "control_result",
        "id": echo("id"),
        "pack": echo("pack") if is_pack_id(echo("pack")) else "",
        "action": action if isinstance(action, str) and action in CONTROL_ACTIONS else "",
        "ok": ok,
        "error": None if ok else (error or "failed")[:MAX_ERROR_LENGTH],
    }
