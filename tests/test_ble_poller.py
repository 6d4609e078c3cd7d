"""The unchanged Poller polling BLE packs: real bleak, the fake BlueZ, a private dbus-daemon.

Each device's poller runs in a thread of its own as ``run_ports`` runs them (poll, wait for the
delay poll_once returns, again), so a device that misbehaves can only hold up its own thread.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

import pytest

from bmsbank.config import PortConfig
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.ble_transport import BleTransport
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.fakebluez import FakeBluez, device_spec

MAC1 = "AA:BB:CC:DD:EE:01"
MAC2 = "AA:BB:CC:DD:EE:02"
INTERVAL = 0.25  # s between poll cycles


@pytest.fixture
def fake(monkeypatch):
    bluez = FakeBluez(rssi_interval=0.1)
    for key, value in bluez.env().items():
        monkeypatch.setenv(key, value)
    bluez.add_adapter("hci0")
    yield bluez
    bluez.stop()


def ble_port(name: str, mac: str, **extra) -> PortConfig:
    return PortConfig(name=name, device=f"ble:hci0/{mac}", bms="jbd", process="ble-hci0",
                      addresses=[1], interval=INTERVAL, timeout=0.3, **extra)  # fmt: skip


class Running:
    """A Poller in its own thread, recording every state with the time it was sent."""

    def __init__(self, port: PortConfig, scan_timeout: float = 1.0) -> None:
        self.states: list[tuple[float, dict]] = []
        self.poller = Poller(port, lambda msg: self.states.append((time.monotonic(), msg)))
        assert isinstance(self.poller.transport, BleTransport)
        self.poller.transport.scan_timeout = scan_timeout
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            delay = self.poller.poll_once()
            self.stop.wait(max(0.0, started + delay - time.monotonic()))

    def wait_states(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.states) < n:
            assert time.monotonic() < deadline, f"{len(self.states)} states, wanted {n}"
            time.sleep(0.02)

    def answering(self) -> bool:
        return self.poller.changes.state.get("1") == "answering" and self.poller.transport.is_open

    def since(self, t0: float) -> list[float]:
        return [t for t, _ in self.states if t >= t0]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.poller.close()


def wait_for(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held (fails after ``timeout``)."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"{what} not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - t0


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_jbd_pack_is_polled_over_ble_with_the_simulators_values(fake):
    model = BatteryModel(cells=8, soc=42.0, current=-7.25, temperatures=[18.0, 19.5])
    fake.add_device("hci0", MAC1, "JBD-SP08S001", "jbd", model)
    sent: list[dict] = []
    poller = Poller(ble_port("b1", MAC1), sent.append)
    try:
        for _ in range(3):
            poller.poll_once()
    finally:
        poller.close()
    assert len(sent) == 3
    state = validate_state(sent[-1])
    assert state["pack"] == "b1:1" and state["bms"] == "jbd"
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.01)
    assert state["current"] == pytest.approx(-7.25, abs=0.01)
    assert state["soc"] == pytest.approx(42.0, abs=1.0)
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
    assert state["temperatures"] == pytest.approx([18.0, 19.5], abs=0.1)
    assert state["link"]["ok"] == 3 and state["link"]["timeout"] == 0
    assert state["link"]["noise_bytes"] == 0
    assert fake.stats(MAC1)["connects"] == 1  # the connection is kept between cycles


BLE_FAMILIES = sorted(n for n, i in plugins.families().items() if i.ble is not None)


@pytest.mark.parametrize("family", BLE_FAMILIES)
def test_every_ble_family_is_polled_through_bleak_with_its_simulators_values(fake, family):
    info = plugins.info(family)
    model = BatteryModel(cells=16, soc=63.0, current=-4.5, temperatures=[21.0, 22.5])
    fake.add_device("hci0", MAC1, f"{info.ble.names[0]}TEST", family,
                    {info.default_address: model})  # fmt: skip
    sent: list[dict] = []
    port = PortConfig(name="b1", device=f"ble:hci0/{MAC1}", bms=family, process="ble-hci0",
                      addresses=[info.default_address], interval=INTERVAL)  # fmt: skip
    poller = Poller(port, sent.append)
    try:
        for _ in range(4):
            poller.poll_once()
    finally:
        poller.close()
    assert len(sent) >= 3, sent[-1:] or poller.links
    state = validate_state(sent[-1])
    assert state["bms"] == family
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.05)
    assert state["current"] == pytest.approx(-4.5, abs=0.1)
    assert state["soc"] == pytest.approx(63.0, abs=1.0)
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.002)
    assert fake.stats(MAC1)["connects"] == 1


@pytest.mark.parametrize("chunk", [1, 7, 20, 64])
def test_replies_split_anywhere_decode_the_same(fake, chunk):
    model = BatteryModel(cells=16, soc=77.0, current=12.5)
    fake.add_device("hci0", MAC1, "JBD-SP16S001", "jbd", model, chunk=chunk)
    sent: list[dict] = []
    poller = Poller(ble_port("b1", MAC1), sent.append)
    try:
        poller.poll_once()
    finally:
        poller.close()
    (state,) = sent
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
    assert state["current"] == pytest.approx(12.5, abs=0.01)


@pytest.mark.parametrize("chunk", [1, 20])
def test_notifications_come_through_the_acquired_socket(fake, chunk):
    model = BatteryModel(cells=16, soc=81.0, current=-15.5, temperatures=[24.5])
    fake.add_device("hci0", MAC1, "JBD-SP16S001", "jbd", model, chunk=chunk)
    sent: list[dict] = []
    poller = Poller(ble_port("b1", MAC1), sent.append)
    try:
        for _ in range(2):
            poller.poll_once()
        stats = fake.stats(MAC1)
    finally:
        poller.close()
    # AcquireNotify granted once, no StartNotify session: every notification was a packet on
    # the socket, none a PropertiesChanged signal
    assert stats["acquired"] and stats["acquires"] == 1 and not stats["notifying"]
    assert stats["notifications"] >= 2 * stats["writes"]
    assert len(sent) == 2
    state = validate_state(sent[-1])
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
    assert state["current"] == pytest.approx(-15.5, abs=0.01)
    assert state["soc"] == pytest.approx(81.0, abs=1.0)
    assert state["temperatures"] == pytest.approx([24.5], abs=0.1)
    assert state["link"]["noise_bytes"] == 0 and state["link"]["ok"] == 2


def test_a_device_silent_through_acquire_falls_back_to_start_notify(fake, caplog):
    caplog.set_level(logging.INFO, logger="bmsbank.services.poller")
    model = BatteryModel(cells=4, soc=64.0)
    fake.add_device("hci0", MAC1, "JBD-SP04S001", "jbd", model)
    fake.mute(MAC1)  # as a device whose notifications never reach an acquired socket
    run = Running(ble_port("b1", MAC1))
    try:
        wait_for(lambda: fake.stats(MAC1)["connects"] >= 2, 15, "a reconnect after the stall")
        fake.mute(MAC1, False)
        run.wait_states(2, 10)
        stats = fake.stats(MAC1)
    finally:
        run.close()
    assert stats["acquires"] == 1  # the first link only
    assert stats["notifying"] and not stats["acquired"]  # StartNotify since
    assert not run.poller.transport.acquire
    assert run.states[-1][1]["soc"] == pytest.approx(64.0, abs=1.0)
    warned = messages(caplog, "AcquireNotify")
    assert len(warned) == 1 and "StartNotify" in warned[0]


def test_a_vanished_device_is_reconnected_within_its_backoff(fake, caplog):
    caplog.set_level(logging.INFO, logger="bmsbank.services.poller.service")
    fake.add_device("hci0", MAC1, "JBD-SP04S001", "jbd", BatteryModel(cells=4))
    run = Running(ble_port("b1", MAC1))
    try:
        run.wait_states(2, 10)
        fake.vanish(MAC1)
        wait_for(lambda: not run.poller.transport.is_open, 5, "the link dropped")
        time.sleep(2.5)  # a few failed reconnects: the backoff grows 1, 2, ...
        backoff = run.poller.backoff
        assert 1.0 < backoff <= 8.0
        errors = run.poller.links[1].stats.port_errors
        assert errors >= 2  # lost, then at least one failed attempt
        fake.restore(MAC1)
        took = wait_for(run.answering, backoff + 5.0, "answering again")
        assert took <= backoff + 1.0 + 1.0  # the backoff, one scan at most, a cycle
    finally:
        run.close()
    assert fake.stats(MAC1)["connects"] == 2
    assert fake.stats(MAC1)["acquires"] == 2  # the socket closed with the link, a new one now
    # once per state change, however many attempts failed
    assert len(messages(caplog, "port: lost")) == 1
    assert len(messages(caplog, "port: missing")) == 1
    assert len(messages(caplog, "port: open")) == 2
    assert run.poller.backoff == 1.0  # reset by the reconnect


def test_the_backoff_doubles_from_1_s_to_60_s(fake):
    poller = Poller(ble_port("b1", MAC1), lambda _msg: None)  # no such device
    poller.transport.scan_timeout = 0.05
    try:
        delays = []
        for _ in range(9):
            poller.retry_at = 0.0  # do not wait it out
            poller.poll_once()
            delays.append(poller.retry_at - time.monotonic())
    finally:
        poller.close()
    assert [round(d) for d in delays] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_removed_adapter_is_retried_and_logged_once(fake, caplog):
    caplog.set_level(logging.INFO, logger="bmsbank.services.poller.service")
    fake.add_device("hci0", MAC1, "JBD-SP04S001", "jbd", BatteryModel(cells=4))
    run = Running(ble_port("b1", MAC1))
    try:
        run.wait_states(2, 10)
        fake.remove_adapter("hci0")
        wait_for(lambda: run.poller.links[1].stats.port_errors >= 3, 10, "retries")
        fake.add_adapter("hci0")
        wait_for(run.answering, run.poller.backoff + 5.0, "answering again")
    finally:
        run.close()
    missing = messages(caplog, "port: missing")
    assert len(missing) == 1 and "cannot scan on hci0" in missing[0]
    (lost,) = messages(caplog, "port: lost")
    assert "disconnected" in lost


def test_a_device_that_never_notifies_is_reconnected_and_its_timeouts_counted(fake, caplog):
    caplog.set_level(logging.INFO, logger="bmsbank.services.poller.service")
    fake.add_device("hci0", MAC1, "JBD-SP04S001", "jbd", BatteryModel(cells=4))
    run = Running(ble_port("b1", MAC1))
    try:
        run.wait_states(1, 10)
        fake.mute(MAC1)
        wait_for(lambda: fake.stats(MAC1)["connects"] >= 2, 15, "a reconnect after the stall")
        stats = run.poller.links[1].stats
        assert stats.timeout >= BleTransport.stall_after - 1
        assert stats.port_errors >= 1
        # still silent after reconnecting: each stall doubles the delay before the next try,
        # so a device that connects but never answers is not reconnected every second for ever
        wait_for(lambda: fake.stats(MAC1)["connects"] >= 3, 15, "a second reconnect")
        assert run.poller.transport.backoff_min >= 2.0
        (stalled, *_) = messages(caplog, "port: lost")
        assert "notifications stalled" in stalled
        fake.mute(MAC1, False)
        n = len(run.states)
        run.wait_states(n + 2, 15)
        assert run.poller.transport.backoff_min == 1.0  # it answers: back to 1 s
        stats = fake.stats(MAC1)
    finally:
        run.close()
    # the first link had notified through its acquired socket before the device went silent:
    # its stall is the device's, so the reconnect acquired again; the second link stalled
    # without a byte ever coming through its socket, and StartNotify is used since
    assert stats["connects"] >= 3 and stats["acquires"] == 2
    assert not run.poller.transport.acquire and stats["notifying"]


def test_another_familys_frames_are_counted_and_never_sent(fake):
    model = BatteryModel(cells=4)
    fake.add_device("hci0", MAC1, "JBD-SP04S001", "jbd", model)
    fake.foreign(MAC1, "daly")  # every write answered with a Daly frame
    daly = plugins.info("daly").default_address
    (frame,) = plugins.simulator_class("daly")({daly: model}).feed(
        plugins.load("daly").queries(daly)[0].request
    )
    sent: list[dict] = []
    poller = Poller(ble_port("b1", MAC1), sent.append)
    try:
        for _ in range(2):
            poller.poll_once()
        stats = poller.links[1].stats
    finally:
        poller.close()
    assert sent == []
    writes = fake.stats(MAC1)["writes"]
    assert writes >= 2
    # skipped as what it is to a JBD framer (bytes outside any DD..77 frame), never decoded
    assert stats.noise_bytes == writes * len(frame)
    assert stats.ok == 0 and stats.timeout == writes


@pytest.mark.parametrize("fault", ["vanish", "mute", "garble"])
def test_one_device_misbehaving_does_not_hold_up_the_other(fake, fault):
    good_model = BatteryModel(cells=4, soc=55.0)
    fake.add_device("hci0", MAC1, "JBD-SP04S001", "jbd", good_model)
    fake.add_device("hci0", MAC2, "JBD-SP04S002", "jbd", BatteryModel(cells=4, soc=33.0))
    good, bad = Running(ble_port("b1", MAC1)), Running(ble_port("b2", MAC2))
    try:
        good.wait_states(2, 10)
        bad.wait_states(2, 10)
        t0 = time.monotonic()
        {"vanish": fake.vanish, "mute": fake.mute, "garble": fake.garble}[fault](MAC2)
        time.sleep(4.0)
        times = good.since(t0)
        bad_before = len(bad.states)
        time.sleep(0.5)
        assert len(bad.states) == bad_before  # the faulty one sends nothing meanwhile
        if fault == "vanish":
            fake.restore(MAC2)
        elif fault == "mute":
            fake.mute(MAC2, False)
        else:
            fake.garble(MAC2, False)
        wait_for(bad.answering, bad.poller.backoff + 6.0, "the faulty device answering again")
    finally:
        good.close()
        bad.close()
    # the healthy device answered every interval throughout
    assert len(times) >= int(4.0 / INTERVAL) - 2
    gaps = [b - a for a, b in zip([t0, *times], times, strict=False)]
    assert max(gaps) < INTERVAL + 0.35, gaps
    assert all(s["pack"] == "b1:1" for _, s in good.states)
    assert good.states[-1][1]["soc"] == pytest.approx(55.0, abs=1.0)
    if fault == "garble":
        assert bad.poller.links[1].stats.checksum > 0


def test_the_command_line_serves_its_adapters_and_devices(monkeypatch):
    spec = f"hci0/{MAC1}/JBD-SP04S001/jbd/chunk=7,soc=55.0,cells=4,current=2.5"
    with FakeBluez(rssi_interval=0.1, adapters=["hci0"], devices=[spec]) as bluez:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.address)
        sent: list[dict] = []
        poller = Poller(ble_port("b1", MAC1), sent.append)
        try:
            poller.poll_once()
        finally:
            poller.close()
        assert bluez.stats(MAC1)["notifications"] > 2 * 39 // 7  # 7-byte pieces
    (state,) = sent
    model = BatteryModel(cells=4, soc=55.0, current=2.5)
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
    assert state["current"] == pytest.approx(2.5, abs=0.01)


@pytest.mark.parametrize(
    "spec",
    ["hci0/AA:BB:CC:DD:EE:01/x", "hci0/AA:BB:CC:DD:EE:01/x/nosuchbms",
     "hci0/AA:BB:CC:DD:EE:01/x/jbd/volts=3", "hci0/AA:BB:CC:DD:EE:01/x/jbd/soc=fifty"],
)  # fmt: skip
def test_a_bad_device_spec_is_refused_with_its_text(spec):
    with pytest.raises(argparse.ArgumentTypeError, match="AA:BB:CC:DD:EE:01"):
        device_spec(spec)


def test_controls_go_over_ble_like_over_serial(fake):
    model = BatteryModel(cells=8, soc=99.0, imbalance=0.05)
    fake.add_device("hci0", MAC1, "JBD-SP08S001", "jbd", model)
    sent: list[dict] = []
    poller = Poller(ble_port("b1", MAC1), sent.append)
    try:
        poller.poll_once()
        assert sent[-1]["charge_fet"] and sent[-1]["discharge_fet"]
        assert any(sent[-1]["balancing"])
        assert poller.control("b1:1", "charge", False) is None  # acknowledged
        assert poller.control("b1:1", "balance", False) is None  # a factory-mode sequence
        poller.poll_once()
    finally:
        poller.close()
    assert not sent[-1]["charge_fet"] and sent[-1]["discharge_fet"]
    assert not any(sent[-1]["balancing"])
