"""``bmsbank check CONFIG``: every problem of a file in one run, "did you mean" at every level.

Run as the installed command is (``python -m bmsbank.cli``, a process of its own) and as
``check-config``, its former name, kept as an alias.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: a misspelling at every level of the file, and a few wrong values between them
BAD = """\
runtime_dri = "/run/x"
log_levle = "info"
log_dir = "var/log/relative"
[bnak]
interval = 1
[bank]
stale_aftr = 30
interval = 0
[bank.packs."p:1"]
celss = 16
[dbus]
enabeld = false
[can]
bitrat = 500000
[zmq]
stats = ""
[[port]]
name = "x"
[[ports]]
name = "p"
device = "/dev/ttyUSB0"
bms = "jkpb"
adresses = [1]
settings_evry = 5
[[ports]]
name = "q"
device = "/dev/ttyUSB1"
bms = "jkbp"
intervall = 2
[[ble]]
adaptr = "hci0"
[[ble.devices]]
name = "b"
adress = "AA:BB:CC:DD:EE:FF"
bms = "jkbms_ble"
[[can_inputs]]
name = "c"
interface = "virtual"
channel = "x"
bms = "jkbms_can"
bitrat = 250000
[[can_inputs]]
name = "d"
interface = "virtual"
channel = "y"
bms = "jkbms_cna"
timout = 1
"""
#: (key, words) of every line, in the order reported
EXPECTED = [
    ("runtime_dri", "unknown key; did you mean runtime_dir?"),
    ("log_levle", "unknown key; did you mean log_level?"),
    ("log_dir", "an absolute directory path"),
    ("bnak", "unknown key; did you mean bank?"),
    ("bank.stale_aftr", "unknown key; did you mean stale_after?"),
    ("bank.interval", ">= 0.1"),
    ("dbus.enabeld", "unknown key; did you mean enabled?"),
    ("can.bitrat", "unknown key; did you mean bitrate?"),
    ("zmq.stats", "unknown key; did you mean states?"),
    ("port", "unknown key; did you mean ports?"),
    ("ports[0].adresses", "unknown key; did you mean addresses?"),
    ("ports[0].settings_evry", "unknown key; did you mean settings_every?"),
    ("ports[1].bms", "did you mean jkpb?"),
    ("ports[1].intervall", "unknown key; did you mean interval?"),
    ("ble[0].adaptr", "unknown key; did you mean adapter?"),
    ("ble[0].devices[0].address", "a MAC address"),
    ("ble[0].devices[0].adress", "unknown key; did you mean address?"),
    ("can_inputs[0].bitrat", "unknown key; did you mean bitrate?"),
    ("can_inputs[1].bms", "did you mean jkbms_can?"),
    ("can_inputs[1].timout", "unknown key; did you mean timeout?"),
    ('bank.packs."p:1".celss', "unknown key; did you mean cells?"),
]


def check(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("command", ["check", "check-config"])
def test_every_problem_of_a_file_in_one_run(tmp_path, command):
    path = tmp_path / "bmsbank.toml"
    path.write_text(BAD, encoding="utf-8")
    done = check(command, str(path))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == [key for key, _ in EXPECTED], done.stderr
    for line, (key, words) in zip(lines, EXPECTED, strict=True):
        assert line.startswith(f"bmsbank: {path}: {key}: ") and words in line, line


def test_a_good_file_is_ok_with_exit_0():
    done = check("check", str(ROOT / "config.example.toml"))
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (f"{ROOT / 'config.example.toml'}: ok: 3 port(s), 1 BLE device(s), "
                           "7 pack(s), 2 poller process(es)\n")  # fmt: skip


def test_check_is_the_documented_name():
    done = check("--help")
    assert "check (check-config)" in done.stdout
    assert "`bmsbank check CONFIG`" in (ROOT / "README.md").read_text(encoding="utf-8")
