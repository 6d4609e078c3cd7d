"""The poller against simulators on real pseudo-terminals, through pyserial."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from bmsbank.config import parse
from bmsbank.schema import TOPIC_STATE, unpack, validate_state
from bmsbank.services.poller import service
from bmsbank.services.poller.service import BACKOFF_MAX, DEVICE_WATCH, Poller
from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.zmqhelp import free_tcp


def port_config(device: str, bms: str, addresses: list[int], **extra):
    cfg = parse(
        {"ports": [{"name": "p", "device": device, "bms": bms, "addresses": addresses, **extra}]},
        "test",
    )
    return cfg.ports[0]


@pytest.fixture
def bus(tmp_path):
    """Start a simulator on a pty; yields a factory, stops everything afterwards."""
    servers = []

    def start(bms: str, models: dict[int, BatteryModel], wire: bool = False) -> PtyServer:
        server = PtyServer(
            create(bms, models), link=str(tmp_path / f"tty-{bms}"), model_wire=wire
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def run_poller(port, cycles: int = 1) -> tuple[Poller, list[dict]]:
    sent: list[dict] = []
    poller = Poller(port, sent.append)
    for _ in range(cycles):
        poller.poll_once()
    return poller, sent


def test_jbd_pack_is_read_through_the_pty(bus):
    model = BatteryModel(cells=8, soc=42.0, current=-7.25, temperatures=[18.0, 19.5])
    server = bus("jbd", {1: model}, wire=True)  # 9600 baud wire time modelled
    poller, sent = run_poller(port_config(server.device, "jbd", [1]))
    poller.close()
    assert len(sent) == 1
    state = validate_state(sent[0])
    assert state["pack"] == "p:1" and state["bms"] == "jbd" and state["seq"] == 0
    assert state["current"] == pytest.approx(-7.25, abs=0.01)
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.01)
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
    assert state["temperatures"] == pytest.approx([18.0, 19.5], abs=0.1)
    assert state["link"]["ok"] == 1 and state["link"]["timeout"] == 0


def test_jk_daisy_chain_polls_every_address(bus):
    models = {a: BatteryModel(cells=16, soc=50.0 + a, current=float(a)) for a in (1, 2, 3)}
    server = bus("jkpb", models)
    poller, sent = run_poller(port_config(server.device, "jkpb", [1, 2, 3], command_gap=0.01))
    poller.close()
    assert [s["pack"] for s in sent] == ["p:1", "p:2", "p:3"]
    for s in sent:
        a = s["address"]
        assert s["current"] == pytest.approx(float(a), abs=0.001)
        assert s["soc"] == pytest.approx(50.0 + a, abs=1.0)
        assert s["link"]["address"] == 0


def test_absent_pack_times_out_and_the_others_are_still_read(bus, caplog):
    server = bus("jkpb", {1: BatteryModel(), 2: BatteryModel()})
    port = port_config(server.device, "jkpb", [1, 7, 2], command_gap=0.0, timeout=0.1, retries=1)
    with caplog.at_level(logging.WARNING):
        poller, sent = run_poller(port, cycles=3)
    poller.close()
    assert [s["pack"] for s in sent] == ["p:1", "p:2"] * 3
    stats = poller.links[7].stats
    assert stats.timeout == 6 and stats.ok == 0  # 3 cycles x (1 try + 1 retry)
    silent = [r for r in caplog.records if "7: silent" in r.getMessage()]
    assert len(silent) == 1  # logged once, not every cycle


def test_corrupt_reply_is_counted_and_the_retry_succeeds(bus):
    server = bus("jbd", {1: BatteryModel()})
    server.corrupt = 1
    poller, sent = run_poller(port_config(server.device, "jbd", [1], retries=1))
    poller.close()
    assert len(sent) == 1 and sent[0]["link"]["checksum"] == 1


def test_noise_before_a_reply_is_skipped_and_counted(bus):
    server = bus("jbd", {1: BatteryModel()})
    server.noise = b"\x00\x11\x22garbage"
    poller, sent = run_poller(port_config(server.device, "jbd", [1]))
    poller.close()
    assert len(sent) == 1 and sent[0]["link"]["noise_bytes"] == 10


def test_late_replies_and_unasked_frames_never_pass_for_the_next_reply(bus):
    """A reply that comes after its timeout, or a frame nobody asked for, is drained before the
    next request (counted as noise) or recognised as the wrong part and retried: every state
    carries the pack's own current values."""
    model = BatteryModel(cells=8, current=3.0)
    server = bus("jbd", {1: model}, wire=True)
    server.latency = 0.3  # answers after the poller gave up
    port = port_config(server.device, "jbd", [1], retries=0, timeout=0.15)
    poller, sent = run_poller(port)
    assert sent == [] and poller.links[1].stats.timeout == 1
    server.latency = 0.002
    time.sleep(0.4)  # the late basic-info reply now waits in the driver
    model.current = -4.0
    poller.poll_once()
    assert len(sent) == 1 and sent[0]["current"] == pytest.approx(-4.0, abs=0.01)
    assert sent[0]["link"]["noise_bytes"] > 0 and sent[0]["link"]["unexpected"] == 0
    # A whole frame of the wrong kind (a cells reply) arriving unasked between two cycles.
    stray = server.sim.feed(bytes.fromhex("dda50400fffc77"))[0]
    os.write(server.master, stray)
    time.sleep(0.05)
    model.current = 6.5
    poller.poll_once()
    poller.close()
    assert len(sent) == 2 and sent[1]["current"] == pytest.approx(6.5, abs=0.01)
    assert sent[1]["link"]["noise_bytes"] >= sent[0]["link"]["noise_bytes"] + len(stray)


def test_truncated_reply_and_silence_are_told_apart(bus):
    server = bus("jbd", {1: BatteryModel()})
    server.truncate = 1
    port = port_config(server.device, "jbd", [1], retries=0, timeout=0.15)
    poller, sent = run_poller(port)
    assert sent == [] and poller.links[1].stats.truncated == 1
    server.silent = True
    poller.poll_once()
    assert poller.links[1].stats.timeout == 1
    server.silent = False
    poller.poll_once()
    poller.close()
    assert len(sent) == 1 and sent[0]["link"]["truncated"] == 1


def test_missing_port_backs_off_and_logs_once_then_recovers(tmp_path, caplog):
    link = str(tmp_path / "tty-late")
    sent: list[dict] = []
    poller = Poller(port_config(link, "jbd", [1]), sent.append)
    backoffs, waits = [], []
    with caplog.at_level(logging.INFO):
        for _ in range(9):
            poller.retry_at = 0.0  # the backoff has run out: try again
            waits.append(poller.poll_once())
            backoffs.append(poller.retry_at - time.monotonic())
            waits.append(poller.poll_once())  # still backing off: no attempt, no count
    assert [round(b * 2) / 2 for b in backoffs[:4]] == [0.5, 1.0, 2.0, 4.0]
    assert backoffs[-1] == pytest.approx(BACKOFF_MAX, abs=0.5)
    assert max(waits) <= DEVICE_WATCH  # it looks at the device path while backing off
    assert [r.getMessage() for r in caplog.records].count(
        next(r.getMessage() for r in caplog.records if "port: missing" in r.getMessage())
    ) == 1
    assert poller.links[1].stats.port_errors == 9
    server = PtyServer(create("jbd", {1: BatteryModel()}), link=link, model_wire=False).start()
    try:
        assert poller.poll_once() == 1.0  # the interval again
        assert len(sent) == 1
    finally:
        poller.close()
        server.stop()


def test_port_that_vanishes_is_reopened(tmp_path):
    link = str(tmp_path / "tty-jbd")
    server = PtyServer(create("jbd", {1: BatteryModel()}), link=link, model_wire=False).start()
    sent: list[dict] = []
    poller = Poller(port_config(link, "jbd", [1], timeout=0.2, retries=0), sent.append)
    poller.poll_once()
    server.stop()  # the USB adapter is pulled
    poller.poll_once()
    assert not poller.transport.is_open
    server = PtyServer(create("jbd", {1: BatteryModel()}), link=link, model_wire=False).start()
    try:
        for _ in range(3):
            poller.poll_once()
        assert len(sent) >= 2 and poller.transport.is_open
    finally:
        poller.close()
        server.stop()


def test_a_port_back_after_a_long_outage_is_reopened_at_once(tmp_path, monkeypatch):
    """The adapter's device path (a symlink, as /dev/serial/by-id is) goes away for long enough
    that the backoff reaches its cap, and comes back right after a failed attempt: the poller
    reopens it on its next look at the path instead of waiting out the cap.

    The cap is monkeypatched down to 4 s (the outage 6 s) so the test does not wait 60 s; the
    behaviour is the same with 30 s and 60 s: the return is seen within ``DEVICE_WATCH``.
    """
    monkeypatch.setattr(service, "BACKOFF_MAX", 4.0)
    link = tmp_path / "usb-jbd-if00-port0"  # what the config names: a symlink to the pty
    server = PtyServer(create("jbd", {1: BatteryModel()}), link=str(link), model_wire=False)
    server.start()
    sent: list[dict] = []
    poller = Poller(port_config(str(link), "jbd", [1], interval=0.2), sent.append)
    stop = threading.Event()

    def loop() -> None:  # run()'s loop, without the control channel
        while not stop.is_set():
            stop.wait(poller.poll_once())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5.0
        while not sent and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sent, "no state before the outage"
        server.stop()  # unplugged: the pty and the symlink go, the next exchange fails
        time.sleep(6.0)  # backoff 0.5, 1, 2, 4, 4: at its cap
        assert not poller.transport.is_open and poller.backoff == 4.0
        errors = poller.links[1].stats.port_errors
        while poller.links[1].stats.port_errors == errors:  # an attempt just failed: the next
            time.sleep(0.01)  # one is a whole cap away
        count = len(sent)
        server = PtyServer(create("jbd", {1: BatteryModel()}), link=str(link), model_wire=False)
        server.start()  # plugged back in: a new device behind the same path
        back = time.monotonic()
        while len(sent) == count and time.monotonic() - back < 5.0:
            time.sleep(0.01)
        assert len(sent) > count, "no state after the port came back"
        assert time.monotonic() - back <= 2.0  # the bound; the cap alone would be 4 s
    finally:
        stop.set()
        thread.join(5)
        poller.close()
        server.stop()


def write_config(tmp_path, device: str, states: str) -> str:
    path = tmp_path / "bmsbank.toml"
    path.write_text(
        f'[zmq]\nstates = "{states}"\n[[ports]]\nname = "jbd1"\n'
        f'device = "{device}"\nbms = "jbd"\ninterval = 0.2\n'
    )
    return str(path)


def test_poller_process_pushes_msgpack_states(bus, tmp_path):
    server = bus("jbd", {1: BatteryModel(current=3.0)})
    states = free_tcp()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(states)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bmsbank.services.poller",
            "--config",
            write_config(tmp_path, server.device, states),
            "--port",
            "jbd1",
        ]
    )
    try:
        seqs = []
        while len(seqs) < 3:
            assert pull.poll(10000), "no state from the poller process"
            topic, body = pull.recv_multipart()
            assert topic == TOPIC_STATE
            state = validate_state(unpack(body))
            assert state["current"] == pytest.approx(3.0, abs=0.01)
            seqs.append(state["seq"])
        assert seqs == [0, 1, 2]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean stop
        pull.close(0)
        ctx.term()


def test_one_process_polls_several_ports_and_stops_cleanly(bus, tmp_path):
    """The ports of one poller process are polled side by side, each in its own thread; a
    missing adapter holds up only its own."""
    first = bus("jbd", {1: BatteryModel(current=3.0)})
    second = bus("jkpb", {1: BatteryModel(current=-2.0), 2: BatteryModel(current=1.5)})
    states = free_tcp()
    path = tmp_path / "bmsbank.toml"
    path.write_text(
        f'[zmq]\nstates = "{states}"\n'
        f'[[ports]]\nname = "a"\ndevice = "{first.device}"\nbms = "jbd"\ninterval = 0.2\n'
        f'[[ports]]\nname = "b"\ndevice = "{second.device}"\nbms = "jkpb"\n'
        f"addresses = [1, 2]\ninterval = 0.2\n"
        f'[[ports]]\nname = "c"\ndevice = "{tmp_path}/unplugged"\nbms = "jbd"\n'
        f'[[ports]]\nname = "d"\ndevice = "/dev/null"\nbms = "jbd"\nprocess = "other"\n'
    )  # c is missing: its thread backs off, the others poll on
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(states)
    cmd = [sys.executable, "-m", "bmsbank.services.poller", "--config", str(path)]
    proc = subprocess.Popen([*cmd, "--process", "shared"])
    try:
        currents: dict[str, float] = {}
        while len(currents) < 3:
            assert pull.poll(10000), "no state from the poller process"
            state = validate_state(unpack(pull.recv_multipart()[1]))
            currents[state["pack"]] = state["current"]
        assert currents == pytest.approx({"a:1": 3.0, "b:1": -2.0, "b:2": 1.5}, abs=0.01)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM stops every port's thread
        pull.close(0)
        ctx.term()
    unknown = subprocess.run([*cmd, "--process", "nope"], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert unknown.returncode == 2
    assert "ports.process" in unknown.stderr and "shared, other" in unknown.stderr


def test_a_port_thread_that_fails_stops_its_process_with_status_1(monkeypatch):
    """supervisord then restarts the process whole, instead of it polling on with a port lost."""
    from bmsbank.services.poller import service

    ran: list[str] = []

    def fake_run(config, name, stop):
        ran.append(name)
        if name == "bad":
            raise RuntimeError("a defect")
        while not stop():
            time.sleep(0.01)

    monkeypatch.setattr(service, "run", fake_run)
    began = time.monotonic()
    assert service.run_ports(None, ["good", "bad"]) == 1  # type: ignore[arg-type]
    assert sorted(ran) == ["bad", "good"] and time.monotonic() - began < 5.0


def test_poller_process_rejects_a_bad_config_in_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[ports]]\nname = "x"\ndevice = "/dev/null"\nbms = "jbd"\nspeed = 9600\n')
    proc = subprocess.run(
        [sys.executable, "-m", "bmsbank.services.poller", "--config", str(path), "--port", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"bmsbank-poller: {path}: ports[0].speed: unknown key; "
        "expected one of name, device, bms, addresses, baudrate, "
        "interval, timeout, retries, command_gap, echo, process"
    )
    assert os.path.exists(path)


def test_implausible_values_are_counted_and_not_sent(bus, caplog):
    model = BatteryModel(temperatures=[25.0, 180.0])  # a broken probe: above physical bounds
    server = bus("jbd", {1: model})
    with caplog.at_level(logging.WARNING):
        poller, sent = run_poller(port_config(server.device, "jbd", [1]), cycles=2)
    assert sent == [] and poller.links[1].stats.malformed == 2
    assert any("temperatures[1]" in r.getMessage() for r in caplog.records)
    model.temperatures = [25.0, 26.0]
    poller.poll_once()
    poller.close()
    assert len(sent) == 1 and sent[0]["link"]["malformed"] == 2 and sent[0]["seq"] == 0


def test_a_state_no_pack_could_report_is_counted_and_not_sent(bus):
    """A corrupted reply can pass its plain-sum checksum: the poller checks the readings too."""
    model = BatteryModel(cells=8, imbalance=2.5)  # the last cell reads ~5.8 V: not a LiFePO4 cell
    server = bus("jbd", {1: model})
    poller, sent = run_poller(port_config(server.device, "jbd", [1]))
    assert sent == [] and poller.links[1].stats.malformed == 1
    model.imbalance = 0.0
    poller.poll_once()
    poller.close()
    assert len(sent) == 1 and sent[0]["link"]["malformed"] == 1 and sent[0]["link"]["ok"] == 1
