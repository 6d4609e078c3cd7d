"""Configuration: one TOML file, layered as arguments > environment > file, typed once.

Every key is declared below with its type, default, unit and what it accepts. A file that cannot
be read, or holds unknown or invalid keys, stops start-up with one line per problem, each naming
the key, the file and what is expected, every problem of the file at once
(:class:`bmsbank.errors.ConfigError`; the services and the CLI exit with status 2).
``docs/CONFIG.md`` and the README list the same keys.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
import math
import os
import re
import stat
import sys
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from bmsbank.errors import ConfigError

if TYPE_CHECKING:
    from bmsbank.topology import Topology

ENV_CONFIG = "BMSBANK_CONFIG"
ENV_RUNTIME_DIR = "BMSBANK_RUNTIME_DIR"
DEFAULT_CONFIG = "/etc/bmsbank/bmsbank.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
#: ``bms = "auto"``: the poller scans the port at start and polls the family that answers
AUTO = "auto"
#: the address an "auto" port's pack has when none is configured (most single-BMS families' own)
AUTO_ADDRESS = 1
REMOTE_PACK_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}:(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$")
#: chemistries the cell-voltage defaults are made for
CHEMISTRIES = ("LiFePO4",)
#: a config file larger than this is refused before it is parsed [bytes]
MAX_FILE_BYTES = 1 << 20
#: longest path of a unix socket (sun_path holds 108 bytes with the final NUL)
SOCKET_PATH_BYTES = 107
#: the longest socket name the services put in runtime_dir (supervisord's)
LONGEST_SOCKET = "supervisor.sock"
#: longest runtime_dir whose sockets all fit a unix socket path [bytes]
RUNTIME_DIR_BYTES = SOCKET_PATH_BYTES - len(LONGEST_SOCKET) - 1
#: a port's reply timeout of 0 (its BMS's default) counts as this in the stale_after rule [s]:
#: the longest default of any family (jkbms)
DEFAULT_TIMEOUT_BOUND = 1.0
#: the shortest bank and poll interval [s]: Venus and the CAN port take the limits once a second
#: and a BMS updates its readings about as often; faster only costs CPU and bus time
MIN_INTERVAL = 0.1
#: the shortest reply timeout [s]: a USB adapter alone may hold a reply 16 ms (FTDI latency
#: timer) and a short reply at 9600 bit/s takes ~50 ms on the wire
MIN_TIMEOUT = 0.05
#: the shortest stale_after [s]
MIN_STALE_AFTER = 0.5
#: the prefix of the bank's D-Bus service name (what Venus looks for)
DBUS_PREFIX = "com.victronenergy.battery."
#: longest bank service name: a D-Bus name holds 255 bytes and every pack's service appends
#: "_<pack id>" (a port name of up to 32 characters, ":" and an address of up to 3 digits)
DBUS_SERVICE_BYTES = 255 - 37
#: /ProductId values whose CVL/CCL Venus rewrites (dbus-systemcalc-py delegates/dvcc.py QUIRKS):
#: a bank announced with one of them would not get the limits it computes
DVCC_QUIRK_IDS = (0xB004, 0xB009, 0xB00A, 0xB015, 0xB019, 0xB029, 0xA3E4, 0xA3E5, 0xA3E6, 0xA3E7)
_BUS_ELEMENT = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _at_least(low: float) -> Callable[[float], bool]:
    return lambda x: math.isfinite(x) and x >= low


def _is_int(v: Any) -> bool:
    """An integer that is not a boolean (TOML true is not 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _absolute_or_none(s: str) -> bool:
    return s == "" or s.startswith("/")


def _mqtt_level(s: str) -> bool:
    # MQTT 3.1.1 section 4.7: '+' and '#' are wildcards, not allowed in a published topic
    return bool(s) and not any(c in s for c in "+# \x00") and not s.startswith("/")


def dbus_name_ok(name: str) -> bool:
    """A well-known D-Bus name (spec, "Bus names") under com.victronenergy.battery.

    Elements of letters, digits, ``_`` and ``-`` separated by dots, none empty or starting with a
    digit, at most :data:`DBUS_SERVICE_BYTES` bytes.
    """
    if not name.startswith(DBUS_PREFIX) or len(name.encode()) > DBUS_SERVICE_BYTES:
        return False
    return all(_BUS_ELEMENT.fullmatch(e) for e in name.split("."))


def _non_negative(x: float) -> bool:
    return math.isfinite(x) and x >= 0


def _volts(x: float) -> bool:
    return 2.0 <= x <= 4.5


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _table(rows: Any) -> bool:
    ok = isinstance(rows, list) and all(
        isinstance(r, list) and len(r) == 2 and all(_is_number(v) for v in r) and 0.0 <= r[1] <= 1.0
        for r in rows
    )
    return ok and all(rows[i][0] <= rows[i + 1][0] for i in range(len(rows) - 1))


def _window(pair: Any) -> bool:
    return (
        isinstance(pair, list) and len(pair) == 2 and all(_is_number(v) for v in pair)
        and pair[0] < pair[1]
    )  # fmt: skip


def _spec(
    default: Any, expected: str, check: Callable[[Any], bool] | None = None, typed: bool = True
) -> Any:
    """A config key: default, a description of what it accepts (with unit), and a check.

    ``typed=False`` leaves the type to ``check`` (a key that takes a string or a bool).
    """
    meta = {"expected": expected, "check": check, "default": default, "typed": typed}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BankConfig:
    """[bank]: how the arbiter turns packs into one bank and its limits."""

    name: str = _spec(
        "bmsbank", "a name of 1-32 letters, digits, '_', '.', '-'", lambda s: bool(NAME_RE.match(s))
    )
    stale_after: float = _spec(
        10.0,
        f"seconds >= {MIN_STALE_AFTER:g} after which a silent pack is offline (and the publisher "
        "shows the safe state when the bank stops); at least 2 x bank.interval and 2 x "
        "(interval + timeout) of every port (a timeout of 0 counted as "
        f"{DEFAULT_TIMEOUT_BOUND:g} s), so one late update never takes a pack or the bank offline",
        _at_least(MIN_STALE_AFTER),
    )
    interval: float = _spec(
        1.0,
        f"seconds >= {MIN_INTERVAL:g} between bank computations (Venus and the CAN port take the "
        "limits once a second: faster only costs CPU)",
        _at_least(MIN_INTERVAL),
    )
    chemistry: str = _spec(
        "LiFePO4", f"one of {', '.join(CHEMISTRIES)}", lambda s: s in CHEMISTRIES
    )
    strings: list = _spec(
        [],
        "a list of strings in parallel, each a list of pack ids in series "
        '(e.g. [["bus:1", "bus:2"], ["bus:3", "bus:4"]]); empty = every pack in parallel',
    )
    packs: dict = _spec(
        {},
        "per pack id, a table of cells, capacity [Ah], chemistry, max_charge_current [A], "
        'max_discharge_current [A] (e.g. [bank.packs."bus:1"] cells = 16)',
    )
    share: str = _spec(
        "capacity",
        'how parallel strings share current: "capacity" or "count"',
        lambda s: s in ("capacity", "count"),
    )
    allow_mixed_capacity: bool = _spec(
        False, "true to allow packs of different capacity in one series string"
    )
    cell_charge_voltage: float = _spec(
        3.45, "volts per cell for bulk and absorption (CVL = cells x this), 2.0-4.5", _volts
    )
    cell_float_voltage: float = _spec(3.375, "volts per cell in float, 2.0-4.5", _volts)
    cell_low_voltage: float = _spec(
        2.90, "volts per cell for /Info/BatteryLowVoltage, 2.0-4.5", _volts
    )
    offline_cell_voltage: float = _spec(
        0.0,
        "volts per cell CVL falls to while a pack is unseen, 0 = cell_float_voltage",
        lambda x: x == 0.0 or _volts(x),
    )
    absorption_time: float = _spec(
        7200.0, "seconds in absorption before float (when the cells are balanced)", _positive
    )
    absorption_limit: float = _spec(
        14400.0, "seconds after which absorption ends even with unbalanced cells", _positive
    )
    absorption_spread: float = _spec(
        0.010, "volts: highest minus lowest cell small enough to end absorption", _non_negative
    )
    rebulk_soc: float = _spec(
        80.0, "SoC % below which float goes back to bulk", lambda x: 0.0 <= x <= 100.0
    )
    rebulk_spread: float = _spec(
        0.080, "volts of cell spread at which float goes back to bulk", _positive
    )
    full_charge_days: float = _spec(
        0.0,
        "days between forced full charges, 0 = 7 with series strings, else 30 (Victron manual)",
        _non_negative,
    )
    soc_reset_voltage: float = _spec(
        0.0,
        "volts per cell of a periodic SoC-reset charge (BMS resynchronises at full), 0 = off",
        lambda x: x == 0.0 or _volts(x),
    )
    soc_reset_days: float = _spec(30.0, "days between SoC-reset charges", _positive)
    cvl_interval: float = _spec(
        20.0, "seconds between CVL changes, except cuts that protect a cell", _positive
    )
    cvl_ramp: float = _spec(
        0.003, "volts per cell per minute CVL moves toward its target", _positive
    )
    ovp_hold: float = _spec(
        300.0, "seconds CVL stays down after a cell was over cell_charge_voltage", _non_negative
    )
    ovp_release: float = _spec(
        0.010,
        "volts below cell_charge_voltage the highest cell must be before CVL rises again",
        _non_negative,
    )
    max_charge_current: float = _spec(
        50.0, "amperes >= 0 one pack may be charged with", _non_negative
    )
    max_discharge_current: float = _spec(100.0, "amperes >= 0 one pack may deliver", _non_negative)
    interpolation: str = _spec(
        "linear",
        '"linear" or "step" (between two rows the smaller fraction) for every table',
        lambda s: s in ("linear", "step"),
    )
    ccl_cell_table: list = _spec(
        [[3.40, 1.0], [3.45, 0.5], [3.50, 0.1], [3.55, 0.0]],
        "rows [highest cell volts, fraction 0-1 of max_charge_current], volts ascending",
        _table,
    )
    dcl_cell_table: list = _spec(
        [[2.80, 0.0], [2.90, 0.1], [3.00, 0.5], [3.10, 1.0]],
        "rows [lowest cell volts, fraction 0-1 of max_discharge_current], volts ascending",
        _table,
    )
    charge_window: list = _spec(
        [5.0, 50.0], "[lowest, highest] °C at which a pack may charge (else CCL = 0)", _window
    )
    discharge_window: list = _spec(
        [-20.0, 50.0], "[lowest, highest] °C at which a pack may discharge (else DCL = 0)", _window
    )
    ccl_temperature_table: list = _spec(
        [[5.0, 0.25], [15.0, 1.0], [45.0, 1.0], [50.0, 0.25]],
        "rows [°C, fraction of max_charge_current] inside the charge window, °C ascending",
        _table,
    )
    dcl_temperature_table: list = _spec(
        [[-20.0, 0.25], [0.0, 1.0], [45.0, 1.0], [50.0, 0.5]],
        "rows [°C, fraction of max_discharge_current] inside the discharge window",
        _table,
    )
    ccl_soc_table: list = _spec(
        [], "rows [SoC %, fraction of max_charge_current], [] = off", _table
    )
    dcl_soc_table: list = _spec(
        [], "rows [SoC %, fraction of max_discharge_current], [] = off", _table
    )
    mosfet_table: list = _spec(
        [[70.0, 1.0], [80.0, 0.5], [90.0, 0.0]],
        "rows [MOSFET °C, fraction of both maxima] (when the BMS reports it)",
        _table,
    )
    current_hold: float = _spec(
        60.0, "seconds a current limit stays down after a cut before it ramps up", _non_negative
    )
    current_ramp: float = _spec(
        1.0, "amperes per second per pack a current limit rises after its hold", _positive
    )
    rejoin_window: float = _spec(
        0.05,
        "volts per cell a returning parallel string may differ from the bank to rejoin",
        _positive,
    )
    safe_ccl: float = _spec(0.0, "amperes of CCL with no pack online (safe state)", _non_negative)
    safe_dcl: float = _spec(0.0, "amperes of DCL with no pack online (safe state)", _non_negative)
    coulomb_counting: bool = _spec(
        False, "true: count SoC from the bank current, resynchronised to 100 % at full"
    )
    current_average_time: float = _spec(
        180.0, "seconds: time constant of the averaged current (time-to-go)", _positive
    )
    time_to_soc: list = _spec(
        [100, 50, 20, 0],
        "SoC % points for time-to-SoC, integers 0-100",
        lambda xs: all(_is_int(x) and 0 <= x <= 100 for x in xs),
    )
    state_file: str = _spec(
        "/var/lib/bmsbank/state.json",
        "absolute path of the file keeping days since full charge and the counted SoC across "
        'restarts, "" = none',
        _absolute_or_none,
    )
    remote_packs: list = _spec(
        [],
        'ids of packs on remote pollers (zmq.remote_states), e.g. ["rack2:1", "rack2:2"]',
        lambda xs: all(isinstance(x, str) and REMOTE_PACK_RE.match(x) for x in xs),
    )
    cell_health: bool = _spec(
        True,
        "true: estimate each cell's internal resistance and capacity and warn of weak cells "
        "(docs/CELL_HEALTH.md; never changes the limits)",
    )
    cell_step: float = _spec(
        0.0,
        "amperes >= 0: the least current change between two states that measures resistance, "
        "0 = a tenth of the pack's capacity per hour (at least 5 A)",
        _non_negative,
    )
    weak_cell_resistance: float = _spec(
        1.4, "a cell this many times its pack's median resistance is weak, 1.1-10",
        lambda x: 1.1 <= x <= 10.0,
    )  # fmt: skip
    weak_cell_capacity: float = _spec(
        92.0, "% of its pack's median cell at or below which a cell's capacity is weak, 50-99",
        lambda x: 50.0 <= x <= 99.0,
    )  # fmt: skip
    confirm_states: int = _spec(
        2,
        "states in a row, 1-10, a pack must report before a cut of its charge or discharge "
        "current or the over-voltage cut acts (1 = at once); a cut the BMS flags itself acts at "
        "once",
        lambda n: 1 <= n <= 10,
    )

    def float_voltage(self) -> float:
        """Volts per cell CVL falls to while a pack is unseen."""
        return self.offline_cell_voltage or self.cell_float_voltage


@dataclass(frozen=True)
class DbusConfig:
    """[dbus]: the Venus battery service the publisher registers."""

    enabled: bool = _spec(True, "true or false")
    service: str = _spec(
        "com.victronenergy.battery.bmsbank",
        f"a D-Bus name {DBUS_PREFIX}<name>: elements of letters, digits, '_' and '-' "
        f"separated by '.', none empty or starting with a digit, at most {DBUS_SERVICE_BYTES} "
        "bytes (255 with each pack's _<pack id>)",
        dbus_name_ok,
    )
    device_instance: int = _spec(
        512, "an integer 0-1023 (the VRM instance)", lambda n: 0 <= n <= 1023
    )
    # 0xBA44 is dbus-aggregate-batteries' (GUI pages key on it), 0xBA45 a virtual DC system's,
    # 0xBA77 dbus-serialbattery's (reserved by Victron); dbus-systemcalc-py delegates/dvcc.py
    # QUIRKS rewrite the limits of 0xB004/B009/B00A/B015/B019/B029 (LG, Pylontech, BYD, Pelio)
    # and 0xA3E4-A3E7 (Lynx Smart BMS). 0xBA5B is in none of these (README, "/ProductId").
    product_id: int = _spec(
        0xBA5B,
        "an integer 0-65535 (/ProductId), not one of the ids whose limits Venus's DVCC "
        "rewrites (" + ", ".join(f"0x{q:04X}" for q in DVCC_QUIRK_IDS) + ")",
        lambda n: 0 <= n <= 0xFFFF and n not in DVCC_QUIRK_IDS,
    )
    product_name: str = _spec("bmsbank battery bank", "a non-empty string", bool)
    unique_id: str = _spec(
        "",
        'the bank\'s stable id in the settings service: letters, digits, "_" ("" = bmsbank_<name>)',
        lambda s: s == "" or (len(s) <= 64 and s.replace("_", "a").isalnum() and s.isascii()),
    )
    names_file: str = _spec(
        "/var/lib/bmsbank/names.json",
        "absolute path of the file keeping custom names when there is no settings service, "
        '"" = none',
        _absolute_or_none,
    )
    pack_services: bool = _spec(
        True, "true or false: one battery service per pack (cells, alarms; never limits)"
    )


@dataclass(frozen=True)
class CanConfig:
    """[can]: the CAN-bus BMS output (Victron protocol)."""

    enabled: bool = _spec(False, "true or false")
    interface: str = _spec(
        "socketcan", "a python-can interface name (socketcan, slcan, virtual)", bool
    )
    channel: str = _spec("can0", "the interface's channel (can0, a serial path, ...)", bool)
    bitrate: int = _spec(500000, "250000 or 500000 (bit/s)", lambda n: n in (250000, 500000))
    manufacturer: str = _spec(
        "bmsbank",
        "up to 8 ASCII characters (frame 0x35E)",
        lambda s: 0 < len(s) <= 8 and s.isascii(),
    )
    on_stale: str = _spec(
        "safe",
        'CAN output while bank data is stale: "safe" (default: keep sending CCL = DCL = 0, the '
        'last CVL and a BMS-cable alarm, like D-Bus, so the GX shows why) or "silent" (send '
        "nothing; the GX stops charge and discharge itself 3 s after the last 0x351)",
        lambda s: s in ("safe", "silent"),
    )
    force_charge_soc: float = _spec(
        0.0,
        "SoC % below which the bank asks for a charge (frame 0x360), 0 = off (0x360 not sent)",
        lambda x: 0.0 <= x < 100.0,
    )
    force_charge_after: float = _spec(
        3600.0,
        "seconds >= 0 the SoC must stay below force_charge_soc before the request",
        _non_negative,
    )
    force_charge_release: float = _spec(
        30.0,
        "SoC % at which the force-charge request ends, above force_charge_soc",
        lambda x: 0.0 < x <= 100.0,
    )
    energy_file: str = _spec(
        "/var/lib/bmsbank/energy.json",
        "absolute path of the file keeping the energy in/out counters (frame 0x378) across "
        'restarts, "" = none',
        _absolute_or_none,
    )


@dataclass(frozen=True)
class WebConfig:
    """[web]: the read-only bank view page (``bmsbank web``; docs/WEB.md)."""

    enabled: bool = _spec(False, "true or false: run the web view under supervisord")
    listen: str = _spec(
        "127.0.0.1",
        "an IP address to bind; one that is not loopback needs a token",
        lambda s: _ip(s) is not None,
    )
    port: int = _spec(8088, "a TCP port, 1-65535", lambda n: 0 < n < 65536)
    token: str = _spec(
        "",
        'the token a browser must give (?token=...) off loopback, "" = none; printable ASCII, '
        "no spaces",
        lambda s: s.isascii() and s.isprintable() and " " not in s,
    )
    history_dir: str = _spec(
        "/var/lib/bmsbank/history",
        'absolute directory of the history store (history.sqlite3), "" = keep no history',
        _absolute_or_none,
    )
    history_max_mb: float = _spec(
        8.0, "the history store's size bound [MB], 1-1024", lambda x: 1.0 <= x <= 1024.0
    )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class MqttConfig:
    """[mqtt]: the optional MQTT bridge with Home Assistant discovery (docs/MQTT.md)."""

    enabled: bool = _spec(False, "true or false: run `bmsbank mqtt` under supervisord")
    host: str = _spec("localhost", "the broker's host name or address", bool)
    port: int = _spec(1883, "the broker's TCP port, 1-65535", lambda n: 0 < n < 65536)
    username: str = _spec("", 'the broker user, "" = anonymous')
    password: str = _spec("", "the broker password (or password_file)")
    password_file: str = _spec(
        "", 'absolute path of a file whose first line is the password, "" = none', _absolute_or_none
    )
    tls: bool = _spec(False, "true or false: TLS with the system's CA certificates")
    topic_prefix: str = _spec(
        "bmsbank", "first level of the state topics (no '+', '#' or spaces)", _mqtt_level
    )
    discovery_prefix: str = _spec(
        "homeassistant", "Home Assistant's discovery prefix (no '+', '#' or spaces)", _mqtt_level
    )
    interval: float = _spec(
        10.0, "seconds >= 1 between publications (the tap carries every bank)", lambda x: x >= 1.0
    )


@dataclass(frozen=True)
class ZmqConfig:
    """[zmq]: endpoints; empty means ipc:// sockets in the runtime directory."""

    states: str = _spec(
        "",
        "the endpoint the arbiter binds for states (empty = ipc://<runtime_dir>/states.ipc): "
        "ipc:///absolute/path (at most 107 bytes) or tcp://127.0.0.1:PORT (loopback only)",
    )
    tap: str = _spec(
        "", "the endpoint the arbiter binds for the tap (empty = ipc://<runtime_dir>/tap.ipc)"
    )
    control: str = _spec(
        "",
        "the endpoint the arbiter binds for control requests (empty = "
        "ipc://<runtime_dir>/control.ipc); the three endpoints must differ",
    )
    remote_states: str = _spec(
        "",
        "a tcp:// endpoint the arbiter binds for pollers on other machines, CURVE only (needs "
        'curve_secret_key and curve_clients; "" = none, the default: no TCP listener)',
        lambda s: s == "" or s.startswith("tcp://"),
    )
    curve_secret_key: str = _spec(
        "", "a ZeroMQ secret key file (NAME.key_secret, `bmsbank keys`): this side's CURVE key"
    )
    curve_clients: str = _spec(
        "", "the arbiter's allow-list: a directory of remote pollers' public key files (*.key)"
    )
    curve_server_key: str = _spec(
        "",
        "a remote poller's: the arbiter's public key file; set, the poller pushes its states "
        "over CURVE to zmq.states (a tcp:// endpoint of the arbiter's remote_states)",
    )


@dataclass(frozen=True)
class PortConfig:
    """[[ports]]: one serial port (USB adapter or RS485 bus) and the packs on it."""

    name: str = _spec(
        "",
        "a name of 1-32 letters, digits, '_', '.', '-' (used in pack ids)",
        lambda s: bool(NAME_RE.match(s)),
    )
    device: str = _spec(
        "", "a device path or pyserial URL (/dev/serial/by-id/... recommended)", bool
    )
    bms: str = _spec("", 'a BMS family name, or "auto" (scan the port at start)')
    addresses: list = _spec(
        [],
        "a list of integer pack addresses on this port (empty = the BMS default)",
        lambda xs: all(_is_int(a) and 0 <= a <= 255 for a in xs),
    )
    baudrate: int = _spec(0, "bit/s, 0 = the BMS default", lambda n: n == 0 or 300 <= n <= 4000000)
    interval: float = _spec(
        1.0,
        f"seconds >= {MIN_INTERVAL:g} between poll cycles (a BMS updates its readings about once "
        "a second: faster only loads the bus)",
        _at_least(MIN_INTERVAL),
    )
    timeout: float = _spec(
        0.0,
        f"seconds to wait for a reply, 0 = the BMS default, else >= {MIN_TIMEOUT:g} (a USB "
        "adapter alone may hold a reply 16 ms, a short reply at 9600 bit/s takes ~50 ms)",
        lambda x: x == 0.0 or _at_least(MIN_TIMEOUT)(x),
    )
    retries: int = _spec(1, "retries of a failed request, 0-5", lambda n: 0 <= n <= 5)
    command_gap: float = _spec(
        -1.0,
        "seconds of silence between commands, -1 = the BMS default",
        lambda x: x == -1.0 or _non_negative(x),
    )
    echo: Any = _spec(
        "auto",
        '"auto" (drop an exact copy of each request heard back, as CH340/CH341 RS485 adapters '
        "send), true (the adapter always echoes: drop that many bytes), false (keep everything)",
        lambda x: x in ("auto", True, False) and (x == "auto" or isinstance(x, bool)),
        typed=False,
    )
    process: str = _spec(
        "shared",
        "the poller process this port runs in, a name of 1-32 letters, digits, '_', '.', '-': "
        "ports with the same name share one process, each in a thread of its own (one Python "
        "interpreter, ~12 MB, for all of them, and about half the CPU of a process each); give "
        "a port a name of its own to restart it alone",
        lambda s: bool(NAME_RE.match(s)),
    )
    #: the BMS family's own options (keys it declares, set in the same [[ports]] table)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CanInputConfig:
    """[[can_inputs]]: one CAN interface and the packs of one CAN family on it (one process)."""

    name: str = _spec(
        "",
        "a name of 1-32 letters, digits, '_', '.', '-' no port has (pack ids are NAME:address)",
        lambda s: bool(NAME_RE.match(s)),
    )
    interface: str = _spec("", "a python-can interface name (socketcan, slcan, ...)", bool)
    channel: str = _spec("", "the interface's channel (can0, a serial path for slcan, ...)", bool)
    bms: str = _spec("", "a BMS family that speaks CAN")
    bitrate: int = _spec(0, "bit/s, 0 = the BMS default", lambda n: n == 0 or 10000 <= n <= 1000000)
    addresses: list = _spec(
        [],
        "a list of integer pack addresses on this bus (empty = the BMS default)",
        lambda xs: all(_is_int(a) and 0 <= a <= 255 for a in xs),
    )
    interval: float = _spec(
        1.0,
        f"seconds >= {MIN_INTERVAL:g} between two states of a pack (and polls of a polled BMS)",
        _at_least(MIN_INTERVAL),
    )
    timeout: float = _spec(
        0.0,
        f"seconds a polled BMS has to answer, 0 = the BMS default, else >= {MIN_TIMEOUT:g}",
        lambda x: x == 0.0 or _at_least(MIN_TIMEOUT)(x),
    )
    #: the BMS family's own options (keys it declares, set in the same [[can_inputs]] table)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole configuration, typed."""

    source: str = "<defaults>"
    runtime_dir: str = "/run/bmsbank"
    log_level: str = "info"
    log_dir: str = "/var/log/bmsbank"
    bank: BankConfig = BankConfig()
    dbus: DbusConfig = DbusConfig()
    can: CanConfig = CanConfig()
    zmq: ZmqConfig = ZmqConfig()
    web: WebConfig = WebConfig()
    mqtt: MqttConfig = MqttConfig()
    ports: tuple[PortConfig, ...] = ()
    can_inputs: tuple[CanInputConfig, ...] = ()

    @property
    def states_endpoint(self) -> str:
        """Where pollers push states and the arbiter pulls them."""
        return self.zmq.states or f"ipc://{self.runtime_dir}/states.ipc"

    @property
    def tap_endpoint(self) -> str:
        """Where the arbiter publishes states and banks (read-only for everyone else)."""
        return self.zmq.tap or f"ipc://{self.runtime_dir}/tap.ipc"

    @property
    def control_endpoint(self) -> str:
        """Where the arbiter takes control requests and pollers connect to carry them out."""
        return self.zmq.control or f"ipc://{self.runtime_dir}/control.ipc"

    def port(self, name: str) -> PortConfig:
        """The port called ``name`` (raises ConfigError when there is none)."""
        for p in self.ports:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.ports) or "none configured"
        raise ConfigError(f"ports.{name}", self.source, f"a configured port name ({known})")

    def processes(self) -> dict[str, list[PortConfig]]:
        """Poller process name -> its ports, both in config order."""
        out: dict[str, list[PortConfig]] = {}
        for p in self.ports:
            out.setdefault(p.process, []).append(p)
        return out

    def can_input(self, name: str) -> CanInputConfig:
        """The CAN input called ``name`` (raises ConfigError when there is none)."""
        for c in self.can_inputs:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.can_inputs) or "none configured"
        raise ConfigError(f"can_inputs.{name}", self.source, f"a configured CAN input ({known})")

    def pack_ids(self) -> list[str]:
        """Every configured pack id, "port:address", in config order.

        CAN inputs come after the ports, remote packs last.
        """
        return (
            [f"{p.name}:{a}" for p in self.ports for a in p.addresses]
            + [f"{c.name}:{a}" for c in self.can_inputs for a in c.addresses]
            + list(self.bank.remote_packs)
        )

    def topology(self) -> Topology:
        """The bank's strings and packs (raises ConfigError when they do not fit the ports)."""
        from bmsbank import topology

        return topology.build(self.bank, self.pack_ids(), self.source)


_TOP_KEYS = {"runtime_dir": str, "log_level": str, "log_dir": str}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_SECTIONS = {
    "bank": BankConfig, "dbus": DbusConfig, "can": CanConfig, "zmq": ZmqConfig, "web": WebConfig,
    "mqtt": MqttConfig,
}  # fmt: skip
LOG_DIR_EXPECTED = (
    "an absolute directory path without spaces at either end or a space before ';' or '#' "
    "(supervisord.conf would cut it there)"
)
RUNTIME_DIR_EXPECTED = (
    f"an absolute directory path of at most {RUNTIME_DIR_BYTES} bytes (its sockets must fit a "
    f"unix socket path, {SOCKET_PATH_BYTES} bytes), without spaces at either end or a space "
    "before ';' or '#' (supervisord.conf would cut it there)"
)


class _Problems:
    """Every problem found in one file, in the order found, and the keys they concern."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[ConfigError] = []

    def add(self, key: str, expected: str) -> None:
        self.found.append(ConfigError(key, self.source, expected))

    def add_error(self, error: ConfigError) -> None:
        self.found.extend(error.problems)

    def failed(self, *keys: str) -> bool:
        """Whether a problem concerns one of ``keys`` or something inside one."""
        return any(
            p.key == k or p.key.startswith((f"{k}.", f"{k}[")) for p in self.found for k in keys
        )

    def count(self) -> int:
        return len(self.found)

    def raise_all(self) -> None:
        if self.found:
            raise ConfigError.collect(self.found)


def _key(name: Any) -> str:
    """A key as it appears in a message: bare when it is a TOML bare key, else quoted."""
    name = str(name)
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened: a message stays one readable line whatever the file holds."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown(key: str, known: Iterable[str], what: str = "key") -> str:
    """The "unknown key" text: the closest known name, or the list of them."""
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"unknown {what}; did you mean {close[0]}?"
    return f"unknown {what}; expected one of {', '.join(known)}"


def control_char(text: str) -> str | None:
    """The first character of ``text`` that must not be in a config string, or None.

    Control characters (newline, tab, NUL, ...), line and paragraph separators and invisible
    format characters (bidi overrides, zero width): in a generated file (supervisord.conf) a
    newline ends the line and starts a section of the attacker's choosing, and the others hide
    text in files and logs.
    """
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp"):
            return c
    return None


def _bad_text(value: Any) -> str | None:
    """The first forbidden character in any string of ``value`` (lists and tables too)."""
    if isinstance(value, str):
        return control_char(value)
    if isinstance(value, list):
        values: Iterable[Any] = value
    elif isinstance(value, dict):
        values = [*value.keys(), *value.values()]
    else:
        return None
    for v in values:
        bad = _bad_text(v)
        if bad is not None:
            return bad
    return None


def _no_control(bad: str, value: Any) -> str:
    return f"text without control characters, got {bad!r} in {_shown(value)}"


def _accepts(f: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` has the type of field ``f`` and passes its check; the typed value."""
    default = f.metadata["default"]
    if not f.metadata["typed"]:
        ok = True
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = _is_int(value)
    else:
        ok = isinstance(value, type(default))
    check = f.metadata["check"]
    if ok and check is not None:
        try:
            ok = bool(check(value))
        except (TypeError, ValueError, OverflowError):  # an element of the wrong kind
            ok = False
    return ok, value


def _typed(cls: type, section: Any, where: str, problems: _Problems) -> Any:
    """``cls`` from a TOML table: every valid key set, every invalid one a problem."""
    if not isinstance(section, dict):
        problems.add(where, f"a table ([{where}]), got {_shown(section)}")
        return cls()
    known = {f.name: f for f in fields(cls) if f.name != "options"}
    values = {}
    for key, value in section.items():
        name = f"{where}.{_key(key)}"
        f = known.get(key)
        if f is None:
            problems.add(name, _unknown(key, known))
            continue
        bad = _bad_text(value)
        if bad is not None:
            problems.add(name, _no_control(bad, value))
            continue
        ok, value = _accepts(f, value)
        if not ok:
            problems.add(name, f"{f.metadata['expected']}, got {_shown(value)}")
            continue
        values[key] = value
    return cls(**values)


def _port(section: Any, where: str, problems: _Problems, ble: bool = False) -> PortConfig | None:
    """One ``[[ports]]`` table, or None when it has a problem (then every one is reported).

    ``ble``: the table is a ``[[ble.devices]]`` one, already given its device and process by
    :func:`_ble_device`: only families that speak BLE, no "auto".
    """
    from bmsbank.services.poller import plugins

    if not isinstance(section, dict):
        problems.add(
            where, f"a [[{'ble.devices' if ble else 'ports'}]] table, got {_shown(section)}"
        )
        return None
    before = problems.count()
    if ble:
        families = [n for n, i in plugins.families().items() if i.ble is not None]
    else:
        families = [
            *(n for n, i in plugins.families().items() if i.link not in WIRELESS_OR_CAN),
            AUTO,
        ]
    bms = section.get("bms")
    family = None
    if isinstance(bms, str) and bms in _can_families():
        problems.add(f"{where}.bms", f"a family of a serial link; {bms} speaks CAN: configure it "
                                     "under [[can_inputs]]")  # fmt: skip
    elif isinstance(bms, str) and bms in families and bms != AUTO:
        family = plugins.info(bms)
    elif bms == AUTO and not ble:
        pass  # the poller scans at start (see the README); no family options then
    elif bms is None:
        problems.add(f"{where}.bms", f"one of {', '.join(families)} (required)")
    elif isinstance(bms, str) and control_char(bms) is None:
        close = difflib.get_close_matches(bms, list(families), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        problems.add(f"{where}.bms", f"{hint}one of {', '.join(families)}, got {_shown(bms)}")
    else:
        problems.add(f"{where}.bms", f"one of {', '.join(families)}, got {_shown(bms)}")
    own = {f.name for f in fields(PortConfig)} - {"options"}
    common = {k: v for k, v in section.items() if k in own and k != "bms"}  # bms: checked above
    port = _typed(PortConfig, common, where, problems)
    options: dict[str, Any] = {}
    # a [[ble.devices]] table's keys: its address, not the ones its [[ble]] table decides
    table_keys = [f.name for f in fields(PortConfig) if f.name in own]
    if ble:
        table_keys = ["address", *(k for k in table_keys if k not in BLE_NOT_KEYS)]
    if family is None and bms != AUTO:
        # the family is unknown, so are its options: still name every key no family has
        _unknown_of_any(section, own, table_keys, [plugins.info(n) for n in families
                                                  if n != AUTO], where, problems)  # fmt: skip
    if family is not None or bms == AUTO:
        known = list(table_keys)
        known += [o.name for o in family.options] if family is not None else []
        given = {}
        for key, value in section.items():
            if key in own:
                continue
            name = f"{where}.{_key(key)}"
            bad = _bad_text(value)
            try:
                if family is None:
                    raise KeyError(key)  # "auto": which options apply is known after the scan
                family.option_values({key: value})
            except KeyError:
                problems.add(name, _unknown(key, known))
                continue
            except ValueError as exc:
                problems.add(name, _no_control(bad, value) if bad else exc.args[1])
                continue
            given[key] = value
        options = family.option_values(given) if family is not None else {}
    for key in ("name", "device"):
        if key not in section:
            expected = PortConfig.__dataclass_fields__[key].metadata["expected"]
            problems.add(f"{where}.{key}", f"{expected} (required)")
    if family is not None and not problems.failed(f"{where}.addresses"):
        addresses = list(port.addresses) or [family.default_address]
        outside = [a for a in addresses if a not in family.addresses]
        if outside or len(set(addresses)) != len(addresses):
            problems.add(
                f"{where}.addresses",
                f"distinct addresses in {family.addresses.start}-"
                f"{family.addresses.stop - 1} for {bms}, got {_shown(port.addresses)}",
            )
        elif len(addresses) > 1 and not family.multidrop:
            problems.add(f"{where}.addresses", f"a single address: {bms} cannot share a bus")
        port = PortConfig(**{**port.__dict__, "addresses": addresses})
    elif bms == AUTO and not problems.failed(f"{where}.addresses"):
        addresses = list(port.addresses) or [AUTO_ADDRESS]
        if len(set(addresses)) != len(addresses):
            problems.add(f"{where}.addresses", f"distinct addresses, got {_shown(port.addresses)}")
        port = PortConfig(**{**port.__dict__, "addresses": addresses})
    if problems.count() > before:
        return None
    return PortConfig(**{**port.__dict__, "bms": bms, "options": options})


def _unknown_of_any(section: Mapping[str, Any], own: set[str], known: Sequence[str],
                    families: Iterable[Any], where: str, problems: _Problems) -> None:  # fmt: skip
    """Report the keys of a table whose family is unknown that are options of no family."""
    options = {o.name for i in families for o in i.options}
    for key in section:
        if key not in own and key not in options:
            problems.add(f"{where}.{_key(key)}", _unknown(key, [*known, *sorted(options)]))


def _ports(value: Any, problems: _Problems) -> tuple[PortConfig, ...]:
    """Every ``[[ports]]`` table; names and devices must not repeat."""
    if not isinstance(value, list):
        problems.add("ports", "an array of tables: write [[ports]], not [ports]")
        return ()
    parsed = [_port(p, f"ports[{i}]", problems) for i, p in enumerate(value)]
    for key in ("name", "device"):
        first: dict[Any, int] = {}
        for i, p in enumerate(value):
            if not isinstance(p, dict) or problems.failed(f"ports[{i}].{key}"):
                continue
            v = p.get(key)
            if isinstance(v, str) and v in first:
                problems.add(
                    f"ports[{i}].{key}",
                    f"a {key} no other port has; ports[{first[v]}] has {_shown(v)} too",
                )
            elif isinstance(v, str):
                first[v] = i
    return tuple(p for p in parsed if p is not None)


#: family links a [[ports]] table cannot reach (they have sections of their own)
WIRELESS_OR_CAN = ("BLE", "CAN")
ADAPTER_RE = re.compile(r"^hci[0-9]{1,2}$")
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
#: [[ports]] keys a [[ble.devices]] table does not have: the adapter and MAC make the device,
#: the [[ble]] table the process, and a radio link has no baud rate, echo or bus silence
BLE_NOT_KEYS = ("device", "baudrate", "echo", "command_gap", "process")
BLE_DEVICE = "ble:{adapter}/{address}"  #: a BLE device's PortConfig.device


def ble_target(device: str) -> tuple[str, str] | None:
    """(adapter, MAC) of a BLE device's ``PortConfig.device`` ("ble:hci0/AA:..."), else None."""
    if not device.startswith("ble:"):
        return None
    adapter, _, address = device[4:].partition("/")
    return adapter, address


def _ble_device(section: Any, where: str, adapter: str, process: str, problems: _Problems
                ) -> PortConfig | None:  # fmt: skip
    """One ``[[ble.devices]]`` table as the port its poller thread polls."""
    if not isinstance(section, dict):
        problems.add(where, f"a [[ble.devices]] table, got {_shown(section)}")
        return None
    section = dict(section)
    for key in BLE_NOT_KEYS:
        if key in section:
            problems.add(f"{where}.{key}", "no such key in [[ble.devices]] (the adapter and "
                         "address make the device, [[ble]] the process)")  # fmt: skip
            section.pop(key)
    address = section.pop("address", None)
    if not isinstance(address, str) or not MAC_RE.match(address):
        got = "(required)" if address is None else f"got {_shown(address)}"
        problems.add(f"{where}.address", f'a MAC address "AA:BB:CC:DD:EE:FF" {got}')
        address = ""
    section["device"] = BLE_DEVICE.format(adapter=adapter, address=address.upper())
    section["process"] = process
    return _port(section, where, problems, ble=True)


def _ble(value: Any, problems: _Problems) -> list[tuple[str, PortConfig]]:
    """Every ``[[ble]]`` adapter's devices, each a port of the adapter's poller process.

    One process per adapter (``ble-<adapter>`` unless ``process`` names another) serves its
    devices, each in a thread of its own, as a poller process serves its serial ports.
    """
    if not isinstance(value, list):
        problems.add("ble", "an array of tables: write [[ble]], not [ble]")
        return []
    out: list[tuple[str, PortConfig | None]] = []
    for i, table in enumerate(value):
        where = f"ble[{i}]"
        if not isinstance(table, dict):
            problems.add(where, f"a [[ble]] table, got {_shown(table)}")
            continue
        for key in table:
            if key not in ("adapter", "process", "devices"):
                problems.add(
                    f"{where}.{_key(key)}", _unknown(key, ("adapter", "process", "devices"))
                )
        adapter = table.get("adapter", "hci0")
        if not isinstance(adapter, str) or not ADAPTER_RE.match(adapter):
            problems.add(
                f"{where}.adapter",
                f'a Bluetooth adapter name "hci0"-"hci99", got {_shown(adapter)}',
            )
            continue
        process = table.get("process", f"ble-{adapter}")
        if not isinstance(process, str) or not NAME_RE.match(process):
            problems.add(
                f"{where}.process", PortConfig.__dataclass_fields__["process"].metadata["expected"]
            )
            continue
        devices = table.get("devices", [])
        if not isinstance(devices, list):
            problems.add(f"{where}.devices", "an array of tables: write [[ble.devices]]")
            continue
        for j, d in enumerate(devices):
            at = f"{where}.devices[{j}]"
            out.append((at, _ble_device(d, at, adapter, process, problems)))
    return [(at, p) for at, p in out if p is not None]


def _unique_ble(ports: Sequence[PortConfig], ble: Sequence[tuple[str, PortConfig]],
                problems: _Problems) -> None:  # fmt: skip
    """BLE device names (pack ids) and MACs repeat nowhere, in [[ports]] or [[ble.devices]]."""
    taken = {p.name: "a [[ports]] table" for p in ports}
    devices: dict[str, str] = {}
    for where, p in ble:
        if p.name in taken:
            problems.add(f"{where}.name", "a name no other port or BLE device has "
                         f"({taken[p.name]} has {_shown(p.name)} too)")  # fmt: skip
        if p.device in devices:
            problems.add(f"{where}.address", f"an address no other device of the adapter has "
                         f"({devices[p.device]} has it too)")  # fmt: skip
        taken.setdefault(p.name, where)
        devices.setdefault(p.device, where)


def _can_families() -> dict[str, Any]:
    """The families that speak CAN (``[[can_inputs]] bms``), by name."""
    from bmsbank.services.poller import plugins

    return {n: i for n, i in plugins.families().items() if i.link.upper() == "CAN"}


def _can_input(section: Any, index: int, problems: _Problems) -> CanInputConfig | None:
    """One ``[[can_inputs]]`` table, or None when it has a problem (every one is reported)."""
    where = f"can_inputs[{index}]"
    if not isinstance(section, dict):
        problems.add(where, f"a [[can_inputs]] table, got {_shown(section)}")
        return None
    before = problems.count()
    families = _can_families()
    bms, family = section.get("bms"), None
    if isinstance(bms, str) and bms in families:
        family = families[bms]
    else:
        shown = "(required)" if bms is None else f"got {_shown(bms)}"
        close = difflib.get_close_matches(bms, list(families), n=1, cutoff=0.6) if (
            isinstance(bms, str) and control_char(bms) is None) else []  # fmt: skip
        hint = f"did you mean {close[0]}? " if close else ""
        problems.add(f"{where}.bms", f"{hint}a family that speaks CAN, one of "
                                     f"{', '.join(families)}, {shown}")  # fmt: skip
    own = {f.name for f in fields(CanInputConfig)} - {"options"}
    common = {k: v for k, v in section.items() if k in own and k != "bms"}
    can_input = _typed(CanInputConfig, common, where, problems)
    if family is None:
        _unknown_of_any(section, own, sorted(own), families.values(), where, problems)
    given: dict[str, Any] = {}
    for key, value in section.items():
        if key in own or family is None:
            continue
        name = f"{where}.{_key(key)}"
        bad = _bad_text(value)
        try:
            family.option_values({key: value})
        except KeyError:
            problems.add(name, _unknown(key, [*sorted(own), *(o.name for o in family.options)]))
            continue
        except ValueError as exc:
            problems.add(name, _no_control(bad, value) if bad else exc.args[1])
            continue
        given[key] = value
    for key in ("name", "interface", "channel"):
        if key not in section:
            expected = CanInputConfig.__dataclass_fields__[key].metadata["expected"]
            problems.add(f"{where}.{key}", f"{expected} (required)")
    if "interface" in common and not problems.failed(f"{where}.interface"):
        import can

        if can_input.interface not in can.interfaces.VALID_INTERFACES:
            known = ", ".join(sorted(can.interfaces.VALID_INTERFACES))
            got = _shown(can_input.interface)
            problems.add(f"{where}.interface", f"a python-can interface ({known}), got {got}")
    if family is None or problems.count() > before:
        return None
    addresses = list(can_input.addresses) or [family.default_address]
    if [a for a in addresses if a not in family.addresses] or len(set(addresses)) < len(addresses):
        problems.add(f"{where}.addresses", f"distinct addresses in {family.addresses.start}-"
                     f"{family.addresses.stop - 1} for {bms}, got {_shown(addresses)}")  # fmt: skip
        return None
    if len(addresses) > 1 and not family.multidrop:
        problems.add(f"{where}.addresses", f"a single address: {bms} has one battery per bus")
        return None
    return CanInputConfig(**{**can_input.__dict__, "bms": bms, "addresses": addresses,
                             "options": family.option_values(given)})  # fmt: skip


def _can_inputs(value: Any, problems: _Problems) -> tuple[CanInputConfig, ...]:
    """Every ``[[can_inputs]]`` table; names and (interface, channel) pairs must not repeat."""
    if not isinstance(value, list):
        problems.add("can_inputs", "an array of tables: write [[can_inputs]], not [can_inputs]")
        return ()
    parsed = [_can_input(c, i, problems) for i, c in enumerate(value)]
    names: dict[str, int] = {}
    buses: dict[tuple[str, str], int] = {}
    for i, c in enumerate(parsed):
        if c is None:
            continue
        if c.name in names:
            problems.add(f"can_inputs[{i}].name", f"a name no other CAN input has; "
                         f"can_inputs[{names[c.name]}] has {_shown(c.name)} too")  # fmt: skip
        names.setdefault(c.name, i)
        bus = (c.interface, c.channel)
        if bus in buses:
            problems.add(f"can_inputs[{i}].channel", f"a bus of its own; can_inputs[{buses[bus]}]"
                         f" reads {c.interface} {_shown(c.channel)} too")  # fmt: skip
        buses.setdefault(bus, i)
    return tuple(c for c in parsed if c is not None)


def _check_can_inputs(config: Config, data: Mapping[str, Any], problems: _Problems) -> None:
    """CAN input names differ from port names; stale_after outlasts two of their intervals."""
    if problems.failed("can_inputs") or not config.can_inputs:
        return
    ports = {p.name for p in config.ports}
    for i, c in enumerate(config.can_inputs):
        if c.name in ports:
            why = f"a name no port has (pack ids are NAME:address), got {_shown(c.name)}"
            problems.add(f"can_inputs[{i}].name", why)
    if problems.failed("bank.stale_after"):
        return
    need, i = max((2 * (c.interval + (c.timeout or DEFAULT_TIMEOUT_BOUND)), i)
                  for i, c in enumerate(config.can_inputs))  # fmt: skip
    if config.bank.stale_after < need:
        problems.add("bank.stale_after", f"at least {need:g} s, 2 x (can_inputs[{i}].interval + "
                     f"timeout): shorter, a pack goes offline between two normal updates; got "
                     f"{config.bank.stale_after:g}")  # fmt: skip


def _runtime_dir_problem(path: str) -> str | None:
    """What is wrong with ``path`` as the runtime directory, or None."""
    bad = control_char(path)
    if bad is not None:
        return _no_control(bad, path)
    ok = (
        path.startswith("/")
        and len(path.encode()) <= RUNTIME_DIR_BYTES
        and path == path.strip()
        and not re.search(r"\s[;#]", path)
    )
    return None if ok else f"{RUNTIME_DIR_EXPECTED}, got {_shown(path)}"


def _log_dir_problem(path: str) -> str | None:
    """What is wrong with ``path`` as the log directory, or None."""
    bad = control_char(path)
    if bad is not None:
        return _no_control(bad, path)
    ok = path.startswith("/") and path == path.strip() and not re.search(r"\s[;#]", path)
    return None if ok else f"{LOG_DIR_EXPECTED}, got {_shown(path)}"


def _top(key: str, value: Any, problems: _Problems) -> Any:
    """A top-level key's value, or None when it has a problem."""
    if not isinstance(value, str) or not value:
        problems.add(key, f"a non-empty string, got {_shown(value)}")
        return None
    if key in ("runtime_dir", "log_dir"):
        problem = (_runtime_dir_problem if key == "runtime_dir" else _log_dir_problem)(value)
        if problem:
            problems.add(key, problem)
            return None
    elif value not in _LOG_LEVELS:
        close = difflib.get_close_matches(value, _LOG_LEVELS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        problems.add(key, f"{hint}one of {', '.join(_LOG_LEVELS)}, got {_shown(value)}")
        return None
    return value


def endpoint_problem(endpoint: str, curve: bool = False) -> str | None:
    """What is wrong with a ZeroMQ endpoint the arbiter binds, or None.

    ``ipc://`` with an absolute path that fits a unix socket, or ``tcp://`` on a loopback
    address with a port: pollers, the publisher and readers are other processes (no inproc),
    and nothing plain listens beyond this machine. ``curve``: the socket is CURVE (a remote
    poller's ``states``, the arbiter's ``remote_states``), so any host is fine.
    """
    accepted = "ipc:///absolute/path or tcp://127.0.0.1:PORT"
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return f"{accepted}, got {_shown(endpoint)}"
    if scheme == "inproc":
        return f"{accepted}: pollers and readers are other processes, inproc cannot reach them"
    if scheme == "ipc":
        if not rest.startswith("/"):
            return f"an absolute path after ipc:// (no abstract @name or *), got {_shown(endpoint)}"
        if len(rest.encode()) > SOCKET_PATH_BYTES:
            return (
                f"an ipc:// path of at most {SOCKET_PATH_BYTES} bytes (a unix socket path), got "
                f"{len(rest.encode())} bytes"
            )
        return None
    if scheme != "tcp":
        return f"{accepted}, got {_shown(endpoint)}"
    host, colon, port = rest.rpartition(":")
    if not colon or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) <= 65535:
        return f"tcp://HOST:PORT with a port 1-65535, got {_shown(endpoint)}"
    if ";" in host:
        return f"tcp://HOST:PORT without a source address, got {_shown(endpoint)}"
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None and address.version == 6 and address.is_loopback:
        return "an IPv4 loopback address (127.0.0.1 or localhost): the sockets are IPv4 only"
    if curve or host == "localhost" or (address is not None and address.is_loopback):
        return None
    return (
        f"a loopback address (127.0.0.1 or localhost), got {_shown(host)}: no plain TCP beyond "
        "this machine (remote pollers come in over CURVE: zmq.remote_states, see README)"
    )


def _check_endpoints(config: Config, problems: _Problems) -> None:
    """Each endpoint valid, and the three different (two binds on one fail at start-up)."""
    seen: dict[tuple[str, str], str] = {}
    for name in ("states", "tap", "control"):
        key = f"zmq.{name}"
        if problems.failed(key):
            continue
        given = getattr(config.zmq, name)
        if given:
            # a remote poller pushes its states over CURVE to another machine's arbiter
            curve = name == "states" and bool(config.zmq.curve_server_key)
            problem = endpoint_problem(given, curve)
            if problem:
                problems.add(key, problem)
                continue
        endpoint = getattr(config, f"{name}_endpoint")
        scheme, _, rest = endpoint.partition("://")
        where = (
            ("tcp", rest.rpartition(":")[2]) if scheme == "tcp" else ("ipc", os.path.normpath(rest))
        )
        if where in seen:
            problems.add(
                key, f"an endpoint of its own; zmq.{seen[where]} is {_shown(endpoint)} too"
            )
        else:
            seen[where] = name


def _check_stale_after(config: Config, problems: _Problems) -> None:
    """stale_after must outlast two bank intervals and two poll cycles (+ timeout) of any port.

    Shorter, a pack (or the whole bank, at the publisher) is declared offline between two normal
    updates: the limits drop for no reason.
    """
    if problems.failed("bank.stale_after"):
        return
    needs = []
    if not problems.failed("bank.interval"):
        interval = config.bank.interval
        needs.append((2 * interval, f"2 x bank.interval ({interval:g} s)", "the bank"))
    if not problems.failed("ports"):  # else the indexes of config.ports are not the file's
        for i, port in enumerate(config.ports):
            timeout = port.timeout or DEFAULT_TIMEOUT_BOUND
            at = f"ports[{i}]" if ble_target(port.device) is None else f"BLE device {port.name}"
            why = f"2 x ({at}.interval + {at}.timeout) = 2 x ({port.interval:g} + {timeout:g}) s"
            if not port.timeout:
                why += f" (a timeout of 0, the BMS default, counts as {timeout:g} s)"
            needs.append((2 * (port.interval + timeout), why, "a pack"))
    if not needs:
        return
    need, why, what = max(needs, key=lambda n: n[0])
    stale = config.bank.stale_after
    if stale < need:
        problems.add(
            "bank.stale_after",
            f"at least {need:g} s, {why}: shorter, {what} goes offline between two normal "
            f"updates; got {stale:g}",
        )


def parse(data: Mapping[str, Any], source: str) -> Config:
    """Turn a TOML document (already parsed) into a :class:`Config`, validating every key.

    Raises:
        ConfigError: carrying every problem found (one line each in its text).

    """
    problems = _Problems(source)
    values: dict[str, Any] = {"source": source}
    serial: tuple[PortConfig, ...] = ()
    ble: list[tuple[str, PortConfig]] = []
    for key, value in data.items():
        if key in _SECTIONS:
            values[key] = _typed(_SECTIONS[key], value, key, problems)
        elif key == "ports":
            serial = _ports(value, problems)
        elif key == "ble":
            ble = _ble(value, problems)
        elif key == "can_inputs":
            values["can_inputs"] = _can_inputs(value, problems)
        elif key in _TOP_KEYS:
            checked = _top(key, value, problems)
            if checked is not None:
                values[key] = checked
        else:
            problems.add(
                _key(key), _unknown(key, [*_TOP_KEYS, *_SECTIONS, "ports", "ble", "can_inputs"])
            )
    # BLE devices last: ports[i] stays the file's i-th [[ports]] table
    values["ports"] = serial + tuple(p for _, p in ble)
    if ble and not problems.failed("ports"):
        _unique_ble(serial, ble, problems)
    config = Config(**values)
    _check_pack_keys(data.get("bank"), problems)
    _check_can_inputs(config, data, problems)
    _check_cell_voltages(config.bank, problems)
    _check_force_charge(config.can, problems)
    _check_web(config.web, problems)
    _check_endpoints(config, problems)
    _check_curve(config.zmq, problems)
    _check_stale_after(config, problems)
    topology_keys = ("ports", "ble", "can_inputs", "bank.strings", "bank.packs", "bank.chemistry",
                     "bank.max_charge_current", "bank.max_discharge_current")  # fmt: skip
    if not problems.failed(*topology_keys):
        try:
            config.topology()  # checks strings and packs against the ports
        except ConfigError as exc:
            problems.add_error(exc)
    problems.raise_all()
    return config


def _check_pack_keys(bank: Any, problems: _Problems) -> None:
    """Every unknown key of every ``[bank.packs."ID"]`` table, each with its closest name.

    The topology check (which needs valid ports) stops at its first problem; these are
    reported whatever else is wrong.
    """
    from bmsbank.topology import PACK_KEYS

    packs = bank.get("packs") if isinstance(bank, dict) else None
    if not isinstance(packs, dict) or problems.failed("bank.packs"):
        return
    for pid, table in packs.items():
        for key in table if isinstance(table, dict) else ():
            if key not in PACK_KEYS:
                where = f"bank.packs.{json.dumps(str(pid))}.{_key(key)}"
                problems.add(where, _unknown(key, PACK_KEYS))


def _check_curve(zc: ZmqConfig, problems: _Problems) -> None:
    """Remote pollers come with keys, or not at all; the key files must be there."""
    if zc.remote_states:
        problem = endpoint_problem(zc.remote_states, curve=True)
        if problem or not zc.remote_states.startswith("tcp://"):
            problems.add("zmq.remote_states", problem or "a tcp:// endpoint")
        if not (zc.curve_secret_key and zc.curve_clients):
            problems.add("zmq.remote_states", "curve_secret_key and curve_clients as well")
    if zc.curve_server_key and not zc.curve_secret_key:
        problems.add("zmq.curve_server_key", "curve_secret_key as well (this poller's own key)")
    for key in ("curve_secret_key", "curve_server_key"):
        path = getattr(zc, key)
        if path and not os.path.isfile(path):
            problems.add(f"zmq.{key}", f"an existing key file, got {_shown(path)}")
    if zc.curve_clients and not os.path.isdir(zc.curve_clients):
        shown = _shown(zc.curve_clients)
        problems.add("zmq.curve_clients", f"a directory of public key files, got {shown}")


def _check_cell_voltages(bank: BankConfig, problems: _Problems) -> None:
    """Low < float <= charge voltage (<= SoC-reset voltage when on): one CVL ladder."""
    ladder = ("bank.cell_low_voltage", "bank.cell_float_voltage", "bank.cell_charge_voltage")
    if problems.failed(*ladder):
        return
    if not bank.cell_low_voltage < bank.cell_float_voltage <= bank.cell_charge_voltage:
        problems.add(
            "bank.cell_float_voltage",
            f"above cell_low_voltage ({bank.cell_low_voltage:g} V) and at most "
            f"cell_charge_voltage ({bank.cell_charge_voltage:g} V), "
            f"got {bank.cell_float_voltage:g}",
        )
    if problems.failed("bank.soc_reset_voltage"):
        return
    if bank.soc_reset_voltage and bank.soc_reset_voltage < bank.cell_charge_voltage:
        problems.add(
            "bank.soc_reset_voltage",
            f"0 (off) or at least cell_charge_voltage ({bank.cell_charge_voltage:g} V), "
            f"got {bank.soc_reset_voltage:g}",
        )


def _check_web(web: WebConfig, problems: _Problems) -> None:
    """A web view reachable off this machine needs a token (its page shows the whole bank)."""
    if problems.failed("web.listen", "web.token"):
        return
    address = _ip(web.listen)
    if address is not None and not address.is_loopback and not web.token:
        problems.add("web.token", f"a token: web.listen {web.listen} is not a loopback address")


def _check_force_charge(can: CanConfig, problems: _Problems) -> None:
    """The force-charge request must end above the SoC that starts it (when the rule is on)."""
    if problems.failed("can.force_charge_soc", "can.force_charge_release"):
        return
    if can.force_charge_soc and can.force_charge_release <= can.force_charge_soc:
        problems.add(
            "can.force_charge_release",
            f"a SoC % above force_charge_soc ({can.force_charge_soc:g} %), "
            f"got {can.force_charge_release:g}",
        )


def _read(source: str) -> str:
    """The text of the config file; every way it cannot be read is one ConfigError.

    The file is opened without blocking (a FIFO would wait for a writer forever) and must be a
    regular file of at most :data:`MAX_FILE_BYTES` in UTF-8 (a leading byte-order mark is
    dropped).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(source, flags)
    except FileNotFoundError:
        raise ConfigError("file", source, "an existing TOML config file (no such file)") from None
    except PermissionError:
        raise ConfigError(
            "file", source, "a config file this user may read (permission denied)"
        ) from None
    except OSError as exc:
        raise ConfigError("file", source, f"a readable config file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError("file", source, "a TOML config file, not a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("file", source, "a regular file, not a device, FIFO or socket")
        chunks = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError("file", source, f"a readable config file ({exc.strerror})") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError("file", source, f"a config file of at most {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            "encoding", source,
            f"UTF-8 text; line {line} has byte 0x{raw[exc.start]:02x}, which is not "
            "(save the file as UTF-8)",
        ) from None  # fmt: skip
    return text.removeprefix("\ufeff")


def _override_runtime_dir(runtime_dir: str | None) -> tuple[str, str] | None:
    """(directory, where it came from) of a runtime_dir given outside the file, made absolute."""
    if runtime_dir:
        return os.path.abspath(runtime_dir), "--runtime-dir"
    env = os.environ.get(ENV_RUNTIME_DIR)
    if env:
        return os.path.abspath(env), f"${ENV_RUNTIME_DIR}"
    return None


def load(path: str | None = None, runtime_dir: str | None = None) -> Config:
    """Load the configuration: argument > $BMSBANK_CONFIG > /etc/bmsbank/bmsbank.toml.

    Args:
        path: config file given on the command line, if any.
        runtime_dir: runtime directory given on the command line (overrides env and file; a
            relative one is taken from the current directory).

    Raises:
        ConfigError: the file cannot be read (missing, a directory, not readable, not UTF-8),
            is not TOML or is empty, or holds unknown or invalid keys: every problem at once.

    """
    source = path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG
    text = _read(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("syntax", source, f"valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(
            "syntax", source, "valid TOML (arrays or tables nested too deeply)"
        ) from None
    if not data:
        raise ConfigError("file", source, "at least one key (the file is empty or all comments)")
    override = _override_runtime_dir(runtime_dir)
    if override is not None:
        problem = _runtime_dir_problem(override[0])
        if problem:
            raise ConfigError("runtime_dir", override[1], problem)
        data = {**data, "runtime_dir": override[0]}
    return parse(data, source)


def fail(prog: str, error: ConfigError) -> int:
    """Print every problem of ``error`` to stderr, one line each after ``prog``; return 2."""
    for line in error.lines():
        print(f"{prog}: {line}", file=sys.stderr)
    return 2


def reference() -> str:
    """Markdown table of every key with its default and what it accepts (docs/CONFIG.md)."""
    rows = ["| key | default | accepts |", "| --- | --- | --- |"]
    rows.append(
        f"| `runtime_dir` | `{Config.runtime_dir}` | directory of the ipc:// sockets and "
        f"supervisord's: {RUNTIME_DIR_EXPECTED} |"
    )
    rows.append(f"| `log_level` | `{Config.log_level}` | one of {', '.join(_LOG_LEVELS)} |")
    rows.append(
        f"| `log_dir` | `{Config.log_dir}` | directory of the services' and supervisord's log "
        f"files in an installation (`bmsbank install`, `supervisor-config`): {LOG_DIR_EXPECTED} |"
    )
    for section, cls in (("bank", BankConfig), ("dbus", DbusConfig), ("can", CanConfig),
                         ("zmq", ZmqConfig), ("web", WebConfig), ("mqtt", MqttConfig),
                         ("[ports]", PortConfig),
                         ("[can_inputs]", CanInputConfig)):  # fmt: skip
        for f in fields(cls):
            if f.name == "options":
                continue
            default = f.metadata["default"]
            shown = f"0x{default:04X}" if f.name == "product_id" else json_value(default)
            rows.append(f"| `{section}.{f.name}` | `{shown}` | {f.metadata['expected']} |")
    rows += [
        '| `[ble].adapter` | `"hci0"` | the Bluetooth adapter, "hci0"-"hci99" |',
        '| `[ble].process` | `"ble-<adapter>"` | the poller process serving the adapter\'s '
        "devices, each in a thread of its own (a name as `[ports].process`) |",
        "| `[ble].devices` | `[]` | `[[ble.devices]]` tables: `name`, `address` (the MAC, "
        '"AA:BB:CC:DD:EE:FF"), `bms` (a family that speaks BLE) and the `[ports]` keys but '
        f"{', '.join(f'`{k}`' for k in BLE_NOT_KEYS)} |",
    ]
    from bmsbank.services.poller import plugins

    for family in plugins.families().values():
        for opt in family.options:
            table = "can_inputs" if family.link.upper() == "CAN" else "ports"
            rows.append(f"| `[{table}].{opt.name}` (bms = \"{family.name}\") | "
                        f"`{json_value(opt.default)}` | {opt.expected} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def json_value(value: Any) -> str:
    """A default as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
