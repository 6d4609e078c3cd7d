"""Bank topology: strings in parallel, each string packs in series, and what each pack declares.

Built once from the ``[bank]`` config (``strings`` and ``packs``) and checked strictly: a pack
in two strings, an unknown pack id, packs of different capacity in one series string (the Victron
manual forbids it; ``allow_mixed_capacity`` overrides) or parallel strings with different numbers
of cells stop start-up with a :class:`~bmsbank.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bmsbank.config import CHEMISTRIES, BankConfig
from bmsbank.errors import ConfigError

#: keys of one ``[bank.packs."id"]`` table: (what it accepts, check)
PACK_KEYS: dict[str, tuple[str, Any]] = {
    "cells": ("an integer 1-64 (cells in series in this pack)",
              lambda x: isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 64),
    "capacity": ("amp-hours > 0", lambda x: _number(x) and x > 0),
    "chemistry": (f"one of {', '.join(CHEMISTRIES)}", lambda x: x in CHEMISTRIES),
    "max_charge_current": ("amperes >= 0", lambda x: _number(x) and x >= 0),
    "max_discharge_current": ("amperes >= 0", lambda x: _number(x) and x >= 0),
}  # fmt: skip


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Topology:
    """The bank's packs in engine order and how they are wired."""

    ids: tuple[str, ...]  #: pack ids ("port:address")
    strings: tuple[tuple[int, ...], ...]  #: strings in parallel, each pack indexes in series
    cells: tuple[int, ...]  #: cells in series per pack (0 = as the pack reports)
    capacities: tuple[float, ...]  #: Ah per pack (0 = as the pack reports)
    max_charge: tuple[float, ...]  #: A per pack
    max_discharge: tuple[float, ...]  #: A per pack

    @property
    def series(self) -> bool:
        """Some string has more than one pack."""
        return any(len(s) > 1 for s in self.strings)


def build(bank: BankConfig, port_ids: Sequence[str], source: str) -> Topology:
    """Check and build the topology.

    Args:
        bank: the ``[bank]`` config.
        port_ids: pack ids of the configured ports; empty when there are no ports (the limits
            engine on a stream), then the ids come from ``strings`` or ``packs``.
        source: the config file, for errors.

    Raises:
        ConfigError: naming the key that is wrong.

    """
    strings = _strings(bank.strings, source)
    declared = _packs(bank.packs, bank.chemistry, source)
    listed = [pid for s in strings for pid in s]
    if port_ids:
        known = list(port_ids)
        for pid in [*listed, *declared]:
            if pid not in known:
                raise ConfigError(
                    "bank.strings" if pid in listed else f'bank.packs."{pid}"', source,
                    f"a pack on a configured port ({', '.join(known)}), got {pid!r}",
                )  # fmt: skip
        missing = [pid for pid in known if listed and pid not in listed]
        if missing:
            raise ConfigError(
                "bank.strings", source, f"every pack in a string; {missing} is in none"
            )
    else:
        known = listed or list(declared)
    if not strings:
        strings = [[pid] for pid in known]
    index = {pid: k for k, pid in enumerate(known)}

    def get(pid: str, key: str, default: float) -> Any:
        return declared.get(pid, {}).get(key, default)

    topo = Topology(
        ids=tuple(known),
        strings=tuple(tuple(index[pid] for pid in s) for s in strings),
        cells=tuple(int(get(pid, "cells", 0)) for pid in known),
        capacities=tuple(float(get(pid, "capacity", 0.0)) for pid in known),
        max_charge=tuple(
            float(get(pid, "max_charge_current", bank.max_charge_current)) for pid in known
        ),
        max_discharge=tuple(
            float(get(pid, "max_discharge_current", bank.max_discharge_current)) for pid in known
        ),
    )
    _check_wiring(topo, bank.allow_mixed_capacity, source)
    return topo


def _strings(value: Any, source: str) -> list[list[str]]:
    ok = isinstance(value, list) and all(
        isinstance(s, list) and s and all(isinstance(p, str) and p for p in s) for s in value
    )
    if not ok:
        raise ConfigError(
            "bank.strings", source, f"a list of non-empty lists of pack ids, got {value!r}"
        )
    flat = [pid for s in value for pid in s]
    twice = sorted({pid for pid in flat if flat.count(pid) > 1})
    if twice:
        raise ConfigError("bank.strings", source, f"each pack in one string only; {twice} repeat")
    return [list(s) for s in value]


def _packs(value: Mapping[str, Any], chemistry: str, source: str) -> dict[str, dict[str, Any]]:
    out = {}
    for pid, table in value.items():
        where = f'bank.packs."{pid}"'
        if not isinstance(table, dict):
            raise ConfigError(where, source, f"a table of {', '.join(PACK_KEYS)}")
        for key, x in table.items():
            if key not in PACK_KEYS:
                raise ConfigError(
                    f"{where}.{key}", source, f"unknown key; expected one of {', '.join(PACK_KEYS)}"
                )
            expected, check = PACK_KEYS[key]
            if not check(x):
                raise ConfigError(f"{where}.{key}", source, f"{expected}, got {x!r}")
        if table.get("chemistry", chemistry) != chemistry:
            raise ConfigError(
                f"{where}.chemistry", source, f"the bank's chemistry {chemistry!r} (no mixing)"
            )
        out[pid] = dict(table)
    return out


def _check_wiring(topo: Topology, mixed_capacity: bool, source: str) -> None:
    """Series strings of one capacity; parallel strings of one cell count (where declared)."""
    totals = set()
    for i, members in enumerate(topo.strings):
        caps = {topo.capacities[k] for k in members if topo.capacities[k] > 0}
        if len(members) > 1 and len(caps) > 1 and not mixed_capacity:
            raise ConfigError(
                f"bank.strings[{i}]", source,
                f"packs of one capacity in series (Victron manual), got {sorted(caps)} Ah; "
                "set bank.allow_mixed_capacity = true to accept it",
            )  # fmt: skip
        if all(topo.cells[k] > 0 for k in members):
            totals.add(sum(topo.cells[k] for k in members))
    if len(totals) > 1:
        raise ConfigError(
            "bank.strings", source,
            f"the same number of cells in every parallel string, got {sorted(totals)}",
        )  # fmt: skip


def engine_params(bank: BankConfig, topo: Topology) -> dict[str, Any]:
    """The numbers and tables the native engine takes (see ``bmsbank.native._limits_py``)."""
    full_days = bank.full_charge_days or (7.0 if topo.series else 30.0)
    return {
        "max_charge_current": list(topo.max_charge),
        "max_discharge_current": list(topo.max_discharge),
        "stale_after": bank.stale_after,
        "cell_charge_voltage": bank.cell_charge_voltage,
        "cell_float_voltage": bank.cell_float_voltage,
        "cell_low_voltage": bank.cell_low_voltage,
        "offline_cell_voltage": bank.float_voltage(),
        "soc_reset_voltage": bank.soc_reset_voltage,
        "soc_reset_days": bank.soc_reset_days,
        "full_charge_days": full_days,
        "absorption_time": bank.absorption_time,
        "absorption_limit": bank.absorption_limit,
        "absorption_spread": bank.absorption_spread,
        "rebulk_soc": bank.rebulk_soc,
        "rebulk_spread": bank.rebulk_spread,
        "cvl_interval": bank.cvl_interval,
        "cvl_ramp": bank.cvl_ramp,
        "ovp_hold": bank.ovp_hold,
        "ovp_release": bank.ovp_release,
        "current_hold": bank.current_hold,
        "current_ramp": bank.current_ramp,
        "rejoin_window": bank.rejoin_window,
        "safe_ccl": bank.safe_ccl,
        "safe_dcl": bank.safe_dcl,
        "share_by_capacity": bank.share == "capacity",
        "coulomb_counting": bank.coulomb_counting,
        "current_average_time": bank.current_average_time,
        "time_to_soc": [float(x) for x in bank.time_to_soc],
        "linear": bank.interpolation == "linear",
        "charge_window": list(bank.charge_window),
        "discharge_window": list(bank.discharge_window),
        "ccl_cell_table": bank.ccl_cell_table,
        "dcl_cell_table": bank.dcl_cell_table,
        "ccl_temperature_table": bank.ccl_temperature_table,
        "dcl_temperature_table": bank.dcl_temperature_table,
        "ccl_soc_table": bank.ccl_soc_table,
        "dcl_soc_table": bank.dcl_soc_table,
        "mosfet_table": bank.mosfet_table,
    }
