"""Map one pack's state to the paths of its own Venus battery service (pure functions, no D-Bus).

A per-pack service shows what the pack's BMS reports -- cells, balancing, temperatures, alarms,
history -- so the GUI and VRM can show every pack. It NEVER carries /Info/* (in particular not
/Info/MaxChargeVoltage, /Info/MaxChargeCurrent, /Info/MaxDischargeCurrent): Venus takes a battery
service with those paths as a BMS, and with several of them it may pick one pack as "the" BMS and
charge the whole bank by that pack's limits. The bank service is the only BMS.

Paths follow the Venus battery service (``/Dc/0/*``, ``/Soc``, ``/System/*``, ``/Alarms/*``) and,
for cells, the paths dbus-serialbattery made common (``/Voltages/CellN``, ``/Balances/CellN``,
``/Voltages/Sum``, ``/Voltages/Diff``, cell 1 first). Rounding and "unknown" follow
:mod:`paths`. While the pack is offline (or the bank data is stale) /Connected is 0, the
measurements are unknown and /Alarms/BmsCable is 2.

``/CellHealth/*`` (bmsbank's own paths, listed in the README) show what the arbiter learnt of the
pack's cells (:mod:`bmsbank.services.arbiter.cell_health`): /CellHealth/Status ("not enough
data", "learning", "ok"), /CellHealth/Warnings (each warning on a line of its own, "" when none),
/CellHealth/WarningCount, /CellHealth/ResistanceMedian [mΩ], /CellHealth/Steps,
/CellHealth/Charges, and per cell /CellHealth/CellN/Resistance [mΩ at 25 °C] and
/CellHealth/CellN/Capacity [% of the pack's median]; unknown while nothing was learnt. They are
learnt values, not measurements: they stay while the pack is offline.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.schema import ALARM

from .paths import ALARM_PATHS, FORMATS, rounded

#: Text formats of the per-pack paths that are not in :data:`paths.FORMATS`.
PACK_FORMATS: dict[str, str] = {
    "/Voltages/Sum": "{:.2f}V",
    "/Voltages/Diff": "{:.3f}V",
    "/System/MOSTemperature": "{:.1f}C",
    "/CellHealth/ResistanceMedian": "{:.2f}mOhm",
}


def fmt(path: str) -> str | None:
    """Text format of a per-pack path (cells in mV resolution, temperatures 0.1 degC)."""
    if path.startswith("/Voltages/Cell"):
        return "{:.3f}V"
    if path.startswith("/System/Temperature"):
        return "{:.1f}C"
    if path.startswith("/CellHealth/Cell"):
        return "{:.2f}mOhm" if path.endswith("/Resistance") else "{:.1f}%"
    return PACK_FORMATS.get(path) or FORMATS.get(path)


@functools.cache
def _cell_paths(count: int) -> tuple[tuple[str, str], ...]:
    """(/Voltages/CellN, /Balances/CellN) for N = 1..count, built once per count."""
    return tuple((f"/Voltages/Cell{k}", f"/Balances/Cell{k}") for k in range(1, count + 1))


@functools.cache
def _sensor_paths(count: int) -> tuple[str, ...]:
    """/System/TemperatureN for N = 1..count, built once per count."""
    return tuple(f"/System/Temperature{k}" for k in range(1, count + 1))


@functools.cache
def _health_paths(count: int) -> tuple[tuple[str, str], ...]:
    """(/CellHealth/CellN/Resistance, /CellHealth/CellN/Capacity) for N = 1..count."""
    return tuple(
        (f"/CellHealth/Cell{k}/Resistance", f"/CellHealth/Cell{k}/Capacity")
        for k in range(1, count + 1)
    )


def cell_health_values(health: Mapping[str, Any] | None, cells: int) -> dict[str, Any]:
    """The /CellHealth/* paths of a pack for the bank's ``cell_health`` of it (see module doc).

    Args:
        health: the pack summary's validated ``cell_health`` (None: nothing learnt, or cell
            health switched off).
        cells: number of /CellHealth/CellN paths (the service's cell count).

    Returns:
        path -> value (None = invalid).

    """
    h: Mapping[str, Any] = health or {}
    warnings = list(h.get("warnings") or ())
    values: dict[str, Any] = {
        "/CellHealth/Status": h.get("status"),
        "/CellHealth/Warnings": "\n".join(warnings) if health else None,
        "/CellHealth/WarningCount": len(warnings) if health else None,
        "/CellHealth/ResistanceMedian": h.get("resistance_median"),
        "/CellHealth/Steps": h.get("steps"),
        "/CellHealth/Charges": h.get("charges"),
    }
    resistance, capacity = h.get("resistance") or (), h.get("capacity") or ()
    for k, (r_path, c_path) in enumerate(_health_paths(cells)):
        values[r_path] = resistance[k] if k < len(resistance) else None
        values[c_path] = capacity[k] if k < len(capacity) else None
    return values


def _cells(cells: Sequence[float], balancing: Sequence[int], count: int) -> dict[str, Any]:
    # cells and flags come from a validated state: finite numbers, one 0/1 flag per cell
    out: dict[str, Any] = {}
    n = len(cells)
    for k, (volts_path, balance_path) in enumerate(_cell_paths(count)):
        if k < n:
            out[volts_path] = round(cells[k], 3) + 0.0
            out[balance_path] = int(balancing[k])
        else:
            out[volts_path] = out[balance_path] = None
    out["/Voltages/Sum"] = rounded(sum(cells), 2) if n else None
    out["/Voltages/Diff"] = rounded(max(cells) - min(cells), 3) if n else None
    return out


def _min_max(values: Sequence[float], kind: str, tag: str, digits: int) -> dict[str, Any]:
    """``/System/MinCell<kind>``, ``/System/MaxCell<kind>`` and their ids ("C3", "T1")."""
    out: dict[str, Any] = {}
    for end, pick in (("Min", min), ("Max", max)):
        if values:
            x = pick(values)
            out[f"/System/{end}Cell{kind}"] = round(x, digits) + 0.0
            out[f"/System/{end}{kind}CellId"] = f"{tag}{values.index(x) + 1}"
        else:
            out[f"/System/{end}Cell{kind}"] = out[f"/System/{end}{kind}CellId"] = None
    return out


def pack_values(
    state: Mapping[str, Any] | None, online: bool, cells: int, sensors: int
) -> dict[str, Any]:
    """Every path of one pack's service.

    Args:
        state: the pack's last validated state message (None before the first one).
        online: whether the pack counts as online (the arbiter's freshness, and the bank not
            stale); offline publishes every measurement unknown.
        cells: number of /Voltages/CellN and /Balances/CellN paths (fixed when the service
            registers, so paths never appear or vanish).
        sensors: number of /System/TemperatureN paths.

    Returns:
        path -> value (int, float, str or None = invalid).

    """
    s: Mapping[str, Any] = state if state is not None and online else {}
    values = _scalars(s, online, cells)
    values.update(_cell_section(s, cells))
    values.update(_temperature_section(s, sensors))
    values.update(_alarm_section(s, online))
    return values


def changed_values(
    old: Mapping[str, Any], new: Mapping[str, Any], cells: int, sensors: int
) -> dict[str, Any]:
    """The paths of an online pack that ``new`` may change after ``old`` ("by difference").

    The scalars are always recomputed (the current moves with every reading); the cells and
    balancing flags, the temperatures and the alarms only when their lists or map differ from
    ``old`` (compared in C). Applied over ``pack_values(old, True, ...)`` the result gives
    exactly ``pack_values(new, True, ...)`` (a property test checks it).
    """
    values = _scalars(new, True, cells)
    if new.get("cells") != old.get("cells") or new.get("balancing") != old.get("balancing"):
        values.update(_cell_section(new, cells))
    if new.get("temperatures") != old.get("temperatures"):
        values.update(_temperature_section(new, sensors))
    if new.get("alarms") != old.get("alarms"):
        values.update(_alarm_section(new, True))
    return values


def _scalars(s: Mapping[str, Any], online: bool, cells: int) -> dict[str, Any]:
    """Liveness, the Dc/0 readings, SoC and capacity, FETs and history (``s`` empty: unknown)."""
    capacity, remaining = rounded(s.get("capacity"), 1), rounded(s.get("remaining"), 1)
    return {
        "/Connected": 1 if online else 0,
        "/Dc/0/Voltage": rounded(s.get("voltage"), 2),
        "/Dc/0/Current": rounded(s.get("current"), 1),
        "/Dc/0/Power": rounded(s.get("power"), 0),
        "/Soc": rounded(s.get("soc"), 1),
        "/Soh": rounded(s.get("soh"), 1),
        "/Capacity": remaining,
        "/InstalledCapacity": capacity,
        "/ConsumedAmphours": (
            None if capacity is None or remaining is None else rounded(remaining - capacity, 1)
        ),
        "/System/NrOfCellsPerBattery": cells or None,
        "/System/NrOfModulesOnline": 1 if online else 0,
        "/System/NrOfModulesOffline": 0 if online else 1,
        "/System/MOSTemperature": rounded(s.get("mosfet_temperature"), 1),
        "/Io/AllowToCharge": _flag(s.get("charge_fet")),
        "/Io/AllowToDischarge": _flag(s.get("discharge_fet")),
        "/History/ChargeCycles": s.get("cycles") if isinstance(s.get("cycles"), int) else None,
    }


def _cell_section(s: Mapping[str, Any], cells: int) -> dict[str, Any]:
    """Cell voltages and balancing flags, their sum, spread, extremes and /Balancing."""
    volts: list[float] = list(s.get("cells") or [])
    values = _cells(volts, list(s.get("balancing") or []), cells)
    values.update(_min_max(volts, "Voltage", "C", 3))
    values["/Balancing"] = 1 if any(s.get("balancing") or ()) else (0 if s else None)
    return values


def _temperature_section(s: Mapping[str, Any], sensors: int) -> dict[str, Any]:
    """/Dc/0/Temperature (the mean), each sensor and the extremes."""
    temps: list[float] = list(s.get("temperatures") or [])
    values: dict[str, Any] = {
        "/Dc/0/Temperature": rounded(sum(temps) / len(temps), 1) if temps else None
    }
    for k, path in enumerate(_sensor_paths(sensors)):
        values[path] = round(temps[k], 1) + 0.0 if k < len(temps) else None
    values.update(_min_max(temps, "Temperature", "T", 1))
    return values


def _alarm_section(s: Mapping[str, Any], online: bool) -> dict[str, Any]:
    """Every /Alarms/* path; BmsCable says whether the pack is online."""
    alarms = s.get("alarms")
    alarms = alarms if isinstance(alarms, Mapping) else {}
    values = {path: alarms.get(name, 0) if s else None for name, path in ALARM_PATHS.items()}
    values[ALARM_PATHS["bms_cable"]] = 0 if online else ALARM
    return values


def _flag(value: Any) -> int | None:
    return int(value) if isinstance(value, bool) else None
