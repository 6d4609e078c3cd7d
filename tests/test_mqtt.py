"""The MQTT bridge against a real mosquitto (Debian's package) and a real arbiter's ZeroMQ tap."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from bmsbank.schema import TOPIC_BANK, pack, unpack
from tests.factories import state_msg
from tests.zmqhelp import free_tcp, running_arbiter

# scripts/setup installs mosquitto (apt) and paho-mqtt (test extra): a missing one fails, not skips
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Broker:
    """mosquitto on a free loopback port, no persistence (a restart forgets retained messages)."""

    def __init__(self, tmp: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = os.path.join(tmp, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "log_dest stderr\n"
            )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise AssertionError("mosquitto did not listen within 5 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


class Listener:
    """A subscriber to everything, keeping each topic's messages in arrival order."""

    def __init__(self, port: int) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.setdefault(msg.topic, []).append(msg.payload)

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            got = self.messages.get(topic)
            return got[-1] if got else None

    def wait(self, what: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"not seen within {timeout} s; topics: {sorted(self.messages)}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _bridge(tmp: str, port: int, tap: str, interval: float = 1.0) -> subprocess.Popen:
    conf = os.path.join(tmp, "bmsbank.toml")
    with open(conf, "w") as f:
        f.write(
            f'runtime_dir = "{tmp}"\n[bank]\nname = "house"\n'
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
            f"interval = {interval}\n"
        )
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-m", "bmsbank.mqtt", "--config", conf, "--tap", tap], env=env
    )


@pytest.fixture
def broker(tmp_path: Any) -> Iterator[Broker]:
    b = Broker(str(tmp_path))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def listener(broker: Broker) -> Iterator[Listener]:
    lis = Listener(broker.port)
    yield lis
    lis.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def _feed(ctx: zmq.Context, states: str, stop: threading.Event) -> threading.Thread:
    """Two packs' states pushed to the arbiter every 0.2 s (constant values)."""

    def run() -> None:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(states)
        seq = 0
        while not stop.is_set():
            for address in (1, 2):
                push.send_multipart([b"state", pack(state_msg("ttyUSB0", address, seq))])
            seq += 1
            time.sleep(0.2)
        push.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_discovery_and_state_match_the_tap(tmp_path: Any, broker: Broker, listener: Listener):
    with running_arbiter(strings=[["ttyUSB0:1"], ["ttyUSB0:2"]]) as (_arb, ctx, states, tap):
        stop = threading.Event()
        _feed(ctx, states, stop)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
        sub.connect(tap)
        proc = _bridge(str(tmp_path), broker.port, tap)
        try:
            base = "homeassistant/sensor/bmsbank_house"
            raw = listener.wait(lambda: listener.last(f"{base}/bank_soc/config"))
            cfg = json.loads(raw)
            assert cfg["unit_of_measurement"] == "%" and cfg["device_class"] == "battery"
            assert cfg["state_class"] == "measurement"
            assert cfg["state_topic"] == "bmsbank/house/bank/state"
            assert cfg["value_template"] == "{{ value_json.soc }}"
            assert cfg["availability_topic"] == "bmsbank/house/status"
            assert cfg["unique_id"] == "bmsbank_house_bank_soc"
            assert cfg["device"]["identifiers"] == ["bmsbank_house"]
            cvl = json.loads(listener.wait(lambda: listener.last(f"{base}/bank_cvl/config")))
            assert (cvl["unit_of_measurement"], cvl["device_class"]) == ("V", "voltage")
            ccl = json.loads(listener.wait(lambda: listener.last(f"{base}/bank_ccl/config")))
            assert (ccl["unit_of_measurement"], ccl["device_class"]) == ("A", "current")
            cell = json.loads(
                listener.wait(
                    lambda: listener.last(f"{base}/pack_ttyUSB0_1_max_cell_voltage/config")
                )
            )
            assert cell["device"]["via_device"] == "bmsbank_house"
            assert cell["state_topic"] == "bmsbank/house/pack/ttyUSB0_1/state"
            online = json.loads(
                listener.wait(
                    lambda: listener.last(
                        "homeassistant/binary_sensor/bmsbank_house/pack_ttyUSB0_1_online/config"
                    )
                )
            )
            assert online["device_class"] == "connectivity"
            assert listener.wait(lambda: listener.last("bmsbank/house/status")) == b"online"

            # state equals what the arbiter publishes on the tap (constant input)
            listener.wait(
                lambda: (
                    (s := listener.last("bmsbank/house/bank/state"))
                    and json.loads(s)["online"] == 2
                )
            )
            assert sub.poll(5000)
            bank = unpack(sub.recv_multipart()[1])
            state = json.loads(listener.last("bmsbank/house/bank/state") or b"")
            for key in ("soc", "voltage", "current", "cvl", "ccl", "dcl"):
                assert state[key] == pytest.approx(bank[key], abs=1e-3), key
            assert state["charge_state"] == bank["charge_state"]
            assert state["reason_ccl"] == bank["reasons"]["ccl"][:255]
            summary = next(p for p in bank["packs"] if p["id"] == "ttyUSB0:1")
            packed = json.loads(listener.last("bmsbank/house/pack/ttyUSB0_1/state") or b"")
            assert packed["online"] == "ON"
            assert packed["voltage"] == pytest.approx(summary["voltage"], abs=1e-3)
            assert packed["max_cell_voltage"] == pytest.approx(summary["max_cell_voltage"])
            assert packed["cell_delta"] == pytest.approx(
                summary["max_cell_voltage"] - summary["min_cell_voltage"], abs=1e-3
            )
        finally:
            stop.set()
            _stop(proc)
            sub.close()


def test_rate_limit_malformed_and_last_will(tmp_path: Any, broker: Broker, listener: Listener):
    tap = free_tcp()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(tap)
    proc = _bridge(str(tmp_path), broker.port, tap, interval=1.0)
    try:
        listener.wait(lambda: listener.last("bmsbank/house/status") == b"online")
        bank = {
            "v": 1,
            "kind": "bank",
            "seq": 0,
            "cvl": 55.2,
            "ccl": 100.0,
            "dcl": 150.0,
            "online": 0,
            "offline": 0,
            "blocking_charge": 0,
            "blocking_discharge": 0,
            "packs": [],
            "reasons": {"ccl": "x" * 400},
            "alarms": {"high_voltage": 2, "low_soc": 1, "low_voltage": 0},
        }
        time.sleep(0.5)  # the SUB's subscription reaches the PUB
        for _ in range(10):  # each is decoded (nothing valid published yet) and counted
            pub.send_multipart([TOPIC_BANK, pack({**bank, "ccl": float("nan")})])
            pub.send_multipart([TOPIC_BANK, b"\xc1 not msgpack"])
            time.sleep(0.05)
        pub.send_multipart([TOPIC_BANK, b"", b"three parts"])
        start = time.monotonic()
        while time.monotonic() - start < 3.0:  # 20 Hz of valid banks, published once per 1 s
            pub.send_multipart([TOPIC_BANK, pack(bank)])
            time.sleep(0.05)
        time.sleep(0.3)
        states = [json.loads(s) for s in listener.messages.get("bmsbank/house/bank/state", [])]
        assert 3 <= len(states) <= 4, [s["tap_malformed"] for s in states]
        assert states[-1]["ccl"] == 100.0 and len(states[-1]["reason_ccl"]) == 255
        assert states[-1]["tap_malformed"] == 21
        assert states[-1]["alarms"] == "high_voltage (alarm), low_soc (warning)"
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the last will
        proc.wait(5)
        listener.wait(lambda: listener.last("bmsbank/house/status") == b"offline", 5)
    finally:
        _stop(proc)
        pub.close()
        ctx.term()


def test_reconnects_after_broker_restart(tmp_path: Any, broker: Broker, listener: Listener):
    tap = free_tcp()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(tap)
    proc = _bridge(str(tmp_path), broker.port, tap, interval=1.0)
    bank = {
        "v": 1,
        "kind": "bank",
        "seq": 0,
        "cvl": 55.2,
        "ccl": 100.0,
        "dcl": 150.0,
        "online": 0,
        "offline": 0,
        "blocking_charge": 0,
        "blocking_discharge": 0,
        "alarms": {},
        "packs": [{"id": "rs485:3", "online": True, "voltage": 53.1}],
    }
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            pub.send_multipart([TOPIC_BANK, pack(bank)])
            time.sleep(0.1)

    threading.Thread(target=feed, daemon=True).start()
    try:
        listener.wait(lambda: listener.last("bmsbank/house/pack/rs485_3/state"))
        broker.stop()  # retained messages die with it (persistence false)
        time.sleep(1.0)
        with listener.lock:
            listener.messages.clear()
        broker.start()
        # the bridge comes back by itself (backoff <= 2 s here) and republishes everything
        listener.wait(lambda: listener.last("bmsbank/house/status") == b"online", 15)
        listener.wait(
            lambda: listener.last("homeassistant/sensor/bmsbank_house/pack_rs485_3_voltage/config"),
            10,
        )
        state = json.loads(
            listener.wait(lambda: listener.last("bmsbank/house/pack/rs485_3/state"), 10)
        )
        assert state["voltage"] == 53.1 and state["online"] == "ON"
        assert proc.poll() is None
        _stop(proc)  # SIGTERM: a clean goodbye (no last will) still says offline
        assert proc.returncode == 0
        listener.wait(lambda: listener.last("bmsbank/house/status") == b"offline", 5)
    finally:
        stop.set()
        _stop(proc)
        pub.close()
        ctx.term()


def test_missing_paho_says_how_to_install(tmp_path: Any):
    """Without paho-mqtt, `bmsbank mqtt` names the extra to install (exit 2), nothing crashes."""
    blocker = tmp_path / "paho"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-m", "bmsbank.cli", "mqtt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "pip install 'bmsbank[mqtt]'" in out.stderr


def test_supervisor_runs_the_bridge_only_when_enabled():
    from bmsbank.config import parse
    from bmsbank.supervisor import service_programs

    def names(mqtt: dict) -> list[str]:
        cfg = parse({"mqtt": mqtt, "bank": {"remote_packs": ["x:1"]}}, "t")
        return [p.name for p in service_programs(cfg, "/py", "/etc/bmsbank/bmsbank.toml")]

    assert "mqtt" not in names({})
    programs = names({"enabled": True})
    assert "mqtt" in programs and programs[-1] == "watchdog"


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ({"prot": 1883}, "mqtt.prot: unknown key; did you mean port?"),
        ({"port": 0}, "mqtt.port: the broker's TCP port, 1-65535"),
        ({"topic_prefix": "a/#"}, "mqtt.topic_prefix: first level"),
        ({"interval": 0.1}, "mqtt.interval: seconds >= 1"),
        ({"password_file": "pw"}, "mqtt.password_file: absolute path"),
    ],
    ids=["typo", "port", "wildcard", "interval", "relative-file"],
)
def test_bad_mqtt_keys_name_the_key(mqtt: dict, expected: str):
    from bmsbank.config import parse
    from bmsbank.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse({"mqtt": mqtt}, "bank.toml")
    assert f"bank.toml: {expected}" in str(err.value)


def test_unreadable_password_file_is_a_start_up_error(tmp_path: Any):
    conf = tmp_path / "bmsbank.toml"
    conf.write_text(f'[mqtt]\nenabled = true\npassword_file = "{tmp_path}/missing"\n')
    out = subprocess.run(
        [sys.executable, "-m", "bmsbank.mqtt", "--config", str(conf)],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "mqtt.password_file" in out.stderr and f"{tmp_path}/missing" in out.stderr


def test_under_supervisord_restarted_after_kill(tmp_path: Any, broker: Broker, listener: Listener):
    """The rendered `mqtt` program runs, beats for the watchdog, and comes back after kill -9."""
    from bmsbank.config import load
    from bmsbank.runtime import heartbeat_path
    from bmsbank.supervisor import render, service_programs

    conf = tmp_path / "bmsbank.toml"
    conf.write_text(
        f'runtime_dir = "{tmp_path}"\n[zmq]\ntap = "{free_tcp()}"\n'
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
    )
    cfg = load(str(conf))
    env = {"PYTHONPATH": ROOT}
    programs = [
        p for p in service_programs(cfg, sys.executable, str(conf), env) if p.name == "mqtt"
    ]
    sup_conf = tmp_path / "supervisord.conf"
    sup_conf.write_text(render(programs, str(tmp_path), str(tmp_path)))
    bindir = os.path.dirname(sys.executable)
    sup = subprocess.Popen([os.path.join(bindir, "supervisord"), "-n", "-c", str(sup_conf)])
    ctl = [os.path.join(bindir, "supervisorctl"), "-c", str(sup_conf)]
    try:
        listener.wait(lambda: listener.last("bmsbank/bmsbank/status") == b"online", 15)
        assert listener.wait(lambda: os.path.exists(heartbeat_path(str(tmp_path), "mqtt")), 5)
        pid = int(subprocess.run([*ctl, "pid", "mqtt"], capture_output=True, text=True).stdout)
        os.kill(pid, signal.SIGKILL)
        listener.wait(lambda: listener.last("bmsbank/bmsbank/status") == b"offline", 5)
        listener.wait(lambda: listener.last("bmsbank/bmsbank/status") == b"online", 15)
        new = int(subprocess.run([*ctl, "pid", "mqtt"], capture_output=True, text=True).stdout)
        assert new != pid
    finally:
        sup.terminate()
        sup.wait(15)
