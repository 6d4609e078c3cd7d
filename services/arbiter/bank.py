"""Compute the bank message from the bank engine.

The bank message (msgpack, topic ``b"bank"``) carries:
    v, kind="bank", seq, time (unix [s]), mono (arbiter monotonic [s]), name (bank name), topology
    (strings of pack ids), voltage [V] (mean of the strings), current [A, + = charge] (sum),
    current_avg [A] (averaged), power [W], soc [%] (capacity-weighted) -- each None while no string
    reports --, soh [%] (the lowest a pack reports, or None), cycles (mean charge cycles of the
    online packs, or None), balancing (online packs balancing a cell), capacity [Ah] (strings
    reporting), installed_capacity [Ah] (last known), remaining [Ah], consumed [Ah] (capacity -
    remaining), time_to_go [s] or None, time_to_soc {"<soc %>": s or None}, temperature [°C] (mean
    of all sensors, or None), min_temperature / max_temperature [°C] and their ids ("port:addr T2"),
    min_cell_voltage / max_cell_voltage [V] and their ids ("port:addr C5"), cells_per_pack (cells in
    series of the bank), cvl [V], ccl [A], dcl [A], low_voltage [V] (battery-low voltage), reasons
    {cvl, ccl, dcl: text} (a held or ramping current limit's ends with the seconds left: "; 42 s
    left of the hold", "; about 8 s to go"), charge_state ("bulk", "absorption", "float"),
    days_since_full (oldest pack) or None, full_charge_due, allow_charge, allow_discharge (bool),
    online, offline, waiting (parallel packs seen but not yet rejoined), blocking_charge,
    blocking_discharge (pack counts), alarms {name: 0/1/2}, packs (per-pack summary: id, bms,
    online, joined, age [s] or None, voltage, current, soc, capacity, min_cell_voltage,
    max_cell_voltage, temperatures, ccl, dcl [A] and ccl_reason, dcl_reason, blocking_charge,
    blocking_discharge (reason or None), days_since_full, alarms (active names), rejected {reason:
    count} and last_rejection (the pack's states refused: schema, plausibility, sequence, time,
    unconfirmed cuts; see :mod:`bmsbank.services.arbiter.registry`), held (a state waits for
    confirmation), reason (why the pack is not simply online and acting, naming only a cause in
    force: "port /dev/ttyUSB1 missing since 15:58", "cells: 16 reported, 4 configured", "no valid
    reply: jkpb frames on a jbd port?", "waiting for first state" during start-up, "no state for 12
    s"; None when there is nothing to say) and link ({state, since, ok, bad, timeouts}: its poller's
    view of the link, state one of :data:`bmsbank.status_schema.BANK_LINK_STATES`, since unix [s],
    the counters since the poller started; None when no poller reports it), cell_health (what
    :mod:`bmsbank.services.arbiter.cell_health` learnt of its cells, see
    :mod:`bmsbank.status_schema`; None while nothing)), counters (including
    why: link and health messages taken and rejected), outputs ({"dbus", "can", "gx": {ok (true,
    false, or None when unknown or not configured), detail (text), age (s since the publisher
    reported, None when it never did)}}: the publisher's D-Bus name, CAN bus and GX keep-alive,
    "unknown" when its report is older than :data:`bmsbank.services.arbiter.why.HEALTH_STALE`),
    timers ({"for": s in the charge state; in absorption also "min left" and "max left": s until
    absorption may end when the cells are balanced, and until it ends regardless}).

CVL, CCL and DCL are always numbers; with no pack online CCL and DCL are the configured safe state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.schema import ALARM, ALARMS, OK, SCHEMA_VERSION
from bmsbank.services.arbiter.engine import BankEngine, days, finite
from bmsbank.services.arbiter.why import WhyBook


class BankComputer:
    """Turns the engine's result into bank messages."""

    def __init__(
        self, engine: BankEngine, name: str, started: float, why: WhyBook | None = None
    ) -> None:
        self.engine = engine
        self.name = name
        self.started = started
        #: links, rejections and output health in words (the arbiter's, fed by its control
        #: channel; a fresh one knows only the registry's rejections)
        self.why = why or WhyBook(started, engine.bank.stale_after)
        self.seq = 0
        self.capacities: dict[str, float] = {}  #: last known capacity per pack [Ah]
        #: per current limit: (its last value [A], when its hold ends [monotonic s]); the
        #: engine restarts the hold at every cut, and this follows it from the outside
        self.holds: dict[str, tuple[float, float]] = {}

    def _timers(self, out: Mapping[str, Any]) -> dict[str, float]:
        """Seconds in the charge state (the engine's clock), in absorption the time to its ends."""
        since = finite(out["state_for"])
        if since is None:
            return {}
        timers = {"for": since}
        if out["charge_state"] == "absorption":
            bank = self.engine.bank
            timers["min left"] = max(0.0, bank.absorption_time - since)
            timers["max left"] = max(0.0, bank.absorption_limit - since)
        return timers

    def compute(self, now: float) -> dict[str, Any]:
        """The bank message for monotonic time ``now``."""
        engine = self.engine
        out = engine.tick(now)
        entries = engine.entries
        for e, row in zip(entries, out["packs"], strict=True):
            if row[0] and e.state is not None:
                self.capacities[e.pack] = e.state["capacity"]
        online = [
            e.state for e, row in zip(entries, out["packs"], strict=True) if row[0] and e.state
        ]
        grace_over = now - self.started > engine.bank.stale_after
        self.seq += 1
        capacity = out["capacity"]
        remaining = out["remaining"]
        return {
            "v": SCHEMA_VERSION,
            "kind": "bank",
            "seq": self.seq,
            "time": time.time(),
            "mono": now,
            "name": self.name,
            "topology": [[engine.topo.ids[k] for k in s] for s in engine.topo.strings],
            "voltage": finite(out["voltage"]),
            "current": finite(out["current"]),
            "current_avg": finite(out["current_avg"]),
            "power": finite(out["power"]),
            "soc": finite(out["soc"]),
            "soh": min((s["soh"] for s in online if s.get("soh") is not None), default=None),
            "cycles": round(sum(s["cycles"] for s in online) / len(online)) if online else None,
            "balancing": sum(1 for s in online if any(s["balancing"])),
            "capacity": capacity,
            "installed_capacity": sum(self.capacities.values()),
            "remaining": remaining,
            "consumed": max(0.0, capacity - remaining),
            "time_to_go": finite(out["time_to_go"]),
            "time_to_soc": {f"{p:g}": finite(s) for p, s in out["time_to_soc"].items()},
            "temperature": finite(out["temperature"]),
            "min_temperature": finite(out["min_temperature"]),
            "max_temperature": finite(out["max_temperature"]),
            "min_temperature_id": engine.sensor_id(out, "min"),
            "max_temperature_id": engine.sensor_id(out, "max"),
            "min_cell_voltage": finite(out["min_cell_voltage"]),
            "max_cell_voltage": finite(out["max_cell_voltage"]),
            "min_cell_id": engine.cell_id(out, "min"),
            "max_cell_id": engine.cell_id(out, "max"),
            "cells_per_pack": out["cells"],
            "cvl": out["cvl"],
            "ccl": out["ccl"],
            "dcl": out["dcl"],
            "low_voltage": out["cells"] * engine.bank.cell_low_voltage,
            "reasons": self._countdowns(out, engine.reasons(out), now),
            "charge_state": out["charge_state"],
            "timers": self._timers(out),
            "days_since_full": days(out["since_full"]),
            "full_charge_due": out["full_due"],
            "allow_charge": out["ccl"] > 0.0,
            "allow_discharge": out["dcl"] > 0.0,
            "online": out["online"],
            "offline": out["offline"],
            "waiting": out["waiting"],
            "blocking_charge": out["blocking_charge"],
            "blocking_discharge": out["blocking_discharge"],
            "alarms": bank_alarms(online, cable_fault=out["offline"] > 0 and grace_over),
            "packs": [
                self._summary(e, row, now) for e, row in zip(entries, out["packs"], strict=True)
            ],
            "counters": {
                "states": engine.registry.counters.states,
                "rejected": engine.registry.counters.rejected,
                "lost": engine.registry.counters.lost,
                "unknown_packs": engine.registry.counters.unknown_packs,
                "why": self.why.counters.as_dict(),
            },
            "outputs": self.why.outputs(now),
        }

    def _countdowns(self, out: Mapping[str, Any], reasons: dict[str, str], now: float) -> dict:
        """``reasons`` with the time left of a current limit's hold or ramp [s].

        A cut (the limit falls) starts the hold of ``current_hold`` seconds, as in the engine;
        a ramp climbs ``current_ramp`` A/s per joined pack to its target.
        """
        bank = self.engine.bank
        # after a protective CVL cut the engine holds it ovp_hold seconds (then until the cell
        # settles); the cut's text stays the reason meanwhile: say the hold is what keeps it
        if out["reasons"]["cvl"][0] in ("cell_over", "held") and out["ovp_left"] > 0.0:
            reasons["cvl"] += f"; held at least {out['ovp_left']:.0f} s more"
        for key in ("ccl", "dcl"):
            value = out[key]
            last, until = self.holds.get(key, (value, now))
            if value < last:
                until = now + bank.current_hold
            self.holds[key] = (value, until)
            rule, target = out["reasons"][key][0], out["reasons"][key][4]
            if rule == "held" and until > now:
                reasons[key] += f"; {until - now:.0f} s left of the hold"
            elif rule == "recovering" and bank.current_ramp > 0.0:
                joined = sum(1 for row in out["packs"] if row[1]) or 1
                left = (target - value) / (bank.current_ramp * joined)
                reasons[key] += f"; about {max(0.0, left):.0f} s to go"
        return reasons

    def _summary(self, entry: Any, row: list, now: float) -> dict[str, Any]:
        s = entry.state or {}
        ccl_why, dcl_why = self.engine.pack_reasons(row)
        reason, link = self.why.pack(entry, row[0], now)
        cells = self.engine.cells
        return {
            "id": entry.pack,
            "bms": s.get("bms"),
            "online": row[0],
            "joined": row[1],
            "age": None if entry.seen is None else now - entry.seen,
            "voltage": s.get("voltage"),
            "current": s.get("current"),
            "soc": s.get("soc"),
            "capacity": s.get("capacity"),
            "min_cell_voltage": s.get("min_cell_voltage"),
            "max_cell_voltage": s.get("max_cell_voltage"),
            "temperatures": s.get("temperatures", []),
            "ccl": row[2],
            "dcl": row[4],
            "ccl_reason": ccl_why,
            "dcl_reason": dcl_why,
            "blocking_charge": ccl_why if row[0] and row[2] <= 0.0 else None,
            "blocking_discharge": dcl_why if row[0] and row[4] <= 0.0 else None,
            "days_since_full": days(row[6]),
            "alarms": sorted(n for n, lvl in s.get("alarms", {}).items() if lvl >= ALARM),
            "rejected": dict(entry.rejected),
            "last_rejection": entry.last_rejection or None,
            "held": entry.held is not None,
            "reason": reason,
            "link": link,
            "cell_health": cells.summary(entry.pack, now) if cells is not None else None,
        }


def bank_alarms(states: Sequence[Mapping[str, Any]], cable_fault: bool) -> dict[str, int]:
    """Worst level of each alarm over the online packs; bms_cable when a pack is unseen."""
    out = dict.fromkeys(ALARMS, OK)
    for state in states:
        for name, level in state["alarms"].items():
            if level > out[name]:
                out[name] = level
    if cable_fault:
        out["bms_cable"] = ALARM
    return out
