"""SIGHUP, SIGTERM and SIGINT end every service through its shutdown path.

Each service runs as its own process, as supervisord starts it. The shutdown path shows in what
it leaves: exit status 0 (a default SIGHUP would end it with -1 and no ``finally`` block), the
arbiter's state file, the publisher's energy file, the simulator's link removed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq

from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack
from tests.test_publisher_paths import make_bank
from tests.zmqhelp import free_tcp

pytestmark = pytest.mark.timeout(120)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    """Send ``sig``; the exit status and what the process logged."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def receive(sock: zmq.Socket, proc: subprocess.Popen, timeout: float = 20.0) -> list[bytes]:
    """The next message on ``sock`` (fails if ``proc`` dies first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if sock.poll(200):
            return sock.recv_multipart()
    raise AssertionError("nothing received")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT],
                         ids=["HUP", "TERM", "INT"])  # fmt: skip
def test_arbiter_saves_its_state_file(tmp_path, sig):
    state = tmp_path / "state.json"
    tap = free_tcp()
    config = tmp_path / "bmsbank.toml"
    config.write_text(f'runtime_dir = "{tmp_path}"\n[bank]\ninterval = 0.2\n'
                      f'state_file = "{state}"\n[zmq]\nstates = "{free_tcp()}"\n'
                      f'tap = "{tap}"\ncontrol = "{free_tcp()}"\n')  # fmt: skip
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
    sub.connect(tap)
    proc = start("bmsbank.services.arbiter", "--config", str(config))
    try:
        receive(sub, proc)  # a bank: the engine has run, so there is something to keep
        assert not state.exists()  # written every 60 s: not yet
        code, err = stop(proc, sig)
    finally:
        sub.close(0)
        ctx.term()
    assert code == 0, err
    assert "engine" in json.loads(state.read_text())
    assert "Traceback" not in err


def test_publisher_saves_its_energy_file_on_sighup(tmp_path):
    energy = tmp_path / "energy.json"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    tap = free_tcp()
    pub.bind(tap)
    config = tmp_path / "bmsbank.toml"
    config.write_text(f'runtime_dir = "{tmp_path}"\n[dbus]\nenabled = false\n'
                      f'[can]\nenabled = true\ninterface = "virtual"\n'
                      f'channel = "hup-{uuid.uuid4().hex}"\nenergy_file = "{energy}"\n'
                      f'[zmq]\ntap = "{tap}"\n')  # fmt: skip
    proc = start("bmsbank.services.publisher", "--config", str(config))
    try:
        mono = 100.0
        for _ in range(15):  # 1.5 s of banks at 3 kW charge: something to count
            mono += 0.1
            pub.send_multipart([TOPIC_BANK, pack(make_bank(mono=mono, voltage=50.0,
                                                           current=60.0))])  # fmt: skip
            time.sleep(0.1)
        assert proc.poll() is None
        code, err = stop(proc, signal.SIGHUP)
    finally:
        pub.close(0)
        ctx.term()
    assert code == 0, err
    assert "publisher stopped" in err and "Traceback" not in err
    saved = json.loads(energy.read_text())
    assert saved["energy_in_wh"] > 0.0


def test_poller_and_simulator_stop_cleanly_on_sighup(tmp_path):
    link = str(tmp_path / "tty-jbd")
    sim = start("bmsbank.services.poller.simulators", "--bms", "jbd", "--link", link)
    states = free_tcp()
    config = tmp_path / "bmsbank.toml"
    config.write_text(f'runtime_dir = "{tmp_path}"\n[zmq]\nstates = "{states}"\n'
                      f'control = "{free_tcp()}"\n[[ports]]\nname = "jbd"\ndevice = "{link}"\n'
                      'bms = "jbd"\naddresses = [1]\ninterval = 0.2\n')  # fmt: skip
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(states)
    poller = start("bmsbank.services.poller", "--config", str(config), "--port", "jbd")
    try:
        topic, _ = receive(pull, poller)  # polling the simulator
        assert topic == TOPIC_STATE
        code, err = stop(poller, signal.SIGHUP)
        assert code == 0, err
        assert "Traceback" not in err
        assert os.path.islink(link)
        code, err = stop(sim, signal.SIGHUP)
        assert code == 0, err
        assert not Path(link).exists()  # the simulator's shutdown removes its link
    finally:
        for proc in (poller, sim):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        pull.close(0)
        ctx.term()
