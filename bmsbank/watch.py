"""``bmsbank status --watch``: the bank view redrawn in place, within 100 columns.

On a terminal each bank redraws the screen from its top (ANSI: cursor home, each line cleared to
its end, the rest of the screen cleared), so nothing scrolls; when stdout is not a terminal (a
pipe, a file, a log) each view is printed as plain text followed by a blank line. Every line is
cut to :data:`WIDTH` columns (or the terminal's width when narrower).

The view: the bank line (V, A, W, SoC, charge state, last full charge, online count, alarms), the
three limits each with its reason, the outputs' health, then one line per pack (id, family, V, A,
SoC, cell range, temperatures, link, and the reason when there is one: "port /dev/ttyUSB1 missing
since 15:58"). With ``--cells`` each pack gets a second line of cell bars: one bar per cell, scaled
from the pack's lowest to its highest cell, a ``*`` after each balancing cell. The cells come from
the state messages on the tap (the bank message carries no cell list), then the cells' learnt
resistances and capacities (:mod:`bmsbank.services.arbiter.cell_health`). Each cell-health warning
of a pack follows its line, with or without ``--cells``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from bmsbank.errors import MessageError
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, unpack, validate_bank, validate_state
from bmsbank.view import health_lines, health_warnings

WIDTH = 100  #: columns at most
BARS = "▁▂▃▄▅▆▇█"  #: U+2581..U+2588, one column each
HOME, CLEAR_LINE, CLEAR_REST = "\x1b[H", "\x1b[K", "\x1b[J"  #: ANSI/ECMA-48 CUP, EL, ED
MAX_PACKS_SHOWN = 256  #: cell lists kept at most (one per pack of the bank)


def _f(x: Any, fmt: str, unit: str = "") -> str:
    return "--" if x is None else f"{x:{fmt}}{unit}"


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def bank_lines(bank: Mapping[str, Any]) -> list[str]:
    """The bank line, the limits with their reasons and the outputs' health."""
    alarms = [n for n, lvl in bank.get("alarms", {}).items() if lvl]
    total = bank["online"] + bank["offline"]
    days = bank.get("days_since_full")
    full = "unknown" if days is None else f"{days:.1f} d ago"
    lines = [
        f"{bank.get('name') or 'bank'}: {_f(bank.get('voltage'), '.2f', ' V')} "
        f"{_f(bank.get('current'), '+.1f', ' A')} {_f(bank.get('power'), '.0f', ' W')} "
        f"SoC {_f(bank.get('soc'), '.1f', ' %')} | {bank.get('charge_state', '?')}, "
        f"last full {full} | online {bank['online']}/{total} | "
        f"alarms: {', '.join(alarms) or 'none'}",
        f"  CVL {bank['cvl']:.2f} V  CCL {bank['ccl']:.1f} A  DCL {bank['dcl']:.1f} A",
    ]
    lines += [f"  {k.upper()} because: {v}" for k, v in bank.get("reasons", {}).items()]
    outputs = bank.get("outputs") or {}
    if outputs:
        mark = {True: "ok", False: "FAIL", None: "?"}
        lines.append("  outputs: " + " | ".join(
            f"{name} {mark[o['ok']]}: {o['detail']}" for name, o in outputs.items()
        ))  # fmt: skip
    return lines


def pack_line(p: Mapping[str, Any]) -> str:
    """One pack: id, family, V, A, SoC, cell range, temperatures, link, and its reason."""
    link = p.get("link")
    state = "online" if p.get("online") else "offline"
    if p.get("reason") == "waiting for first state":
        state = "waiting"
    temps = "/".join(f"{t:.0f}" for t in p.get("temperatures") or []) or "--"
    counts = (
        "" if link is None else f" {link['state']} {link['ok']}/{link['bad']}/{link['timeouts']}"
    )
    line = (
        f"{p['id'][:14]:<14} {(p.get('bms') or '?')[:8]:<8} {_f(p.get('voltage'), '6.2f')} V "
        f"{_f(p.get('current'), '+6.1f')} A {_f(p.get('soc'), '5.1f')} % "
        f"{_f(p.get('min_cell_voltage'), '.3f')}-{_f(p.get('max_cell_voltage'), '.3f')} V "
        f"{temps} °C {state}{counts}"
    )
    why = p.get("reason") or p.get("blocking_charge") or p.get("blocking_discharge")
    return f"{line}: {why}" if why and why != "waiting for first state" else line


def cell_bar(cells: Sequence[float], balancing: Sequence[int], width: int) -> str:
    """The cells as bars scaled from the lowest to the highest, ``*`` after a balancing cell.

    Two columns per cell (bar, mark) when they fit in ``width``, else one (a balancing cell is
    then drawn as ``*`` instead of its bar).
    """
    low, high = min(cells), max(cells)
    span = high - low
    top = len(BARS) - 1

    def bar(v: float) -> str:
        return BARS[round((v - low) / span * top)] if span > 0.0005 else BARS[top // 2]

    if 2 * len(cells) <= width:
        return "".join(bar(v) + ("*" if b else " ") for v, b in zip(cells, balancing, strict=True))
    return "".join("*" if b else bar(v) for v, b in zip(cells, balancing, strict=True))


def frame(
    bank: Mapping[str, Any],
    cells: Mapping[str, tuple[list[float], list[int]]] | None = None,
    width: int = WIDTH,
) -> list[str]:
    """The lines of one view of ``bank`` (validated first), each at most ``width`` columns.

    ``cells``: per pack id, its latest (cells [V], balancing flags) for the bars (None: none).
    """
    try:
        validate_bank(dict(bank))
    except MessageError as exc:
        return [_cut(f"bank message rejected: {exc}", width)]
    lines = bank_lines(bank)
    for p in bank.get("packs", []):
        lines.append(pack_line(p))
        got = None if cells is None else cells.get(p["id"])
        if got is not None and got[0]:
            v, b = got
            spread = f" {min(v):.3f}-{max(v):.3f} V Δ{(max(v) - min(v)) * 1000:.0f} mV"
            lines.append("  " + cell_bar(v, b, width - 2 - len(spread)) + spread)
        if cells is not None:
            lines += health_lines(p)
        lines += health_warnings(p)
    return [_cut(line, width) for line in lines]


class Screen:
    """Draws views: in place on a terminal, as plain blocks elsewhere."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty

    def width(self) -> int:
        """:data:`WIDTH`, or the terminal's width when narrower."""
        if not self.tty:
            return WIDTH
        return max(40, min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns))

    def draw(self, lines: list[str]) -> None:
        """Show one view."""
        if self.tty:
            body = "".join(f"{line}{CLEAR_LINE}\n" for line in lines)
            self.out.write(f"{HOME}{body}{CLEAR_REST}")
        else:
            self.out.write("\n".join(lines) + "\n\n")
        self.out.flush()


class Watch:
    """The latest cells per pack (from the tap's states) and a view per bank."""

    def __init__(self, screen: Screen, with_cells: bool = False) -> None:
        self.screen = screen
        self.cells: dict[str, tuple[list[float], list[int]]] | None = {} if with_cells else None

    def take(self, topic: bytes, body: bytes) -> bool:
        """Take one tap message; True when a view was drawn (a bank). Bad input is skipped."""
        try:
            msg = unpack(body)
            if topic == TOPIC_STATE and self.cells is not None:
                state = validate_state(msg)
                if state["pack"] in self.cells or len(self.cells) < MAX_PACKS_SHOWN:
                    self.cells[state["pack"]] = (state["cells"], state["balancing"])
                return False
        except MessageError:
            return False
        if topic != TOPIC_BANK or not isinstance(msg, dict):
            return False
        self.screen.draw(frame(msg, self.cells, self.screen.width()))
        return True


def run(sock: Any, out: TextIO, with_cells: bool, stop: Callable[[], bool] = lambda: False) -> int:
    """Draw a view per bank from the SUB socket ``sock`` until ``stop()`` or Ctrl-C."""
    watch = Watch(Screen(out), with_cells)
    try:
        while not stop():
            if sock.poll(500):
                topic, body = sock.recv_multipart()[:2]
                watch.take(topic, body)
    except KeyboardInterrupt:
        pass
    return 0
