"""Configuration: one TOML file, layered as arguments > environment > file, typed once.

Every key is declared below with its type, default, unit and what it accepts. An unknown or invalid
key stops start-up with one line naming the key, the file and what is expected
(:class:`bmsbank.errors.ConfigError`). ``docs/CONFIG.md`` and the README list the same keys.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from bmsbank.errors import ConfigError

if TYPE_CHECKING:
    from bmsbank.topology import Topology

ENV_CONFIG = "BMSBANK_CONFIG"
ENV_RUNTIME_DIR = "BMSBANK_RUNTIME_DIR"
DEFAULT_CONFIG = "/etc/bmsbank/bmsbank.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
REMOTE_PACK_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}:(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$")
#: chemistries the cell-voltage defaults are made for
CHEMISTRIES = ("LiFePO4",)


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


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
    stale_after: float = _spec(10.0, "seconds > 0 after which a silent pack is offline", _positive)
    interval: float = _spec(1.0, "seconds > 0 between bank computations", _positive)
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
        "SoC % points for time-to-SoC",
        lambda xs: all(isinstance(x, int) and 0 <= x <= 100 for x in xs),
    )
    state_file: str = _spec(
        "/var/lib/bmsbank/state.json",
        'file keeping days since full charge and the counted SoC across restarts, "" = none',
    )
    remote_packs: list = _spec(
        [],
        'ids of packs on remote pollers (zmq.remote_states), e.g. ["rack2:1", "rack2:2"]',
        lambda xs: all(isinstance(x, str) and REMOTE_PACK_RE.match(x) for x in xs),
    )
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
        "a bus name starting with com.victronenergy.battery.",
        lambda s: s.startswith("com.victronenergy.battery.") and len(s) < 200,
    )
    device_instance: int = _spec(
        512, "an integer 0-1023 (the VRM instance)", lambda n: 0 <= n <= 1023
    )
    product_id: int = _spec(0xBA44, "an integer 0-65535 (/ProductId)", lambda n: 0 <= n <= 0xFFFF)
    product_name: str = _spec("bmsbank battery bank", "a non-empty string", bool)
    unique_id: str = _spec(
        "",
        'the bank\'s stable id in the settings service: letters, digits, "_" ("" = bmsbank_<name>)',
        lambda s: s == "" or (len(s) <= 64 and s.replace("_", "a").isalnum() and s.isascii()),
    )
    names_file: str = _spec(
        "/var/lib/bmsbank/names.json",
        'file keeping custom names when there is no settings service, "" = none',
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
        'file keeping the energy in/out counters (frame 0x378) across restarts, "" = none',
    )


@dataclass(frozen=True)
class ZmqConfig:
    """[zmq]: endpoints; empty means ipc:// sockets in the runtime directory."""

    states: str = _spec("", "a ZeroMQ endpoint the arbiter binds for states (empty = default)")
    tap: str = _spec("", "a ZeroMQ endpoint the arbiter binds for the tap (empty = default)")
    control: str = _spec(
        "", "a ZeroMQ endpoint the arbiter binds for control requests (empty = default)"
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
    bms: str = _spec("", "a BMS plugin name")
    addresses: list = _spec(
        [],
        "a list of pack addresses on this port (empty = the BMS default)",
        lambda xs: all(isinstance(a, int) and 0 <= a <= 255 for a in xs),
    )
    baudrate: int = _spec(0, "bit/s, 0 = the BMS default", lambda n: n == 0 or 300 <= n <= 4000000)
    interval: float = _spec(1.0, "seconds > 0 between poll cycles", _positive)
    timeout: float = _spec(0.0, "seconds to wait for a reply, 0 = the BMS default", _non_negative)
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
class Config:
    """The whole configuration, typed."""

    source: str = "<defaults>"
    runtime_dir: str = "/run/bmsbank"
    log_level: str = "info"
    bank: BankConfig = BankConfig()
    dbus: DbusConfig = DbusConfig()
    can: CanConfig = CanConfig()
    zmq: ZmqConfig = ZmqConfig()
    ports: tuple[PortConfig, ...] = ()

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

    def pack_ids(self) -> list[str]:
        """Every configured pack id, "port:address", in config order (remote packs last)."""
        return [f"{p.name}:{a}" for p in self.ports for a in p.addresses] + list(
            self.bank.remote_packs
        )

    def topology(self) -> Topology:
        """The bank's strings and packs (raises ConfigError when they do not fit the ports)."""
        from bmsbank import topology

        return topology.build(self.bank, self.pack_ids(), self.source)


_TOP_KEYS = {"runtime_dir": str, "log_level": str}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _typed(cls: type, section: Mapping[str, Any], where: str, source: str) -> Any:
    if not isinstance(section, dict):
        raise ConfigError(where, source, "a table")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in section.items():
        name = f"{where}.{key}"
        f = known.get(key)
        if f is None:
            raise ConfigError(name, source, f"unknown key; expected one of {', '.join(known)}")
        expected = f.metadata["expected"]
        default = f.metadata["default"]
        if not f.metadata["typed"]:
            ok = True
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        check = f.metadata["check"]
        if not ok or (check is not None and not check(value)):
            raise ConfigError(name, source, f"{expected}, got {value!r}")
        values[key] = value
    return cls(**values)


def _port(section: Any, index: int, source: str) -> PortConfig:
    from bmsbank.services.poller import plugins

    where = f"ports[{index}]"
    if not isinstance(section, dict):
        raise ConfigError(where, source, "a table")
    bms = section.get("bms")
    if not isinstance(bms, str) or bms not in plugins.families():
        raise ConfigError(f"{where}.bms", source,
                          f"one of {', '.join(plugins.families())}, got {bms!r}")  # fmt: skip
    family = plugins.info(bms)
    own = {f.name for f in fields(PortConfig)} - {"options"}
    given = {k: v for k, v in section.items() if k not in own}
    try:
        options = family.option_values(given)
    except KeyError as exc:
        known = [f.name for f in fields(PortConfig) if f.name in own]
        known += [o.name for o in family.options]
        raise ConfigError(f"{where}.{exc.args[0]}", source,
                          f"unknown key; expected one of {', '.join(known)}") from None  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"{where}.{exc.args[0]}", source, exc.args[1]) from None
    port = _typed(PortConfig, {k: v for k, v in section.items() if k in own}, where, source)
    for key in ("name", "device"):
        if not getattr(port, key):
            raise ConfigError(
                f"{where}.{key}", source, PortConfig.__dataclass_fields__[key].metadata["expected"]
            )
    addresses = list(port.addresses) or [family.default_address]
    bad = [a for a in addresses if a not in family.addresses]
    if bad or len(set(addresses)) != len(addresses):
        raise ConfigError(
            f"{where}.addresses",
            source,
            f"distinct addresses in {family.addresses.start}-"
            f"{family.addresses.stop - 1} for {bms}, got {port.addresses!r}",
        )
    if len(addresses) > 1 and not family.multidrop:
        raise ConfigError(
            f"{where}.addresses", source, f"a single address: {bms} cannot share a bus"
        )
    return PortConfig(**{**port.__dict__, "addresses": addresses, "options": options})


def parse(data: Mapping[str, Any], source: str) -> Config:
    """Turn a TOML document (already parsed) into a :class:`Config`, validating every key."""
    sections = {"bank": BankConfig, "dbus": DbusConfig, "can": CanConfig, "zmq": ZmqConfig}
    values: dict[str, Any] = {"source": source}
    for key, value in data.items():
        if key in sections:
            values[key] = _typed(sections[key], value, key, source)
        elif key == "ports":
            if not isinstance(value, list):
                raise ConfigError("ports", source, "an array of [[ports]] tables")
            ports = tuple(_port(p, i, source) for i, p in enumerate(value))
            names = [p.name for p in ports]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ConfigError("ports.name", source, f"unique names, {sorted(dup)} repeat")
            values["ports"] = ports
        elif key in _TOP_KEYS:
            if not isinstance(value, str) or not value:
                raise ConfigError(key, source, "a non-empty string")
            if key == "log_level" and value not in _LOG_LEVELS:
                raise ConfigError(key, source, f"one of {', '.join(_LOG_LEVELS)}")
            values[key] = value
        else:
            known = ", ".join([*_TOP_KEYS, *sections, "ports"])
            raise ConfigError(key, source, f"unknown key; expected one of {known}")
    config = Config(**values)
    _check_curve(config.zmq, source)
    _check_cell_voltages(config.bank, source)
    _check_force_charge(config.can, source)
    config.topology()  # checks strings and packs against the ports
    return config


def _check_curve(zc: ZmqConfig, source: str) -> None:
    """Remote pollers come with keys, or not at all; the key files must be there."""
    if zc.remote_states and not (zc.curve_secret_key and zc.curve_clients):
        raise ConfigError("zmq.remote_states", source,
                          "curve_secret_key and curve_clients as well (CURVE only)")  # fmt: skip
    if zc.curve_server_key and not zc.curve_secret_key:
        raise ConfigError("zmq.curve_server_key", source,
                          "curve_secret_key as well (this poller's own key)")  # fmt: skip
    for key in ("curve_secret_key", "curve_server_key"):
        path = getattr(zc, key)
        if path and not os.path.isfile(path):
            raise ConfigError(f"zmq.{key}", source, f"an existing key file, got {path!r}")
    if zc.curve_clients and not os.path.isdir(zc.curve_clients):
        raise ConfigError("zmq.curve_clients", source,
                          f"a directory of public key files, got {zc.curve_clients!r}")  # fmt: skip


def _check_cell_voltages(bank: BankConfig, source: str) -> None:
    """Low < float <= charge voltage (<= SoC-reset voltage when on): one CVL ladder."""
    if not bank.cell_low_voltage < bank.cell_float_voltage <= bank.cell_charge_voltage:
        raise ConfigError(
            "bank.cell_float_voltage", source,
            f"above cell_low_voltage ({bank.cell_low_voltage:g} V) and at most "
            f"cell_charge_voltage ({bank.cell_charge_voltage:g} V), "
            f"got {bank.cell_float_voltage:g}",
        )  # fmt: skip
    if bank.soc_reset_voltage and bank.soc_reset_voltage < bank.cell_charge_voltage:
        raise ConfigError(
            "bank.soc_reset_voltage", source,
            f"0 (off) or at least cell_charge_voltage ({bank.cell_charge_voltage:g} V), "
            f"got {bank.soc_reset_voltage:g}",
        )  # fmt: skip


def _check_force_charge(can: CanConfig, source: str) -> None:
    """The force-charge request must end above the SoC that starts it (when the rule is on)."""
    if can.force_charge_soc and can.force_charge_release <= can.force_charge_soc:
        raise ConfigError(
            "can.force_charge_release", source,
            f"a SoC % above force_charge_soc ({can.force_charge_soc:g} %), "
            f"got {can.force_charge_release:g}",
        )  # fmt: skip


def load(path: str | None = None, runtime_dir: str | None = None) -> Config:
    """Load the configuration: argument > $BMSBANK_CONFIG > /etc/bmsbank/bmsbank.toml.

    Args:
        path: config file given on the command line, if any.
        runtime_dir: runtime directory given on the command line (overrides env and file).

    Raises:
        ConfigError: the file is missing, not TOML, or holds an unknown or invalid key.

    """
    source = path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG
    try:
        with open(source, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file", source, "an existing TOML config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("syntax", source, f"valid TOML ({exc})") from None
    config = parse(data, source)
    override = runtime_dir or os.environ.get(ENV_RUNTIME_DIR)
    if override:
        config = Config(**{**config.__dict__, "runtime_dir": override})
    return config


def reference() -> str:
    """Markdown table of every key with its default and what it accepts (docs/CONFIG.md)."""
    rows = ["| key | default | accepts |", "| --- | --- | --- |"]
    rows.append(f"| `runtime_dir` | `{Config.runtime_dir}` | directory of the ipc:// sockets |")
    rows.append(f"| `log_level` | `{Config.log_level}` | one of {', '.join(_LOG_LEVELS)} |")
    for section, cls in (("bank", BankConfig), ("dbus", DbusConfig), ("can", CanConfig),
                         ("zmq", ZmqConfig), ("[ports]", PortConfig)):  # fmt: skip
        for f in fields(cls):
            if f.name == "options":
                continue
            default = f.metadata["default"]
            shown = f"0x{default:04X}" if f.name == "product_id" else json_value(default)
            rows.append(f"| `{section}.{f.name}` | `{shown}` | {f.metadata['expected']} |")
    from bmsbank.services.poller import plugins

    for family in plugins.families().values():
        for opt in family.options:
            rows.append(f"| `[ports].{opt.name}` (bms = \"{family.name}\") | "
                        f"`{json_value(opt.default)}` | {opt.expected} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def json_value(value: Any) -> str:
    """A default as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
