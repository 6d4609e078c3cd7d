"""Map a bank message to the paths of a Venus OS battery service (pure functions, no D-Bus).

Conventions:
    * ``None`` means "unknown" and is published invalid (an empty array on D-Bus, text ``---``).
    * Numbers are rounded to what the hardware can mean: V 0.01, cell V 0.001, A 0.1, degC 0.1,
      % 0.1, Ah 0.1, W 1. Every float path stays a float and every integer path an int, so the
      D-Bus type of a path never changes.
    * Safety invariant: /Info/MaxChargeVoltage, /Info/MaxChargeCurrent and
      /Info/MaxDischargeCurrent are ALWAYS numbers. Venus drops a BMS that publishes them invalid
      and then charges without limits.
    * With no pack online the measurements (voltage, current, SoC, ...) are unknown (the arbiter
      sends None), and they are published invalid rather than as an empty battery.
    * /Capacity is the remaining capacity [Ah] (as Venus battery services use it);
      /ConsumedAmphours is negative when charge was taken out (the BMV/SmartShunt convention).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bmsbank import __version__
from bmsbank.config import Config
from bmsbank.schema import ALARM, ALARMS, SCHEMA_VERSION

from .identity import bus_element

PROCESS_NAME = "bmsbank-publisher"
CONNECTION = "bmsbank"
HARDWARE_VERSION = "bmsbank virtual bank"

#: Paths a D-Bus client may write, and the service then owns (bank updates leave them alone).
WRITABLE = ("/CustomName",)
#: Paths set once at registration from the claimed identity; bank updates leave them alone.
OWNED = ("/DeviceInstance", "/CustomName", "/Serial")
CUSTOM_NAME_MAX = 64


def custom_name_ok(value: Any) -> bool:
    """A custom name a client may set: a non-empty string of at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= CUSTOM_NAME_MAX


#: Text shown by GetText / ItemsChanged for each numeric path (format with one value).
FORMATS: dict[str, str] = {
    "/Dc/0/Voltage": "{:.2f}V",
    "/Dc/0/Current": "{:.1f}A",
    "/Dc/0/Power": "{:.0f}W",
    "/Dc/0/Temperature": "{:.1f}C",
    "/Soc": "{:.1f}%",
    "/Capacity": "{:.1f}Ah",
    "/InstalledCapacity": "{:.1f}Ah",
    "/ConsumedAmphours": "{:.1f}Ah",
    "/Info/MaxChargeVoltage": "{:.2f}V",
    "/Info/MaxChargeCurrent": "{:.1f}A",
    "/Info/MaxDischargeCurrent": "{:.1f}A",
    "/Info/BatteryLowVoltage": "{:.2f}V",
    "/System/MinCellVoltage": "{:.3f}V",
    "/System/MaxCellVoltage": "{:.3f}V",
    "/System/MinCellTemperature": "{:.1f}C",
    "/System/MaxCellTemperature": "{:.1f}C",
}

#: Paths holding live measurements: invalid when no pack is online or the bank is stale.
MEASUREMENTS = (
    "/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", "/Dc/0/Temperature", "/Soc", "/Capacity",
    "/ConsumedAmphours", "/System/MinCellVoltage", "/System/MaxCellVoltage",
    "/System/MinVoltageCellId", "/System/MaxVoltageCellId", "/System/MinCellTemperature",
    "/System/MaxCellTemperature", "/System/MinTemperatureCellId", "/System/MaxTemperatureCellId",
    "/Balancing",
)  # fmt: skip


def alarm_path(name: str) -> str:
    """Return the Venus path of an alarm: ``low_voltage`` -> ``/Alarms/LowVoltage``."""
    return "/Alarms/" + "".join(part.capitalize() for part in name.split("_"))


#: alarm name -> its Venus path, for every alarm of the schema (built once: paths are hot)
ALARM_PATHS = {name: alarm_path(name) for name in ALARMS}


def rounded(x: Any, digits: int) -> float | None:
    """Round a number for publishing; None for anything unknown, NaN or infinite."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return round(float(x), digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def _limit(x: Any, digits: int) -> float:
    """Round a limit, which is never invalid: anything not finite and >= 0 becomes 0."""
    value = rounded(x, digits)
    return 0.0 if value is None or value < 0.0 else value


def _count(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else None


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def static_values(config: Config) -> dict[str, Any]:
    """Return the mandatory paths that do not depend on bank data."""
    return {
        "/Mgmt/ProcessName": PROCESS_NAME,
        "/Mgmt/ProcessVersion": __version__,
        "/Mgmt/Connection": CONNECTION,
        "/DeviceInstance": int(config.dbus.device_instance),
        "/ProductId": int(config.dbus.product_id),
        "/ProductName": config.dbus.product_name,
        "/FirmwareVersion": __version__,
        "/HardwareVersion": HARDWARE_VERSION,
        "/Connected": 1,
        "/CustomName": config.bank.name,
        "/Serial": unique_id(config),
    }


def unique_id(config: Config) -> str:
    """The bank's stable unique id: ``[dbus] unique_id``, else ``bmsbank_<bank name>``."""
    return config.dbus.unique_id or "bmsbank_" + bus_element(config.bank.name)


def _seconds(days: Any) -> float | None:
    return days * 86400.0 if isinstance(days, (int, float)) and not isinstance(days, bool) else None


def _measurements(bank: Mapping[str, Any]) -> dict[str, Any]:
    remaining = rounded(bank.get("remaining"), 1)
    consumed = rounded(bank.get("consumed"), 1)
    return {
        "/Dc/0/Voltage": rounded(bank.get("voltage"), 2),
        "/Dc/0/Current": rounded(bank.get("current"), 1),
        "/Dc/0/Power": rounded(bank.get("power"), 0),
        "/Dc/0/Temperature": rounded(bank.get("temperature"), 1),
        "/Soc": rounded(bank.get("soc"), 1),
        "/Soh": rounded(bank.get("soh"), 1),
        "/CurrentAvg": rounded(bank.get("current_avg"), 1),
        "/TimeToGo": rounded(bank.get("time_to_go"), 0),
        "/Capacity": remaining,
        "/ConsumedAmphours": None if consumed is None else 0.0 - consumed,
        "/System/MinCellVoltage": rounded(bank.get("min_cell_voltage"), 3),
        "/System/MaxCellVoltage": rounded(bank.get("max_cell_voltage"), 3),
        "/System/MinVoltageCellId": _text(bank.get("min_cell_id")),
        "/System/MaxVoltageCellId": _text(bank.get("max_cell_id")),
        "/System/MinCellTemperature": rounded(bank.get("min_temperature"), 1),
        "/System/MaxCellTemperature": rounded(bank.get("max_temperature"), 1),
        "/System/MinTemperatureCellId": _text(bank.get("min_temperature_id")),
        "/System/MaxTemperatureCellId": _text(bank.get("max_temperature_id")),
    }


def _limits(bank: Mapping[str, Any]) -> dict[str, Any]:
    reasons = bank.get("reasons")
    reasons = reasons if isinstance(reasons, Mapping) else {}
    low = rounded(bank.get("low_voltage"), 2)
    return {
        "/Info/MaxChargeVoltage": _limit(bank.get("cvl"), 2),
        "/Info/MaxChargeCurrent": _limit(bank.get("ccl"), 1),
        "/Info/MaxDischargeCurrent": _limit(bank.get("dcl"), 1),
        # 0 V means "cells not known yet" in the bank message: publish it as unknown.
        "/Info/BatteryLowVoltage": low if low else None,
        "/Info/ChargeLimitation": _text(reasons.get("ccl")),
        "/Info/DischargeLimitation": _text(reasons.get("dcl")),
        "/Info/ChargeVoltageLimitation": _text(reasons.get("cvl")),
        "/Info/ChargeMode": _text(bank.get("charge_state")) and str(bank["charge_state"]).title(),
        "/Io/AllowToCharge": 1 if bank.get("allow_charge") else 0,
        "/Io/AllowToDischarge": 1 if bank.get("allow_discharge") else 0,
        # bmsbank never forbids balancing itself; a pack's own service shows its switch.
        "/Io/AllowToBalance": 1,
        "/Info/ChargeRequest": 0,  # the publisher sets it from the force-charge rule ([can])
    }


def _system(bank: Mapping[str, Any]) -> dict[str, Any]:
    cells = _count(bank.get("cells_per_pack"))
    return {
        "/InstalledCapacity": rounded(bank.get("installed_capacity"), 1),
        "/History/TimeSinceLastFullCharge": rounded(_seconds(bank.get("days_since_full")), 0),
        "/History/ChargeCycles": _count(bank.get("cycles")),
        "/Balancing": None if _count(bank.get("balancing")) is None else int(bank["balancing"] > 0),
        "/System/NrOfCellsPerBattery": cells or None,  # 0 = not reported yet
        "/System/NrOfModulesOnline": _count(bank.get("online")),
        "/System/NrOfModulesOffline": _count(bank.get("offline")),
        "/System/NrOfModulesBlockingCharge": _count(bank.get("blocking_charge")),
        "/System/NrOfModulesBlockingDischarge": _count(bank.get("blocking_discharge")),
    }


def _alarms(bank: Mapping[str, Any]) -> dict[str, Any]:
    alarms = bank.get("alarms")
    alarms = alarms if isinstance(alarms, Mapping) else {}
    out: dict[str, Any] = {}
    for name in ALARMS:
        level = alarms.get(name)
        valid = isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= ALARM
        out[ALARM_PATHS[name]] = level if valid else None
    return out


def dbus_values(bank: Mapping[str, Any], config: Config) -> dict[str, Any]:
    """Every path of the Venus battery service for one bank message.

    Args:
        bank: a validated bank message (see :mod:`bmsbank.services.arbiter.bank`); missing or
            malformed optional fields become None (invalid on D-Bus).
        config: the configuration (device instance, product id and name, bank name).

    Returns:
        path -> value (int, float, str or None). The three limits are always floats.

    """
    values = static_values(config)
    values.update(_measurements(bank))
    if not _count(bank.get("online")):
        values.update(dict.fromkeys(MEASUREMENTS))
    values.update(_limits(bank))
    values.update(_system(bank))
    values.update(_alarms(bank))
    return values


def empty_bank(config: Config) -> dict[str, Any]:
    """Return a bank message for "nothing known yet": no pack online, every limit 0."""
    return {
        "v": SCHEMA_VERSION, "kind": "bank", "seq": 0, "name": config.bank.name,
        "cvl": 0.0, "ccl": 0.0, "dcl": 0.0, "low_voltage": 0.0,
        "online": 0, "offline": 0, "blocking_charge": 0, "blocking_discharge": 0,
        "allow_charge": False, "allow_discharge": False,
        "alarms": dict.fromkeys(ALARMS, 0), "packs": [], "reasons": {},
    }  # fmt: skip


def safe_bank(last_bank: Mapping[str, Any] | None, config: Config, why: str) -> dict[str, Any]:
    """Return the bank to publish when bank data is stale (the arbiter went silent).

    Both outputs (D-Bus and CAN) are built from this one message, so they agree.

    * CCL = DCL = 0: nothing may charge or discharge on data nobody vouches for.
    * CVL keeps its last value: lowering it to 0 would tell the chargers to pull the bus down, and
      raising it is never safe; 0 only when no bank was ever received.
    * Every pack counts as offline and the measurements become unknown: they are old.
    * ``bms_cable`` = 2 (alarm): the link between the BMS side and the inverter side is broken,
      which is what Venus shows for a lost BMS connection.

    Args:
        last_bank: the last valid bank message, or None if none arrived yet.
        config: the configuration.
        why: the reason shown for every limit (for example "no bank data for 12 s").

    """
    base = dict(last_bank) if last_bank is not None else empty_bank(config)
    packs = (_count(base.get("online")) or 0) + (_count(base.get("offline")) or 0)
    alarms = dict(base.get("alarms") or dict.fromkeys(ALARMS, 0))
    alarms["bms_cable"] = ALARM
    kept = f"last value kept: {why}" if last_bank is not None else why
    base.update(
        cvl=_limit(base.get("cvl"), 2), ccl=0.0, dcl=0.0,
        allow_charge=False, allow_discharge=False,
        online=0, offline=packs, blocking_charge=0, blocking_discharge=0,
        alarms=alarms, reasons={"cvl": kept, "ccl": why, "dcl": why},
        voltage=None, current=None, power=None, soc=None, temperature=None, remaining=None,
        consumed=None, min_cell_voltage=None, max_cell_voltage=None, min_cell_id=None,
        max_cell_id=None, min_temperature=None, max_temperature=None, min_temperature_id=None,
        max_temperature_id=None, balancing=None,
        packs=[{**r, "online": False} for r in base.get("packs") or () if isinstance(r, Mapping)],
    )  # fmt: skip
    return base


def safe_values(
    last_bank: Mapping[str, Any] | None, config: Config, why: str = "no bank data"
) -> dict[str, Any]:
    """Return the D-Bus values for stale bank data: CCL = DCL = 0, CVL kept, BmsCable alarm.

    /Connected stays 1 on purpose: a battery service that says "disconnected" is ignored by
    Venus's DVCC, which then lets chargers and inverters run on their own settings, without any
    BMS limit. A connected BMS asking for CCL = DCL = 0 with an alarm raised stops charge and
    discharge and tells the user why. See :func:`safe_bank` for the rest.

    Args:
        last_bank: the last valid bank message, or None if none arrived yet.
        config: the configuration.
        why: the reason shown in /Info/ChargeLimitation and /Info/DischargeLimitation.

    """
    values = dbus_values(safe_bank(last_bank, config, why), config)
    values["/Connected"] = 1
    return values
