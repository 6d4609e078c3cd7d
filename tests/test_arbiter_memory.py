"""The arbiter's memory is bounded whatever its peers do (issue 11).

A tap reader that stops reading, a flood of oversized garbage and a flood of valid states at
once, against the real arbiter process on ipc:// sockets: its resident memory stays under
MEMORY_BOUND. The bound follows from the sockets' limits (see services/arbiter/service.py):
TAP_HWM messages per tap reader, STATES_HWM states of at most MAX_STATE_BYTES per poller
connection, and a peer that sends a bigger message is disconnected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import zmq

from bmsbank.schema import TOPIC_STATE, pack
from tests.factories import state_msg

MEMORY_BOUND = 50 * 1024 * 1024  # bytes of resident memory (the arbiter idles at ~23 MB here)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_stalled_tap_reader_and_a_flood_do_not_grow_the_arbiter(tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "bmsbank.toml"
    config.write_text(
        f'runtime_dir = "{run}"\n'
        '[bank]\nstrings = [["p:1"]]\ninterval = 0.1\nstate_file = ""\n', encoding="utf-8"
    )
    proc = subprocess.Popen([sys.executable, "-m", "bmsbank.services.arbiter",
                             "--config", str(config)])  # fmt: skip
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + 20
        while not (run / "tap.ipc").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "arbiter did not start"
            time.sleep(0.05)
        stalled = ctx.socket(zmq.SUB)  # subscribes to everything, never reads
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.setsockopt(zmq.RCVHWM, 1)
        stalled.setsockopt(zmq.RCVBUF, 4096)
        stalled.connect(f"ipc://{run}/tap.ipc")
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(f"ipc://{run}/states.ipc")
        time.sleep(0.5)
        baseline = rss(proc.pid)
        garbage = os.urandom(10 * 1024 * 1024)
        peak = baseline
        seq = 0
        for _ in range(40):  # ~8 s: 10 MB of garbage and 2,000 valid states per round
            try:
                push.send_multipart([TOPIC_STATE, garbage], zmq.NOBLOCK)
            except zmq.Again:
                pass
            for _ in range(2000):
                seq += 1
                msg = state_msg("p", 1, seq=seq)
                try:
                    push.send_multipart([TOPIC_STATE, pack(msg)], zmq.NOBLOCK)
                except zmq.Again:
                    break
            time.sleep(0.2)
            peak = max(peak, rss(proc.pid))
            assert proc.poll() is None, "the arbiter died"
        assert peak < MEMORY_BOUND, (baseline, peak)
    finally:
        proc.terminate()
        proc.wait(10)
        ctx.destroy(0)
