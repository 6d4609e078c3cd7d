"""``bmsbank status --watch``: in place on a terminal, plain in a pipe, never over 100 columns."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import pytest
import zmq

from bmsbank import watch
from bmsbank.schema import TOPIC_STATE, pack
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from tests.factories import state_msg
from tests.zmqhelp import running_arbiter

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def big_bank(n: int) -> tuple[dict, dict]:
    """A bank of ``n`` packs (the last two never report), with long reasons; and its cells."""
    ids = [f"rs485-long-name:{k}" for k in range(1, n + 1)]
    engine = BankEngine.from_mapping({"stale_after": 10.0, "strings": [[i] for i in ids]})
    computer = BankComputer(engine, "a bank with a long name", started=-100.0)
    cells = {}
    for k, pid in enumerate(ids[:-2]):
        v = [3.30 + 0.001 * ((c * 7 + k) % 40) for c in range(16)]
        flags = [int(c % 5 == 0) for c in range(16)]
        engine.accept(state_msg("rs485-long-name", k + 1, seq=0, cells=v, balancing=flags,
                                temperatures=[21.5, 22.0, 23.5, 24.0]), 1.0)  # fmt: skip
        cells[pid] = (v, flags)
    bank = computer.compute(1.0)
    bank["packs"][-1]["reason"] = "port /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3D4-if00"
    bank["packs"][-1]["reason"] += "-port0 missing since 15:58"
    bank["packs"][0]["cell_health"] = {
        "status": "ok", "resistance": [0.512] * 16, "resistance_median": 0.512,
        "capacity": [99.5] * 16, "steps": 120, "charges": 9,
        "warnings": [f"{ids[0]} cell 7: reaches 3.45 V first in 9 of the last 10 charges, "
                     "~8 % less capacity"] * 2,
    }  # fmt: skip
    bank["outputs"] = {name: {"ok": False, "detail": "x" * 200, "age": 1.0}
                       for name in ("dbus", "can", "gx")}  # fmt: skip
    return bank, cells


@pytest.mark.parametrize("n", [14, 25])
def test_every_line_fits_in_100_columns(n):
    bank, cells = big_bank(n)
    lines = watch.frame(bank, cells)
    # bank, limits, reasons, outputs, packs; the first: resistances, capacities, two warnings
    assert len(lines) == 2 + 3 + 1 + 2 * (n - 2) + 2 + 4
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert any("no state received" in line for line in lines)
    last = lines[-1]  # a pack that never reported: no cell line, its (long) reason cut at 100
    assert last.startswith("rs485-long-nam") and "offline: port /dev/serial/by-id/" in last
    assert len(last) == 100 and last.endswith("…")


def test_terminal_redraws_in_place_and_pipe_prints_plain():
    bank, cells = big_bank(14)
    tty = io.StringIO()
    screen = watch.Screen(tty, tty=True)
    screen.draw(watch.frame(bank, cells, screen.width()))
    screen.draw(watch.frame(bank, cells, screen.width()))
    text = tty.getvalue()
    assert text.startswith(watch.HOME) and text.count(watch.HOME) == 2
    assert text.endswith(watch.CLEAR_REST) and "\n\n" not in text  # nothing scrolls
    assert all(len(ANSI.sub("", line)) <= 100 for line in text.splitlines())
    plain = io.StringIO()
    watch.Screen(plain, tty=False).draw(watch.frame(bank, cells))
    assert "\x1b" not in plain.getvalue() and plain.getvalue().endswith("\n\n")


def test_cell_health_lines_follow_their_pack_with_and_without_cells():
    bank, cells = big_bank(3)
    plain, bars = watch.frame(bank), watch.frame(bank, cells)
    first = plain.index(next(x for x in plain if x.startswith("rs485-long-nam ")))
    assert plain[first + 1].startswith("    ! rs485-long-name:1 cell 7: reaches 3.45 V first")
    assert not any(x.startswith("    R mΩ") for x in plain)  # resistances only with --cells
    first = bars.index(next(x for x in bars if x.startswith("rs485-long-nam ")))
    assert bars[first + 2] == "    R mΩ " + "0.51 " * 16 + "med 0.51"  # 16 cells fit
    assert bars[first + 3] == "    C %  " + " ".join([" 100"] * 16)  # under the resistances
    assert bars[first + 4] == plain[first + 1]


def test_cell_bars_span_min_to_max_and_mark_balancing():
    bar = watch.cell_bar([3.30, 3.35, 3.40, 3.32], [0, 0, 1, 0], width=100)
    assert bar == "▁ ▅ █*▂ "
    assert watch.cell_bar([3.30, 3.40], [1, 0], width=3) == "*█"  # one column per cell
    assert set(watch.cell_bar([3.3] * 4, [0] * 4, 100).split()) == {"▄▄▄▄"[0]}


def test_status_watch_cells_against_a_running_arbiter():
    with running_arbiter(stale_after=5.0, strings=[["p:1"], ["q:1"]]) as (_arb, ctx, states, tap):
        push = ctx.socket(zmq.PUSH)
        push.connect(states)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bmsbank.cli", "status", "--watch", "--cells", "--tap", tap],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            for seq in range(12):  # a few seconds of p:1 balancing its third cell
                cells = [3.30, 3.31, 3.36, 3.30]
                push.send_multipart([TOPIC_STATE, pack(state_msg(
                    "p", 1, seq=seq, cells=cells, balancing=[0, 0, 1, 0]))])  # fmt: skip
                time.sleep(0.25)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
            push.close(0)
    views = [v for v in out.split("\n\n") if v.strip()]
    assert views, err
    last = views[-1].splitlines()
    assert all(len(line) <= 100 for line in out.splitlines())
    assert "\x1b" not in out  # a pipe: plain text
    p1 = next(i for i, line in enumerate(last) if line.startswith("p:1 "))
    assert last[p1 + 1].startswith("  ▁ ▂ █*▁ ")
    assert "3.300-3.360 V" in last[p1 + 1]
    q1 = next(line for line in last if line.startswith("q:1 "))
    assert " waiting" in q1  # start-up: not OFFLINE
