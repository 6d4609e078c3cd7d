"""The CAN input over slcan: python-can on real pseudo-terminals, a simulated battery behind them.

The bus is services/poller/simulators/can_peer.py (a byte hub of slcan ptys with the family's
simulator as a node); the input opens its pty with python-can's own slcan interface, as it
would a USB-CAN adapter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from bmsbank import supervisor
from bmsbank.config import load, parse
from bmsbank.errors import ConfigError
from bmsbank.schema import TOPIC_HELLO, TOPIC_STATE, unpack, validate_state
from bmsbank.services.poller import can_input
from bmsbank.services.poller.can_family import CanFrame
from bmsbank.services.poller.can_input import CanInput
from bmsbank.services.poller.plugins.victron_can.simulator import Simulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.can_peer import CanPeer, parse_line, slcan_line
from tests.zmqhelp import free_tcp

INTERVAL = 0.2  # s between states in these tests


@pytest.fixture
def peer(tmp_path):
    """A Victron-protocol battery on a one-node slcan bus; yields (peer, model, channel)."""
    model = BatteryModel(cells=16, soc=64.0, current=-8.5, temperatures=[22.0, 23.0])
    link = str(tmp_path / "can0")
    bus = CanPeer(Simulator({0: model}), [link], period=0.1).start()
    yield bus, model, link
    bus.stop()


def input_config(channel: str, **extra):
    table = {"name": "vc", "interface": "slcan", "channel": channel, "bms": "victron_can",
             "interval": INTERVAL, **extra}  # fmt: skip
    return parse({"can_inputs": [table], "bank": {"stale_after": 5.0}}, "test")


def run_for(reader: CanInput, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        wait = reader.step()
        if wait:
            time.sleep(min(wait, deadline - time.monotonic()) if wait < 5 else 0.05)


def test_slcan_lines_round_trip():
    for frame in (CanFrame(0x351, bytes.fromhex("4802000500 05AE01")),
                  CanFrame(0x18900140, b"\x01", extended=True), CanFrame(0x35E, b"")):  # fmt: skip
        line = slcan_line(frame)
        assert line.endswith(b"\r") and parse_line(line[:-1]) == frame
    for line in (b"S6", b"t35", b"t3512AB", b"t35G1AB"):  # a command, short, odd, not hex
        assert parse_line(line) is None


def test_states_reach_the_arbiters_socket(peer):
    bus, model, link = peer
    states = free_tcp()
    cfg = parse({"can_inputs": [{"name": "vc", "interface": "slcan", "channel": link,
                                 "bms": "victron_can", "interval": INTERVAL}],
                 "zmq": {"states": states, "tap": free_tcp(), "control": free_tcp()},
                 "bank": {"stale_after": 5.0}}, "test")  # fmt: skip
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(states)
    stop = threading.Event()
    thread = threading.Thread(target=can_input.run, args=(cfg, "vc", stop.is_set), daemon=True)
    thread.start()
    try:
        assert pull.poll(5000), "no state within 5 s"
        topic, body = pull.recv_multipart()
        state = validate_state(unpack(body))
    finally:
        stop.set()
        thread.join(3)
        pull.close(0)
        ctx.term()
    assert not thread.is_alive()
    assert topic == TOPIC_STATE and state["pack"] == "vc:0" and state["bms"] == "victron_can"
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.01)
    assert state["current"] == pytest.approx(-8.5, abs=0.05)  # discharging: negative
    assert state["soc"] == pytest.approx(64.0, abs=0.5)
    assert state["bms_cvl"] == pytest.approx(16 * 3.45, abs=0.05)
    assert state["bms_ccl"] == pytest.approx(50.0) and state["bms_dcl"] == pytest.approx(50.0)
    assert state["max_cell_voltage"] == pytest.approx(max(model.cell_voltages), abs=0.001)
    assert state["temperatures"][0] == pytest.approx(22.0, abs=0.05)
    assert state["hardware"] == "BYD" and state["link"]["ok"] >= 1


def test_the_input_says_hello_with_its_packs(peer):
    bus, _, link = peer
    control = free_tcp()
    zc = {"states": free_tcp(), "tap": free_tcp(), "control": control}
    table = {"name": "vc", "interface": "slcan", "channel": link, "bms": "victron_can"}
    cfg = parse({"can_inputs": [table], "zmq": zc}, "test")
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(control)
    stop = threading.Event()
    thread = threading.Thread(target=can_input.run, args=(cfg, "vc", stop.is_set, 0.2),
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        assert router.poll(5000)
        _identity, topic, body = router.recv_multipart()
    finally:
        stop.set()
        thread.join(3)
        router.close(0)
        ctx.term()
    hello = unpack(body)
    assert topic == TOPIC_HELLO and hello["port"] == "vc" and hello["packs"] == ["vc:0"]
    assert hello["bms"] == "victron_can"


def test_a_short_frame_and_a_foreign_id_are_counted_and_skipped(peer):
    bus, model, link = peer
    sent: list[dict] = []
    reader = CanInput(input_config(link).can_inputs[0], sent.append)
    try:
        run_for(reader, 0.6)
        assert sent, "no state before the bad frames"
        good = len(sent)
        bus.send(CanFrame(0x356, bytes.fromhex("01 02")))  # 2 bytes of a 6-byte measurement
        bus.send(CanFrame(0x123, bytes(8)))  # nobody's id
        bus.send(CanFrame(0x18900140, bytes(8), extended=True))  # a Daly board's, not ours
        run_for(reader, 0.6)
    finally:
        reader.close()
    assert reader.packs[0].stats.truncated == 1 and reader.unexpected == 2
    last = sent[-1]
    assert len(sent) > good and last["link"]["truncated"] == 1
    # the short frame changed nothing: the pack's values are still the battery's
    assert last["voltage"] == pytest.approx(model.voltage, abs=0.01)
    assert last["current"] == pytest.approx(-8.5, abs=0.05)


def test_a_silent_battery_sends_no_states(peer):
    bus, _, link = peer
    sent: list[dict] = []
    reader = CanInput(input_config(link).can_inputs[0], sent.append)
    try:
        run_for(reader, 0.6)
        assert sent
        assert reader.report.message()["packs"][0]["state"] == "answering"
        bus.silent = True
        run_for(reader, 0.3)  # frames in flight
        count = len(sent)
        run_for(reader, 0.8)
    finally:
        reader.close()
    assert len(sent) == count, "states kept coming from a battery that fell silent"
    # for the arbiter's reason: silent after FAIL_POLLS cycles without frames, and said once
    assert reader.report.changed
    (pack,) = reader.report.message()["packs"]
    assert pack["state"] == "silent" and "no reply from address 0" in pack["detail"]


def test_the_bus_vanishing_and_coming_back(peer, monkeypatch):
    bus, _, link = peer
    monkeypatch.setattr(can_input, "BACKOFF_MAX", 2.0)
    sent: list[dict] = []
    reader = CanInput(input_config(link).can_inputs[0], sent.append)
    try:
        run_for(reader, 0.6)
        assert reader.bus is not None and sent
        bus.vanish()  # the adapter is unplugged
        run_for(reader, 1.6)
        assert reader.bus is None
        assert reader.bus_errors >= 2 and reader.backoff > can_input.BACKOFF_MIN
        assert reader.report.message()["state"] == "missing"
        lost = len(sent)
        assert reader.packs[0].stats.port_errors == reader.bus_errors
        bus.restore()
        started = time.monotonic()
        while len(sent) == lost and time.monotonic() - started < 4.0:
            run_for(reader, 0.1)
        back = time.monotonic() - started
    finally:
        reader.close()
    assert len(sent) > lost, "no state after the bus came back"
    assert reader.report.message()["state"] == "open"
    assert back < 2.0 + 2 * INTERVAL + 0.5  # within the backoff (at most 2 s here) and a state
    assert sent[-1]["link"]["port_errors"] >= 2


def test_a_missing_bus_is_retried_with_backoff_doubling(tmp_path, monkeypatch):
    opened: list[float] = []

    def factory(interface, channel, bitrate):
        opened.append(time.monotonic())
        raise OSError(2, "No such file or directory")

    reader = CanInput(input_config(str(tmp_path / "nothing")).can_inputs[0], [].append,
                      bus_factory=factory)  # fmt: skip
    run_for(reader, 3.6)
    link = reader.report.message()
    assert link["state"] == "missing" and "No such file" in link["detail"]
    gaps = [b - a for a, b in zip(opened, opened[1:], strict=False)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0][: len(gaps)], abs=0.15) and len(gaps) >= 3


def test_the_input_waits_without_spinning(peer):
    bus, _, link = peer
    bus.silent = True
    reader = CanInput(input_config(link).can_inputs[0], [].append)
    try:
        run_for(reader, 0.2)
        cpu = time.thread_time()
        run_for(reader, 1.5)
        cpu = time.thread_time() - cpu
    finally:
        reader.close()
    # python-can's slcan recv(timeout) alone polls every 1 ms: ~0.05 s here; waiting on the
    # descriptor: ~0.002 s
    assert cpu < 0.02, f"{cpu:.3f} s of CPU in 1.5 s on a quiet bus"


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("table, key, says", [
    ({"bms": "jbd"}, "can_inputs[0].bms", "speaks CAN"),
    ({"interface": "slcn"}, "can_inputs[0].interface", "python-can interface"),
    ({"cels": 15}, "can_inputs[0].cels", "did you mean cells?"),
    ({"cells": 1}, "can_inputs[0].cells", "2-64"),
    ({"addresses": [0, 1]}, "can_inputs[0].addresses", "0-0"),
    ({"interval": 0.01}, "can_inputs[0].interval", "seconds >="),
    ({"name": "rs485"}, "can_inputs[0].name", "no port has"),
    ({"interval": 5.0}, "bank.stale_after", "at least 12 s, 2 x (can_inputs[0].interval"),
], ids=["family", "interface", "option", "option-value", "addresses", "interval",
        "name", "stale_after"])  # fmt: skip
def test_config_errors_name_the_key_and_the_file(tmp_path, table, key, says):
    path = tmp_path / "bmsbank.toml"
    base = {"name": "vc", "interface": "slcan", "channel": "/dev/ttyACM0", "bms": "victron_can"}
    lines = ['[[ports]]', 'name = "rs485"', 'device = "/dev/ttyUSB0"', 'bms = "jbd"',
             "[[can_inputs]]"]  # fmt: skip
    for k, v in {**base, **table}.items():
        lines.append(f"{k} = {v!r}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(str(path))
    text = "\n".join(err.value.lines())
    assert f"{path}: {key}:" in text and says in text, text


def test_a_can_family_is_refused_under_ports():
    with pytest.raises(ConfigError, match=r"ports\[0\].bms: .*\[\[can_inputs\]\]"):
        parse({"ports": [{"name": "p", "device": "/dev/x", "bms": "victron_can"}]}, "test")


def test_can_packs_are_in_the_banks_packs_and_programs():
    cfg = parse({"ports": [{"name": "rs485", "device": "/dev/ttyUSB0", "bms": "jbd"}],
                 "can_inputs": [{"name": "pylon", "interface": "socketcan", "channel": "can1",
                                 "bms": "victron_can", "cells": 15}]}, "test")  # fmt: skip
    assert cfg.pack_ids() == ["rs485:1", "pylon:0"]
    assert cfg.topology().ids == ("rs485:1", "pylon:0")
    c = cfg.can_input("pylon")
    assert c.options["cells"] == 15 and c.bitrate == 0 and c.addresses == [0]
    programs = {p.name: p for p in supervisor.service_programs(cfg, "py", "/etc/b.toml")}
    assert programs["can-pylon"].command == [
        "py", "-m", "bmsbank.services.poller.can_input", "--config", "/etc/b.toml",
        "--input", "pylon"]  # fmt: skip
    watchdog = programs["watchdog"].command
    assert "can-pylon" in watchdog and "poller-shared" in watchdog


def test_the_entry_point_refuses_an_unknown_input(tmp_path):
    path = tmp_path / "bmsbank.toml"
    path.write_text('[[can_inputs]]\nname = "vc"\ninterface = "slcan"\nchannel = "/dev/x"\n'
                    'bms = "victron_can"\n', encoding="utf-8")  # fmt: skip
    env = {**os.environ}
    out = subprocess.run(
        [sys.executable, "-m", "bmsbank.services.poller.can_input", "--config", str(path),
         "--input", "nope"], capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"{path}: can_inputs.nope: a configured CAN input (vc)" in out.stderr


def test_both_command_lines_as_processes(tmp_path):
    """can_peer and the CAN input each as the process supervisord would run."""
    link = str(tmp_path / "can0")
    states = free_tcp()
    path = tmp_path / "bmsbank.toml"
    path.write_text(
        f'[zmq]\nstates = "{states}"\ntap = "{free_tcp()}"\ncontrol = "{free_tcp()}"\n'
        f'[[can_inputs]]\nname = "vc"\ninterface = "slcan"\nchannel = "{link}"\n'
        f'bms = "victron_can"\ninterval = 0.2\n', encoding="utf-8",
    )  # fmt: skip
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(states)
    peer = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.services.poller.simulators.can_peer", "--family",
         "victron_can", "--link", link, "--period", "0.2", "--current", "12.5", "--soc", "80"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    reader = None
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(link) and time.monotonic() < deadline:
            assert peer.poll() is None, peer.stdout.read() if peer.stdout else ""
            time.sleep(0.05)
        reader = subprocess.Popen(
            [sys.executable, "-m", "bmsbank.services.poller.can_input", "--config", str(path),
             "--input", "vc"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert pull.poll(30000), "no state from the CAN input process"
        state = validate_state(unpack(pull.recv_multipart()[1]))
    finally:
        for proc in (reader, peer):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        pull.close(0)
        ctx.term()
    assert reader is not None and reader.returncode == 0 and peer.returncode == 0
    assert state["pack"] == "vc:0" and state["current"] == pytest.approx(12.5, abs=0.05)
    assert state["soc"] == pytest.approx(80.0, abs=0.5) and state["bms_ccl"] == 50.0


def test_check_config_counts_the_can_inputs(tmp_path, capsys):
    from bmsbank.cli import main

    path = tmp_path / "bmsbank.toml"
    path.write_text('[[can_inputs]]\nname = "pylon"\ninterface = "socketcan"\nchannel = "can1"\n'
                    'bms = "victron_can"\ncells = 15\n', encoding="utf-8")  # fmt: skip
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{path}: ok: 0 port(s), 1 CAN input(s), 1 pack(s), 0 poller process(es)"
    )


def test_a_family_defect_is_counted_not_fatal(peer):
    from bmsbank.services.poller.plugins.victron_can.family import Family

    class Broken(Family):
        def accept(self, frame, parts):
            if frame.id == 0x35E:
                raise IndexError("a defect")
            super().accept(frame, parts)

    bus, model, link = peer
    sent: list[dict] = []
    cfg = input_config(link).can_inputs[0]
    reader = CanInput(cfg, sent.append, family=Broken(cfg.options))
    try:
        run_for(reader, 0.8)
    finally:
        reader.close()
    assert reader.packs[0].stats.malformed >= 2 and sent  # the other frames still make states
    assert sent[-1]["hardware"] == "" and sent[-1]["voltage"] == pytest.approx(
        model.voltage, abs=0.01
    )


class FakeBus:
    """A python-can bus stand-in: hands out queued messages, nothing else (no descriptor)."""

    def __init__(self, reply: dict[int, str] | None = None) -> None:
        self.queue: list = []
        self.sent: list = []
        self.reply = reply  #: frames "the BMS" answers each sent frame with

    def put(self, frames: dict[int, str]) -> None:
        import can

        for can_id, data in frames.items():
            self.queue.append(can.Message(arbitration_id=can_id, is_extended_id=False,
                                          data=bytes.fromhex(data)))  # fmt: skip

    def recv(self, timeout):
        if self.queue:
            return self.queue.pop(0)
        time.sleep(min(timeout, 0.01))
        return None

    def send(self, msg) -> None:
        self.sent.append(msg)
        if self.reply is not None:
            self.put(self.reply)

    def fileno(self):
        raise NotImplementedError

    def shutdown(self):
        pass


def test_transient_parts_report_once():
    from bmsbank.services.poller.plugins.victron_can.family import Family
    from tests.test_victron_can import BYD

    class EventAlarms(Family):  # as a family whose alarm frame comes only while it holds
        transient = frozenset({"alarms"})

    bus = FakeBus()
    cfg = input_config("fake").can_inputs[0]
    sent: list[dict] = []
    reader = CanInput(cfg, sent.append, family=EventAlarms(cfg.options),
                      bus_factory=lambda *_: bus)  # fmt: skip
    bus.put({**BYD, 0x35A: "10 00 00 00 00 00 00 00"})  # low voltage alarm
    deadline = time.monotonic() + 3
    while not sent and time.monotonic() < deadline:
        reader.step()
    assert sent and sent[0]["alarms"] == {"low_voltage": 2}
    assert "alarms" not in reader.packs[0].parts
    bus.put({k: v for k, v in BYD.items() if k != 0x35A})  # the alarm frame stops
    while len(sent) < 2 and time.monotonic() < deadline:
        reader.step()
    assert len(sent) == 2 and sent[1]["alarms"] == {}


def test_a_polled_family_with_a_reply_time_longer_than_the_interval():
    from bmsbank.services.poller.plugins.victron_can.family import Family
    from tests.test_victron_can import BYD

    class Polled(Family):  # asks with a GX keep-alive; the fake bus answers with BYD's frames
        reply_timeout = 0.5

        def requests(self, address, cycle):
            return [CanFrame(0x305, bytes(8))]

    bus = FakeBus(reply=BYD)
    cfg = input_config("fake", interval=0.2).can_inputs[0]
    sent: list[dict] = []
    reader = CanInput(cfg, sent.append, family=Polled(cfg.options), bus_factory=lambda *_: bus)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        reader.step()
    # a state every reply time (0.5 s), not put off by every new cycle (0.2 s) for ever
    assert 3 <= len(sent) <= 4, len(sent)
    assert len(bus.sent) >= 8 and bus.sent[0].arbitration_id == 0x305


def test_the_input_beats_its_heartbeat(peer, tmp_path):
    from bmsbank import runtime

    _, _, link = peer
    zc = {"states": free_tcp(), "tap": free_tcp(), "control": free_tcp()}
    table = {"name": "vc", "interface": "slcan", "channel": link, "bms": "victron_can"}
    cfg = parse({"can_inputs": [table], "zmq": zc}, "test")
    heartbeat = runtime.Heartbeat(str(tmp_path), "can-vc")
    path = runtime.heartbeat_path(str(tmp_path), "can-vc")
    stop = threading.Event()
    thread = threading.Thread(target=can_input.run, args=(cfg, "vc", stop.is_set),
                              kwargs={"heartbeat": heartbeat}, daemon=True)  # fmt: skip
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(path, encoding="ascii") as fh:
            pid, promise = fh.read().split()
    finally:
        stop.set()
        thread.join(3)
    assert int(pid) == os.getpid() and float(promise) > time.monotonic()
