"""The bmsbank command line: decode (on captured frames), status and tap (on a live arbiter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from bmsbank.schema import TOPIC_STATE, pack
from tests import test_jbd, test_jkpb
from tests.factories import state_msg
from tests.zmqhelp import free_tcp, running_arbiter


def bmsbank(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_decode_jbd_frames_as_pasted():
    basic, cells, hardware = (c.hex for c in test_jbd.CAPTURED[:3])
    spaced = " ".join(basic[i : i + 2] for i in range(0, len(basic), 2))  # as a terminal shows it
    out = bmsbank("decode", "jbd", spaced, cells, hardware)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["kind"] == "state" and state["bms"] == "jbd"
    assert state["voltage"] == pytest.approx(15.6)
    assert state["cells"] == pytest.approx([3.909, 3.901, 3.895, 3.901])
    assert state["temperatures"] == pytest.approx([22.4, 22.3, 21.7])
    assert state["min_cell_voltage"] == pytest.approx(3.895)
    assert state["hardware"] == "JBD-SP04S034-L4S-200A-B-U"
    assert state["link"]["ok"] == 0 and state["link"]["noise_bytes"] == 0


def test_decode_jk_pb_reply_with_address_check():
    raw = test_jkpb.CAPTURED[0].hex
    ok = bmsbank("decode", "jkpb", raw, "--address", "3")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["pack"] == "decode:3"
    wrong = bmsbank("decode", "jkpb", raw, "--address", "4")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("bmsbank: rejected (address):")


def test_decode_rejects_a_bad_checksum_with_the_reason():
    frame = bytearray(test_jbd.CAPTURED[0].raw)
    frame[10] ^= 0xFF
    out = bmsbank("decode", "jbd", frame.hex())
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("bmsbank: rejected (checksum):")
    assert frame[:4].hex(" ") in out.stderr  # the raw bytes are shown


def test_decode_refuses_a_state_no_pack_could_report():
    """655.35 V from four 3.9 V cells passes the JBD checksum; no LiFePO4 pack reads that."""
    basic = test_jbd.basic_frame(voltage=0xFFFF)
    out = bmsbank("decode", "jbd", basic.hex(), test_jbd.CAPTURED[1].hex)
    assert out.returncode == 1
    assert json.loads(out.stdout)["voltage"] == pytest.approx(655.35)  # shown, then refused
    assert out.stderr.startswith("bmsbank: rejected (implausible): voltage: 655.35 V disagrees")


@pytest.mark.parametrize(
    "args,message",
    [
        (["jbd", "zz"], "not hex: 'zz'"),
        (["nosuch", "00"], "unknown BMS 'nosuch'"),
        (["jbd", "0011"], "no complete LLT/JBD frame"),
    ],
    ids=["not-hex", "unknown-bms", "no-frame"],
)
def test_decode_bad_input(args, message):
    out = bmsbank("decode", *args)
    assert out.returncode != 0 and message in out.stderr


def test_decode_incomplete_state_shows_the_parts():
    out = bmsbank("decode", "jbd", test_jbd.CAPTURED[0].hex)  # basic info without cells
    assert out.returncode == 1
    assert "incomplete state: missing reply part(s): cells" in out.stderr
    assert json.loads(out.stdout)["parts"]["basic"]["voltage"] == pytest.approx(15.6)


@pytest.fixture
def live_tap():
    with running_arbiter(name="cli", strings=[["usb0:1"]]) as (_arbiter, ctx, states, tap):
        push = ctx.socket(zmq.PUSH)
        push.connect(states)
        stop = threading.Event()

        def feed():
            seq = 0
            while not stop.is_set():
                msg = state_msg("usb0", 1, seq=seq, current=4.5)
                push.send_multipart([TOPIC_STATE, pack(msg)])
                seq += 1
                time.sleep(0.1)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        yield tap
        stop.set()
        feeder.join(2)
        push.close(0)


def test_status_prints_the_bank_and_one_line_per_pack(live_tap):
    out = bmsbank("status", "--tap", live_tap)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("bank cli: ") and "CVL 55.20 V" in lines[0]
    pack_lines = [line for line in lines if line.strip().startswith("usb0:1")]
    assert pack_lines == [lines[1]]  # the bank line, then one line per pack
    assert lines[2].strip().startswith("CVL because: bulk: 16 cells x 3.450 V")
    assert "jbd" in pack_lines[0] and "+4.5 A" in pack_lines[0] and "online" in pack_lines[0]


def test_tap_prints_json_lines(live_tap):
    out = bmsbank("tap", "--tap", live_tap, "--count", "4", timeout=30)
    assert out.returncode == 0, out.stderr
    msgs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(msgs) == 4 and {m["topic"] for m in msgs} <= {"state", "bank"}
    assert all(m["kind"] == m["topic"] for m in msgs)


def test_status_without_an_arbiter_says_so():
    out = bmsbank("status", "--tap", free_tcp(), "--wait", "0.5")
    assert out.returncode == 1 and "no bank message" in out.stderr


_NO_COMPILED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):  # a machine without a compiled wheel for it
    def find_spec(self, name, path, target=None):
        if name.startswith("bmsbank.native._") and not name.endswith("_py"):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
from bmsbank.cli import main
main(sys.argv[1:])
"""


def test_version_says_which_implementation_runs():
    from bmsbank import __version__

    env = {k: v for k, v in os.environ.items() if k != "BMSBANK_PURE"}
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "--version"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    # The set-up builds the compiled modules, so without BMSBANK_PURE they run (whatever
    # this test process itself uses: the suite also runs with BMSBANK_PURE=1).
    assert out.stdout.startswith(f"bmsbank {__version__}, compiled (CPython 3."), out.stdout
    pure = subprocess.run([sys.executable, "-m", "bmsbank.cli", "--version"],
                          env={**env, "BMSBANK_PURE": "1"}, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert "pure-Python twins (BMSBANK_PURE=1" in pure.stdout


def test_without_compiled_modules_the_twins_run_and_it_is_said_once():
    env = {k: v for k, v in os.environ.items() if k != "BMSBANK_PURE"}
    frames = [c.hex for c in test_jbd.CAPTURED[:3]]
    out = subprocess.run([sys.executable, "-c", _NO_COMPILED, "decode", "jbd", *frames], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.stderr.count("using the pure-Python twins") == 1, out.stderr
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cells"] == pytest.approx([3.909, 3.901, 3.895, 3.901])
    version = subprocess.run([sys.executable, "-c", _NO_COMPILED, "--version"], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "pure-Python twins (no compiled modules for this machine" in version.stdout
