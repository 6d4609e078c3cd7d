"""Human-readable bank view (``bmsbank status`` and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmsbank.errors import MessageError
from bmsbank.schema import validate_bank


def _f(x: Any, fmt: str, unit: str = "") -> str:
    return "--" if x is None else f"{x:{fmt}}{unit}"


def bank_line(bank: dict[str, Any]) -> str:
    """One line: the bank's values and limits."""
    alarms = [n for n, lvl in bank.get("alarms", {}).items() if lvl]
    days = bank.get("days_since_full")
    full = "unknown" if days is None else f"{days:.1f} d ago"
    return (
        f"bank {bank.get('name', '')}: {_f(bank.get('voltage'), '.2f', ' V')} "
        f"{_f(bank.get('current'), '+.1f', ' A')} {_f(bank.get('power'), '.0f', ' W')} "
        f"SoC {_f(bank.get('soc'), '.1f', ' %')} | CVL {bank['cvl']:.2f} V "
        f"CCL {bank['ccl']:.1f} A DCL {bank['dcl']:.1f} A | {bank.get('charge_state', '?')}, "
        f"last full {full} | "
        f"online {bank['online']}/{bank['online'] + bank['offline']}"
        f"{' (' + str(bank['waiting']) + ' waiting to rejoin)' if bank.get('waiting') else ''} | "
        f"alarms: {', '.join(alarms) or 'none'}"
    )


def pack_line(p: dict[str, Any]) -> str:
    """One line per pack: id, type, V, A, SoC, min/max cell, temperatures, state, age."""
    state = "online" if p["online"] else "OFFLINE"
    if p.get("reason") == "waiting for first state":
        state = "waiting"
    elif p.get("reason") and not p["online"]:
        state += f": {p['reason']}"  # the cause in force (see the bank's packs[i].reason)
    if p.get("voltage") is None:
        return f"  {p['id']:<16} {p.get('bms') or '?':<13} {state}"
    temps = "/".join(f"{t:.1f}" for t in p.get("temperatures") or []) or "--"
    if p.get("blocking_charge"):
        state += f" (no charge: {p['blocking_charge']})"
    if p.get("blocking_discharge"):
        state += f" (no discharge: {p['blocking_discharge']})"
    return (
        f"  {p['id']:<16} {p.get('bms') or '?':<13} {_f(p.get('voltage'), '6.2f', ' V')} "
        f"{_f(p.get('current'), '+6.1f', ' A')} SoC {_f(p.get('soc'), '5.1f', ' %')} "
        f"cells {_f(p.get('min_cell_voltage'), '.3f')}-{_f(p.get('max_cell_voltage'), '.3f')} V "
        f"T {temps} °C {state} age {_f(p.get('age'), '.1f', ' s')}{rejections(p)}"
    )


def rejections(p: dict[str, Any]) -> str:
    """The suffix " | rejected 3 (cells 2, unconfirmed 1), last: ..." of a refused pack's line."""
    counts = p.get("rejected") or {}
    if not counts:
        return ""
    held = ", a cut waits for confirmation" if p.get("held") else ""
    each = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
    return f" | rejected {sum(counts.values())} ({each}){held}, last: {p.get('last_rejection')}"


def health_warnings(p: Mapping[str, Any]) -> list[str]:
    """A pack's cell-health warnings, one line each ("    ! jbd1:1 cell 2: reaches ...")."""
    health = p.get("cell_health") or {}
    return [f"    ! {w}" for w in health.get("warnings") or ()]


def health_lines(p: Mapping[str, Any]) -> list[str]:
    """A pack's learnt cell resistances [mΩ at 25 °C] and capacities [% of the median].

    A line each ("--": not yet); none while nothing was learnt or cell health is off. 16 cells
    fit in 100 columns ("    R mΩ 0.51 ... 0.52 med 0.51").
    """
    health = p.get("cell_health")
    if not health or health["status"] == "not enough data":
        return []
    r = " ".join(_f(x, ".2f") for x in health["resistance"])
    lines = [f"    R mΩ {r} med {_f(health['resistance_median'], '.2f')}"]
    if any(c is not None for c in health["capacity"]):
        lines.append("    C %  " + " ".join(f"{_f(c, '.0f'):>4}" for c in health["capacity"]))
    return lines


def render(bank: dict[str, Any]) -> str:
    """The bank line, one line per pack, then why each limit has its value.

    A bank message that does not validate is not shown, only why (a view must not crash on
    what it reads from a socket).
    """
    try:
        validate_bank(bank)
    except MessageError as exc:
        return f"bank message rejected: {exc}"
    lines = [bank_line(bank)]
    for p in bank.get("packs", []):
        lines += [pack_line(p), *health_warnings(p)]
    lines += [f"  {k.upper()} because: {v}" for k, v in bank.get("reasons", {}).items()]
    return "\n".join(lines)
