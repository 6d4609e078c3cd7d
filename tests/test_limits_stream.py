"""``bmsbank limits``: the engine on JSON lines, through the real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

CONFIG = {
    "stale_after": 5,
    "strings": [["bus:1", "bus:2"], ["bus:3", "bus:4"]],
    "packs": {
        f"bus:{k}": {"cells": 8, "capacity": 100, "chemistry": "LiFePO4"} for k in range(1, 5)
    },
}


def limits(text: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bmsbank.cli", "limits", *args],
        input=text, capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip


def line(**obj) -> str:
    return json.dumps(obj) + "\n"


def state(k: int, t: float, **fields) -> str:
    body = {"cells": [3.30] * 8, "soc": 60.0, "current": 10.0, "temperatures": [20.0], **fields}
    return line(t=t, pack=f"bus:{k}", state=body)


def session(n: int = 30) -> str:
    text = line(t=0, config=CONFIG)
    for t in range(1, n):
        for k in range(1, 5):
            if not (k == 4 and t > 10):  # bus:4 goes silent at t = 10 s
                text += state(k, t - 0.5)
        text += line(t=t, tick=True)
    return text


def test_one_line_per_tick_with_the_documented_fields():
    out = limits(session(), "--stream")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(lines) == 29
    for key in ("t", "cvl", "ccl", "dcl", "charge_state", "online", "offline", "blocking_charge",
                "blocking_discharge", "soc", "reasons"):  # fmt: skip
        assert key in lines[0], key
    first = lines[0]
    assert first["cvl"] == pytest.approx(16 * 3.45) and first["online"] == 4
    assert first["voltage"] == pytest.approx(2 * 8 * 3.30)
    assert first["ccl"] == pytest.approx(100.0)  # two strings x min(50 A, 50 A)
    lost = next(x for x in lines if x["offline"])
    assert lost["t"] == 15.0  # last state at 9.5 s; silent for more than stale_after (5 s)
    assert lost["cvl"] == pytest.approx(16 * 3.375) and lost["ccl"] == pytest.approx(50.0)
    assert lost["reasons"]["cvl"].startswith("bus:4 unseen")


def test_time_comes_only_from_the_input():
    a = limits(session())
    b = limits(session())
    assert a.stdout == b.stdout and a.returncode == b.returncode == 0


def test_file_argument_reads_the_same_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(session(5))
    assert limits("", str(path)).stdout == limits(session(5), "--stream").stdout
    out = limits("", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "missing.jsonl" in out.stderr


def test_bad_lines_get_an_error_line_and_the_run_goes_on():
    text = line(t=0, config=CONFIG)
    text += "{not json\n"
    text += state(1, 1.0, voltage=float("nan"))  # json.dumps writes NaN; the engine rejects it
    text += state(9, 1.0)  # not in the bank
    text += line(t=0.5, tick=True)  # fine: not earlier than 0
    text += line(t=0.2, tick=True)  # earlier than the previous line
    text += line(t=1.0, pack="bus:1")  # no state
    text += line(t=1.0, hello=True)
    text += "".join(state(k, 1.0) for k in range(1, 5)) + line(t=2, tick=True)
    out = limits(text)
    assert out.returncode == 1
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    errors = [x["error"] for x in lines if "error" in x]
    assert [x["line"] for x in lines if "error" in x] == [2, 3, 4, 6, 7, 8]
    assert errors[0].startswith("not JSON")
    assert "voltage: nan outside" in errors[1]
    assert "'bus:9' is not in the bank" in errors[2]
    assert "earlier than the previous line" in errors[3]
    ticks = [x for x in lines if "error" not in x]
    assert ticks[-1]["online"] == 4 and ticks[-1]["rejected"] == 1


def test_a_bad_config_line_names_the_key_and_stops():
    bad = dict(CONFIG, packs={"bus:1": {"capacity": 100}, "bus:2": {"capacity": 50}})
    out = limits(line(t=0, config=bad) + line(t=1, tick=True))
    assert out.returncode == 2
    (only,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert "config line: bank.strings[0]: packs of one capacity in series" in only["error"]


def test_without_config_the_packs_seen_before_the_first_tick_are_in_parallel():
    text = state(1, 0.0) + state(2, 0.0) + line(t=1, tick=True) + state(3, 1.5)
    text += line(t=2, tick=True)
    out = limits(text)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert lines[0]["online"] == 2 and lines[0]["cvl"] == pytest.approx(8 * 3.45)
    assert "'bus:3' is not in the bank" in lines[1]["error"]


def test_the_documented_example_gives_the_documented_output():
    with open("docs/LIMITS.md", encoding="utf-8") as fh:
        doc = fh.read()
    blocks = re.findall(r"```jsonl\n(.*?)```", doc, re.S)
    given, expected = blocks[0], blocks[1]
    out = limits(given, "--stream")
    assert out.returncode == 0, out.stdout
    assert [json.loads(x) for x in out.stdout.splitlines()] == [
        json.loads(x) for x in expected.splitlines()
    ]
