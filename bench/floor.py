"""What a per-port poller process cannot go below on this machine: the cost of waking up.

A poller of one JBD pack wakes four times per pack-update (the cycle timer, two replies, and
zmq's I/O thread for the state it sends). This bench runs, each in its own process for a fixed
window against the same simulated JBD pack on a pseudo-terminal the stack bench uses:

- ``sleep``: a Python process that only sleeps one second per cycle (one wake-up);
- ``minimal``: the least a poller could do in Python: write the two JBD requests, wait for each
  reply with poll, read it, send the two raw replies in one zmq message; no decoding, no state;
- ``poller``: the real poller service (``python -m bmsbank.services.poller``).

It prints CPU ms per cycle from ``/proc/<pid>/task/*/schedstat`` and the ratio of the real
poller to the minimal loop: the part of the poller's cost that is its own code rather than the
wake-ups any process doing this job pays.

    .venv/bin/python bench/floor.py [--window 30]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
from stack import schedstat_ns  # bench/ is on sys.path for a bench script

from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer

SLEEP = "import time\nwhile True:\n    time.sleep(1.0)\n"

#: argv: device, endpoint. JBD requests for basic info (0x03) and cells (0x04), fixed bytes.
MINIMAL = """
import os, select, sys, time
import serial, zmq
port = serial.Serial(sys.argv[1], 9600, timeout=0)
fd = port.fileno()
waiter = select.poll()
waiter.register(fd, select.POLLIN)
push = zmq.Context().socket(zmq.PUSH)
push.connect(sys.argv[2])
requests = (bytes.fromhex("dda50300fffd77"), bytes.fromhex("dda50400fffc77"))
while True:
    began = time.monotonic()
    replies = []
    for request in requests:
        os.write(fd, request)
        reply = b""
        while not reply.endswith(b"\\x77") and waiter.poll(500):
            reply += os.read(fd, 4096)
        replies.append(reply)
    push.send_multipart([b"state", b"".join(replies)])
    time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
"""


def measure(cmd: list[str], window: float, sink: zmq.Socket | None) -> tuple[float, int]:
    """(CPU ms per second, messages received) of ``cmd`` over ``window`` after 5 s."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5.0)
        if sink is not None:
            while sink.poll(0):
                sink.recv_multipart()
        before = schedstat_ns(proc.pid)
        end = time.monotonic() + window
        received = 0
        while time.monotonic() < end:
            if sink is not None and sink.poll(100):
                sink.recv_multipart()
                received += 1
            elif sink is None:
                time.sleep(0.1)
        return (schedstat_ns(proc.pid) - before) / 1e6 / window, received
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    """Measure the three processes and print CPU ms per cycle."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=30.0, help="measured seconds per process")
    args = p.parse_args()
    rundir = Path(tempfile.mkdtemp(prefix="bmsfloor", dir="/tmp"))
    server = PtyServer(create("jbd", {1: BatteryModel(cells=16, current=5.0)}),
                       link=f"{rundir}/tty").start()  # fmt: skip
    context = zmq.Context.instance()
    try:
        config = rundir / "floor.toml"
        config.write_text(
            f'runtime_dir = "{rundir}"\nlog_level = "warning"\n[bank]\nname = "floor"\n'
            f'state_file = ""\n[dbus]\nenabled = false\n[[ports]]\nname = "p"\n'
            f'device = "{rundir}/tty"\nbms = "jbd"\naddresses = [1]\n'
        )
        sink = context.socket(zmq.PULL)
        sink.bind(f"ipc://{rundir}/states.ipc")  # the config's states endpoint
        control = context.socket(zmq.ROUTER)  # takes the poller's hellos
        control.bind(f"ipc://{rundir}/control.ipc")
        py = sys.executable
        rows = [
            ("sleep", *measure([py, "-c", SLEEP], args.window, None)),
            ("minimal", *measure([py, "-c", MINIMAL, f"{rundir}/tty",
                                  f"ipc://{rundir}/states.ipc"], args.window, sink)),
            ("poller", *measure([py, "-m", "bmsbank.services.poller", "--config", str(config),
                                 "--port", "p"], args.window, sink)),
        ]  # fmt: skip
        print("process   CPU ms per cycle (1 s cycles)  messages")
        for name, ms, received in rows:
            print(f"{name:9s} {ms:8.3f} {received:>30d}")
        print(f"poller / minimal: {rows[2][1] / rows[1][1]:.2f}x")
        control.close(0)
        sink.close(0)
    finally:
        server.stop()
        shutil.rmtree(rundir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
