"""Compute the bank message from the pack registry.

The bank message (msgpack, topic ``b"bank"``) carries:
    v, kind="bank", seq, time (unix [s]), mono (arbiter monotonic [s]), name (bank name),
    voltage [V] (mean of online packs), current [A, + = charge] (sum), power [W], soc [%]
    (capacity-weighted) -- each None while no pack is online --, capacity [Ah] (online packs),
    installed_capacity [Ah] (all packs, last known), remaining [Ah], consumed [Ah] (capacity -
    remaining), temperature [°C] (mean of all sensors, or None), min_temperature /
    max_temperature [°C] and their ids ("port:addr T2"), min_cell_voltage / max_cell_voltage [V]
    and their ids ("port:addr C5"), cells_per_pack, cvl [V], ccl [A], dcl [A], low_voltage [V]
    (battery-low voltage), reasons {cvl, ccl, dcl: text}, charge_state ("bulk"), allow_charge,
    allow_discharge (bool), online, offline, blocking_charge, blocking_discharge (pack counts),
    alarms {name: 0/1/2}, packs (per-pack summary: id, bms, online, age [s] or None, voltage,
    current, soc, capacity, min_cell_voltage, max_cell_voltage, temperatures, blocking_charge,
    blocking_discharge (reason or None), alarms (active names)), counters.

CVL, CCL and DCL are always numbers; with no pack online CCL = DCL = 0.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bmsbank.config import Config
from bmsbank.native.limits import aggregate
from bmsbank.schema import ALARM, SCHEMA_VERSION
from bmsbank.services.arbiter import limits
from bmsbank.services.arbiter.registry import PackRegistry


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


class BankComputer:
    """Turns the registry into bank messages; remembers what must survive between cycles."""

    def __init__(self, config: Config, started: float) -> None:
        self.config = config
        self.started = started
        self.seq = 0
        self.cells = config.bank.cells  #: cells per pack last seen (0 = unknown)
        self.capacities: dict[str, float] = {}  #: last known capacity per pack [Ah]

    def compute(self, registry: PackRegistry, now: float) -> dict[str, Any]:
        """The bank message for monotonic time ``now`` (call ``registry.refresh`` first)."""
        online = [(e.pack, e.state) for e in registry.online() if e.state is not None]
        ids = [pid for pid, _ in online]
        states = [state for _, state in online]
        agg = aggregate(states)
        for pid, state in online:
            self.capacities[pid] = state["capacity"]
        if states and not self.config.bank.cells:
            self.cells = agg["cells_min"]  # mixed counts: the smaller one gives the safer CVL
        blocks = {pid: limits.blocking(state) for pid, state in online}
        offline = len(registry.packs) - len(online)
        grace_over = now - self.started > self.config.bank.stale_after
        cell_ids = {which: self._cell_id(ids, agg, which) for which in ("min", "max")}
        self.seq += 1
        return {
            "v": SCHEMA_VERSION,
            "kind": "bank",
            "seq": self.seq,
            "time": time.time(),
            "mono": now,
            "name": self.config.bank.name,
            **self._measurements(agg, ids, cell_ids),
            **self._limits(agg, cell_ids, blocks),
            "online": len(states),
            "offline": offline,
            "alarms": limits.bank_alarms(states, cable_fault=offline > 0 and grace_over),
            "packs": [self._summary(e, blocks.get(e.pack), now) for e in registry.packs.values()],
            "counters": {
                "states": registry.counters.states,
                "rejected": registry.counters.rejected,
                "lost": registry.counters.lost,
                "unknown_packs": registry.counters.unknown_packs,
            },
        }

    def _measurements(
        self, agg: dict[str, Any], ids: list[str], cell_ids: dict[str, str]
    ) -> dict[str, Any]:
        """What the bank measures; None where nothing online can tell (unknown, not zero)."""
        known = agg["packs"] > 0
        capacity = agg["capacity"]
        return {
            "voltage": agg["voltage"] if known else None,
            "current": agg["current"] if known else None,
            "power": agg["power"] if known else None,
            "soc": agg["soc"] if known else None,
            "capacity": capacity,
            "installed_capacity": sum(self.capacities.values()),
            "remaining": agg["remaining"],
            "consumed": max(0.0, capacity - agg["remaining"]),
            "temperature": _num(agg["temperature"]),
            "min_temperature": _num(agg["min_temperature"]),
            "max_temperature": _num(agg["max_temperature"]),
            "min_temperature_id": self._sensor_id(ids, agg, "min"),
            "max_temperature_id": self._sensor_id(ids, agg, "max"),
            "min_cell_voltage": _num(agg["min_cell_voltage"]),
            "max_cell_voltage": _num(agg["max_cell_voltage"]),
            "min_cell_id": cell_ids["min"] or None,
            "max_cell_id": cell_ids["max"] or None,
            "cells_per_pack": self.cells,
        }

    def _limits(
        self,
        agg: dict[str, Any],
        cell_ids: dict[str, str],
        blocks: dict[str, tuple[str | None, str | None]],
    ) -> dict[str, Any]:
        """The limit policies, in order: blocking, charge voltage, current limits."""
        cfg = self.config.bank
        charge_blockers = [f"{p} {c}" for p, (c, _) in blocks.items() if c]
        discharge_blockers = [f"{p} {d}" for p, (_, d) in blocks.items() if d]
        cvl, low_voltage, cvl_why = limits.charge_voltage(cfg, self.cells)
        ccl, dcl, ccl_why, dcl_why = limits.current_limits(
            cfg, agg["packs"],
            (agg["max_cell_voltage"], cell_ids["max"]),
            (agg["min_cell_voltage"], cell_ids["min"]),
            "; ".join(charge_blockers) or None, "; ".join(discharge_blockers) or None,
        )  # fmt: skip
        return {
            "cvl": cvl,
            "ccl": ccl,
            "dcl": dcl,
            "low_voltage": low_voltage,
            "reasons": {"cvl": cvl_why, "ccl": ccl_why, "dcl": dcl_why},
            "charge_state": "bulk",
            "allow_charge": ccl > 0.0,
            "allow_discharge": dcl > 0.0,
            "blocking_charge": len(charge_blockers),
            "blocking_discharge": len(discharge_blockers),
        }

    @staticmethod
    def _cell_id(ids: list[str], agg: dict[str, Any], which: str) -> str:
        k = agg[f"{which}_cell_pack"]
        return f"{ids[k]} C{agg[f'{which}_cell_index'] + 1}" if k >= 0 else ""

    @staticmethod
    def _sensor_id(ids: list[str], agg: dict[str, Any], which: str) -> str | None:
        k = agg[f"{which}_temperature_pack"]
        return f"{ids[k]} T{agg[f'{which}_temperature_index'] + 1}" if k >= 0 else None

    @staticmethod
    def _summary(
        entry: Any, block: tuple[str | None, str | None] | None, now: float
    ) -> dict[str, Any]:
        s = entry.state or {}
        return {
            "id": entry.pack,
            "bms": s.get("bms"),
            "online": entry.online,
            "age": None if entry.seen is None else now - entry.seen,
            "voltage": s.get("voltage"),
            "current": s.get("current"),
            "soc": s.get("soc"),
            "capacity": s.get("capacity"),
            "min_cell_voltage": s.get("min_cell_voltage"),
            "max_cell_voltage": s.get("max_cell_voltage"),
            "temperatures": s.get("temperatures", []),
            "blocking_charge": block[0] if block else None,
            "blocking_discharge": block[1] if block else None,
            "alarms": sorted(n for n, lvl in s.get("alarms", {}).items() if lvl >= ALARM),
        }
