"""Configuration: one TOML file, layered as arguments > environment > file, typed once.

Every key is declared below with its type, default, unit and what it accepts. An unknown or invalid
key stops start-up with one line naming the key, the file and what is expected
(:class:`bmsbank.errors.ConfigError`). ``docs/CONFIG.md`` and the README list the same keys.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from bmsbank.errors import ConfigError

ENV_CONFIG = "BMSBANK_CONFIG"
ENV_RUNTIME_DIR = "BMSBANK_RUNTIME_DIR"
DEFAULT_CONFIG = "/etc/bmsbank/bmsbank.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _non_negative(x: float) -> bool:
    return math.isfinite(x) and x >= 0


def _steps(rows: Any) -> bool:
    return isinstance(rows, list) and all(
        isinstance(r, list)
        and len(r) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
        and 0.0 <= r[1] <= 1.0
        for r in rows
    )


def _spec(default: Any, expected: str, check: Callable[[Any], bool] | None = None) -> Any:
    """A config key: default, a description of what it accepts (with unit), and a check."""
    meta = {"expected": expected, "check": check, "default": default}
    if isinstance(default, list):
        return field(
            default_factory=lambda: [list(r) if isinstance(r, list) else r for r in default],
            metadata=meta,
        )
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class BankConfig:
    """[bank]: how the arbiter turns packs into one bank and its limits."""

    name: str = _spec(
        "bmsbank", "a name of 1-32 letters, digits, '_', '.', '-'", lambda s: bool(NAME_RE.match(s))
    )
    stale_after: float = _spec(10.0, "seconds > 0 after which a silent pack is offline", _positive)
    interval: float = _spec(1.0, "seconds > 0 between bank computations", _positive)
    cell_charge_voltage: float = _spec(
        3.45, "volts per cell (CVL = cells x this), 2.0-4.5", lambda x: 2.0 <= x <= 4.5
    )
    cell_low_voltage: float = _spec(
        2.90, "volts per cell for /Info/BatteryLowVoltage, 2.0-4.0", lambda x: 2.0 <= x <= 4.0
    )
    max_charge_current: float = _spec(
        50.0, "amperes >= 0 one pack may be charged with", _non_negative
    )
    max_discharge_current: float = _spec(100.0, "amperes >= 0 one pack may deliver", _non_negative)
    ccl_cell_steps: list = _spec(
        [[3.50, 0.0], [3.45, 0.05], [3.40, 0.25]],
        "rows [highest cell volts, fraction 0-1 of CCL] applied when the cell reaches the volts",
        _steps,
    )
    dcl_cell_steps: list = _spec(
        [[2.80, 0.0], [2.90, 0.05], [3.00, 0.25]],
        "rows [lowest cell volts, fraction 0-1 of DCL] applied when the cell falls to the volts",
        _steps,
    )
    cells: int = _spec(
        0, "cells in series per pack, 0 = as the packs report", lambda n: 0 <= n <= 64
    )


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


@dataclass(frozen=True)
class ZmqConfig:
    """[zmq]: endpoints; empty means ipc:// sockets in the runtime directory."""

    states: str = _spec("", "a ZeroMQ endpoint the arbiter binds for states (empty = default)")
    tap: str = _spec("", "a ZeroMQ endpoint the arbiter binds for the tap (empty = default)")


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

    def port(self, name: str) -> PortConfig:
        """The port called ``name`` (raises ConfigError when there is none)."""
        for p in self.ports:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.ports) or "none configured"
        raise ConfigError(f"ports.{name}", self.source, f"a configured port name ({known})")

    def pack_ids(self) -> list[str]:
        """Every configured pack id, "port:address", in config order."""
        return [f"{p.name}:{a}" for p in self.ports for a in p.addresses]


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
        if isinstance(default, bool):
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
    port = _typed(PortConfig, section, where, source)
    for key in ("name", "device", "bms"):
        if not getattr(port, key):
            raise ConfigError(
                f"{where}.{key}", source, PortConfig.__dataclass_fields__[key].metadata["expected"]
            )
    if port.bms not in plugins.REGISTRY:
        raise ConfigError(
            f"{where}.bms",
            source,
            f"one of {', '.join(sorted(plugins.REGISTRY))}, got {port.bms!r}",
        )
    plugin = plugins.load(port.bms)
    addresses = list(port.addresses) or [plugin.default_address]
    bad = [a for a in addresses if a not in plugin.addresses]
    if bad or len(set(addresses)) != len(addresses):
        raise ConfigError(
            f"{where}.addresses",
            source,
            f"distinct addresses in {plugin.addresses.start}-"
            f"{plugin.addresses.stop - 1} for {port.bms}, got {port.addresses!r}",
        )
    if len(addresses) > 1 and not plugin.multidrop:
        raise ConfigError(
            f"{where}.addresses", source, f"a single address: {port.bms} cannot share a bus"
        )
    return PortConfig(**{**port.__dict__, "addresses": addresses})


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
    return Config(**values)


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
            default = f.metadata["default"]
            shown = f"0x{default:04X}" if f.name == "product_id" else json_value(default)
            rows.append(f"| `{section}.{f.name}` | `{shown}` | {f.metadata['expected']} |")
    return "\n".join(rows) + "\n"


def json_value(value: Any) -> str:
    """A default as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
