"""``bmsbank import-serialbattery``: a dbus-serialbattery config.ini as a bmsbank TOML config.

Every key of the incumbent's config (its defaults and the user's config.ini over them) is either
converted, with the bmsbank keys it became, or listed as not carried over with the reason. What
each incumbent key means: :mod:`bmsbank.serialbattery` (sources there); what each bmsbank key
means: docs/CONFIG.md and docs/LIMITS.md; the mapping in words: docs/IMPORT.md.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from typing import Any

from bmsbank import serialbattery as sb
from bmsbank.errors import ConfigError, one_line
from bmsbank.importer_io import Ports, render
from bmsbank.importer_tables import Tables

LOG_LEVELS = {"ERROR": "error", "WARNING": "warning", "INFO": "info", "DEBUG": "debug"}


@dataclass
class Imported:
    """The result of one conversion.

    ``toml`` is the whole config text (the notes at its end as comments), ``converted`` maps each
    incumbent key to the bmsbank keys it became, ``dropped`` each key not carried over to why.
    """

    toml: str
    converted: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


class Conversion:
    """One conversion in progress: read values, write bmsbank keys, keep the two lists."""

    def __init__(self, ini: sb.Ini) -> None:
        self.ini = ini
        self.top: list[tuple[str, Any, str]] = []
        self.bank: list[tuple[str, Any, str]] = []
        self.converted: dict[str, str] = {}
        self.dropped: dict[str, str] = {}

    # -- reading (every error names the key and where it was set) --

    def raw(self, key: str) -> str:
        """The key's text as the incumbent reads it (blanks squeezed)."""
        return self.ini.values[key]

    def fail(self, key: str, expected: str) -> ConfigError:
        """The error for ``key``'s value: ``FILE:LINE: KEY: expected, got VALUE``."""
        got = one_line(self.raw(key))[:60]
        return ConfigError(key, self.ini.where[key], f"{expected}, got {got!r}")

    def number(self, key: str, fallback: float | None = None) -> float:
        """A number; an empty value is ``fallback`` (the incumbent's), or an error without one."""
        text = self.raw(key)
        if text == "" and fallback is not None:
            return fallback
        try:
            value = float(text)
        except ValueError:
            raise self.fail(key, "a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise self.fail(key, "a finite number")
        return value

    def flag(self, key: str) -> bool:
        """True or False (any case); the incumbent reads anything else as False, a typo too."""
        text = self.raw(key).lower()
        if text not in ("true", "false"):
            raise self.fail(key, "True or False")
        return text == "true"

    def numbers(self, key: str) -> list[float]:
        """A comma-separated list of numbers (blanks dropped, as the incumbent does)."""
        items = [s.strip() for s in self.raw(key).split(",") if s.strip()]
        try:
            return [float(s) for s in items]
        except ValueError:
            raise self.fail(key, "numbers separated by commas") from None

    def words(self, key: str) -> list[str]:
        """A comma-separated list of words."""
        return [s.strip() for s in self.raw(key).split(",") if s.strip()]

    # -- writing --

    def set(self, key: str, value: Any, *sources: str, note: str = "") -> None:
        """``bank.key = value`` (or a top-level key), converted from ``sources``."""
        comment = ", ".join(sources)
        if len(sources) == 1:
            comment = f"{sources[0]} = {self.raw(sources[0])}" if self.raw(sources[0]) else (
                f"{sources[0]} (empty)")  # fmt: skip
        if note:
            comment += f": {note}"
        target = self.top if key in ("log_level",) else self.bank
        target.append((key, value, comment))
        for s in sources:
            self.convert(s, f"{key if target is self.top else 'bank.' + key}"
                         + (f" ({note})" if note else ""))  # fmt: skip

    def convert(self, key: str, what: str) -> None:
        """Record ``key`` as converted into ``what`` (appended when it went to several keys)."""
        self.dropped.pop(key, None)
        old = self.converted.get(key)
        self.converted[key] = what if old is None or what in old else f"{old}; {what}"

    def drop(self, key: str, why: str) -> None:
        """Record ``key`` as not carried over, and why (unless it was converted)."""
        if key not in self.converted:
            self.dropped.setdefault(key, why)


def convert(path: str, default_path: str | None = None) -> Imported:
    """Convert dbus-serialbattery's ``config.ini`` at ``path``.

    Its keys override those of ``default_path`` (a config.default.ini), else the defaults of
    release :data:`bmsbank.serialbattery.RELEASE`.

    Raises:
        ConfigError: a malformed file or value (naming the key and ``file:line``).

    """
    c = Conversion(sb.Ini(path, default_path))
    _limits(c)
    _charging(c)
    Tables(c).apply()
    _other(c)
    _recovery(c)
    ports = Ports(c)
    ports.apply()
    for key, why in sb.NOT_CARRIED.items():
        if key in c.ini.values:
            c.drop(key, why)
    for key, where in c.ini.unknown.items():
        close = difflib.get_close_matches(key, list(c.ini.values), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        c.dropped[key] = f"{where}: not a key of dbus-serialbattery {sb.RELEASE}{hint}"
    for section, where in c.ini.sections.items():
        c.dropped[f"[{section}]"] = f"{where}: dbus-serialbattery reads only [DEFAULT]"
    for key in c.ini.values:  # keys of a later release's config.default.ini (--default)
        if key not in c.converted and key not in c.dropped:
            c.dropped[key] = f"not a key of {sb.RELEASE}: no bmsbank counterpart known here"
    text = render(c, ports, path)
    _check(text, path)
    return Imported(text, c.converted, c.dropped)


def _check(text: str, path: str) -> None:
    """The generated config must load as the services load it (else this module has a bug)."""
    from bmsbank import config as configuration

    try:
        configuration.parse(tomllib.loads(text), f"(converted from {path})")
    except ConfigError as exc:
        raise ConfigError.collect(exc.problems) from exc


def _limits(c: Conversion) -> None:
    """Log level, the per-BMS current limits and the cell voltages."""
    level = c.raw("LOGGING").upper()
    if level not in LOG_LEVELS:
        raise c.fail("LOGGING", f"one of {', '.join(LOG_LEVELS)}")
    c.set("log_level", LOG_LEVELS[level], "LOGGING")
    # both: "Limits apply to each individual battery/BMS", as bmsbank's per-pack maxima
    c.set("max_charge_current", c.number("MAX_BATTERY_CHARGE_CURRENT", 0.0),
          "MAX_BATTERY_CHARGE_CURRENT")  # fmt: skip
    c.set("max_discharge_current", c.number("MAX_BATTERY_DISCHARGE_CURRENT", 0.0),
          "MAX_BATTERY_DISCHARGE_CURRENT")  # fmt: skip
    c.set("cell_low_voltage", c.number("MIN_CELL_VOLTAGE", 0.0), "MIN_CELL_VOLTAGE")
    high = c.number("MAX_CELL_VOLTAGE", 0.0)
    c.set("cell_charge_voltage", high, "MAX_CELL_VOLTAGE")
    if c.flag("CVCM_ENABLE"):
        c.set("cell_float_voltage", c.number("FLOAT_CELL_VOLTAGE", 0.0), "FLOAT_CELL_VOLTAGE")
        c.convert("CVCM_ENABLE", "bmsbank's bulk, absorption and float (docs/LIMITS.md)")
    else:  # "Max charging voltage is always maintained": float at the charge voltage
        c.set("cell_float_voltage", high, "CVCM_ENABLE", "MAX_CELL_VOLTAGE",
              note="no float: float voltage = charge voltage")  # fmt: skip
        c.drop("FLOAT_CELL_VOLTAGE", "unused with CVCM_ENABLE = False (no float)")


def _charging(c: Conversion) -> None:
    """Absorption, float and back to bulk; the SoC reset charge and SoC counting."""
    cvcm = c.flag("CVCM_ENABLE")
    keys = ("SWITCH_TO_FLOAT_WAIT_FOR_SEC", "SWITCH_TO_FLOAT_CELL_VOLTAGE_DIFF",
            "SWITCH_TO_BULK_SOC_THRESHOLD", "SWITCH_TO_BULK_CELL_VOLTAGE_DIFF")  # fmt: skip
    if not cvcm:
        for key in keys:
            c.drop(key, "unused with CVCM_ENABLE = False (no float)")
    else:
        wait = c.number(keys[0], 0.0)
        # bmsbank needs some time in absorption: "0 = switch at once" becomes 1 s
        c.set(
            "absorption_time", max(wait, 1.0), keys[0], note="0 = at once: 1 s" if wait < 1 else ""
        )
        if wait > 14400.0:  # bmsbank's absorption_limit default: keep it above the time
            c.set("absorption_limit", wait, keys[0])
        # "To disable, leave empty or set to 10" (V): a spread any bank has
        c.set("absorption_spread", c.number(keys[1], 10.0), keys[1])
        c.set("rebulk_soc", c.number(keys[2], 0.0), keys[2])
        c.set("rebulk_spread", c.number(keys[3], 10.0), keys[3])
    _charge_mode(c)
    _soc_reset(c)
    c.set("coulomb_counting", c.flag("SOC_CALCULATION"), "SOC_CALCULATION")


def _charge_mode(c: Conversion) -> None:
    """CHARGE_MODE, the CVL recalculation period and the over-voltage controller."""
    mode = c.raw("CHARGE_MODE")
    if mode not in ("1", "2"):
        raise c.fail("CHARGE_MODE", "1 (linear) or 2 (step)")
    c.set("interpolation", "linear" if mode == "1" else "step", "CHARGE_MODE")
    every = c.number("CVL_RECALCULATION_EVERY", 0.0)
    if every > 0:
        c.set("cvl_interval", every, "CVL_RECALCULATION_EVERY")
    else:
        c.drop("CVL_RECALCULATION_EVERY", "0: bmsbank keeps its bank.cvl_interval (20 s)")
    controller = c.raw("CVL_CONTROLLER_MODE")
    if controller not in ("0", "1", "2", "3"):
        raise c.fail("CVL_CONTROLLER_MODE", "0, 1, 2 or 3")
    if controller == "1":
        c.convert("CVL_CONTROLLER_MODE", "bmsbank's cell over-voltage cut, always on: CVL = "
                  "cell sum minus the excess of the cells over the limit")  # fmt: skip
    else:
        c.drop("CVL_CONTROLLER_MODE", "bmsbank's cell over-voltage cut is always on and is the "
               "penalty-sum method (mode 1); it cannot be turned off or changed")  # fmt: skip


def _soc_reset(c: Conversion) -> None:
    """SOC_RESET_CELL_VOLTAGE every SOC_RESET_AFTER_DAYS (empty: off)."""
    if c.raw("SOC_RESET_AFTER_DAYS") == "":
        c.set("soc_reset_voltage", 0.0, "SOC_RESET_AFTER_DAYS", note="off")
        c.drop("SOC_RESET_CELL_VOLTAGE", "unused: SOC_RESET_AFTER_DAYS is empty (SoC reset off)")
        return
    days = c.number("SOC_RESET_AFTER_DAYS")
    if days < 0:
        raise c.fail("SOC_RESET_AFTER_DAYS", "days >= 0, or empty for off")
    c.set("soc_reset_voltage", c.number("SOC_RESET_CELL_VOLTAGE"), "SOC_RESET_CELL_VOLTAGE")
    # 0 days: the incumbent aims at the reset voltage every charge; bmsbank needs > 0 days
    c.set("soc_reset_days", max(days, 1.0), "SOC_RESET_AFTER_DAYS",
          note="0 = every charge: 1 day" if days < 1 else "")  # fmt: skip


def _other(c: Conversion) -> None:
    """Time-to-go and SoC points; what bmsbank has no counterpart for, with the value's weight."""
    if c.flag("TIME_TO_GO_ENABLE"):
        c.convert("TIME_TO_GO_ENABLE", "bmsbank always computes time-to-go")
    else:
        c.drop("TIME_TO_GO_ENABLE", "bmsbank always computes time-to-go; it cannot be turned off")
    points = c.numbers("TIME_TO_SOC_POINTS")
    if not all(p == int(p) and 0 <= p <= 100 for p in points):
        raise c.fail("TIME_TO_SOC_POINTS", "whole SoC percentages 0-100")
    c.set("time_to_soc", [int(p) for p in points], "TIME_TO_SOC_POINTS")
    same = c.numbers("CURRENT_REPORTED_BY_BMS") == c.numbers("CURRENT_MEASURED_BY_USER")
    why = "bmsbank has no current correction table" + (
        ": the two lists are equal here, the correction was off, nothing lost" if same
        else ": these lists corrected the current; calibrate the BMS instead"
    )  # fmt: skip
    c.drop("CURRENT_REPORTED_BY_BMS", why)
    c.drop("CURRENT_MEASURED_BY_USER", why)
    sensor = [k for k in c.ini.values if k.startswith("EXTERNAL_SENSOR_")]
    used = any(c.raw(k) for k in sensor)
    for key in sensor:
        c.drop(key, "bmsbank takes current and SoC from the BMSs, no external sensor"
               + ("" if used else " (empty here: nothing lost)"))  # fmt: skip
    drop = c.number("VOLTAGE_DROP", 0.0)
    c.drop("VOLTAGE_DROP", "bmsbank adds no cable loss to CVL"
           + (" (0 here: nothing lost)" if drop == 0 else ""))  # fmt: skip


def _recovery(c: Conversion) -> None:
    """Hold and ramp after a cut: keys of releases after v2.0.20250729 (a --default file's)."""
    holds = [k for k in ("CCL_RECOVERY_HOLD_SEC", "DCL_RECOVERY_HOLD_SEC") if k in c.ini.values]
    if holds:  # one hold for both limits in bmsbank: the longer
        c.set("current_hold", max(c.number(k, 0.0) for k in holds), *holds, note="the longer")
    rates = [k for k in ("CCL_RECOVERY_RATE_A_PER_SEC", "DCL_RECOVERY_RATE_A_PER_SEC")
             if k in c.ini.values and c.number(k, 0.0) > 0]  # fmt: skip
    if rates:  # A/s per BMS, as bmsbank's per pack; one ramp for both: the slower
        c.set("current_ramp", min(c.number(k) for k in rates), *rates, note="the slower")
    for key in ("CCL_RECOVERY_RATE_A_PER_SEC", "DCL_RECOVERY_RATE_A_PER_SEC"):
        if key in c.ini.values:
            c.drop(key, "0 = at once: bmsbank always ramps (bank.current_ramp)")
    if "CVL_RECOVERY_HOLD_SEC" in c.ini.values:
        c.set("ovp_hold", c.number("CVL_RECOVERY_HOLD_SEC", 0.0), "CVL_RECOVERY_HOLD_SEC")
