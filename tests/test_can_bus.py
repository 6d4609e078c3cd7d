"""The CAN-bus BMS port on real python-can buses: slcan over pseudo-terminals, virtual in-process.

Two ptys joined by the demo's PtyBridge are the cable: the sender (or the whole publisher) opens
one end with python-can slcan, a python-can slcan reader the other, and every frame read is
decoded with cantools against the DBC. Senders whose timing matters get a fake clock; waits
for the wire poll for a condition with generous deadlines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import threading
import time
import tty
import uuid

import can
import cantools
import pytest
import zmq
import zmq.asyncio

from bmsbank.config import CanConfig, load
from bmsbank.schema import TOPIC_BANK, pack
from bmsbank.services.poller.simulators.ptybridge import PtyBridge
from bmsbank.services.publisher import canbms
from bmsbank.services.publisher.can_sender import KEEPALIVE_TIMEOUT, CanSender
from bmsbank.services.publisher.service import Publisher
from tests.test_publisher_paths import make_bank

DB = cantools.database.load_file(canbms.DBC, strict=True)
LOGGER = "bmsbank.services.publisher.can_sender"
WAIT = 5.0  # s; generous: the machine may be loaded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """Two pty ends at ``links`` joined like a CAN cable, pumped by a thread."""

    def __init__(self, links: list[str]) -> None:
        self.bridge = PtyBridge(links)
        self.links = links
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bridge.pump(0.02)

    def close(self) -> None:
        """Cut the cable: both ptys close and their paths vanish."""
        self._stop.set()
        self._thread.join(5)
        self.bridge.close()


@pytest.fixture
def links(tmp_path):
    return [str(tmp_path / "can-bms"), str(tmp_path / "can-gx")]


@pytest.fixture
def wire(links):
    w = Wire(links)
    yield w
    w.close()


def slcan(channel: str) -> can.BusABC:
    return can.Bus(interface="slcan", channel=channel, sleep_after_open=0)


def read_until(bus: can.BusABC, done, timeout: float = WAIT) -> list[can.Message]:
    """Read frames until ``done(frames)`` holds (or fail after ``timeout`` seconds)."""
    got: list[can.Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = bus.recv(0.05)
        if msg is not None:
            got.append(msg)
            if done(got):
                return got
    raise AssertionError(f"condition not met; got {[hex(m.arbitration_id) for m in got]}")


def ids(frames) -> set[int]:
    return {m.arbitration_id for m in frames}


def slcan_config(channel: str, **kw) -> CanConfig:
    return CanConfig(enabled=True, interface="slcan", channel=channel, energy_file="", **kw)


# ---- bitrate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bitrate", "command"), [(500000, b"S6\r"), (250000, b"S5\r")])
def test_bitrate_reaches_the_adapter(bitrate, command):
    master, slave = os.openpty()
    tty.setraw(slave)
    sender = CanSender(slcan_config(os.ttyname(slave), bitrate=bitrate))
    try:
        assert sender.send_all([(0x351, bytes.fromhex("45024c044c040000"))]) == 1
        seen = b""
        deadline = time.monotonic() + WAIT
        while b"t351" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:
                seen += os.read(master, 4096)
        # python-can's slcan sets the bitrate ("S6" = 500k, "S5" = 250k), opens ("O"), sends
        other = {b"S6\r", b"S5\r"} - {command}
        assert command in seen and other.pop() not in seen, seen
        assert seen.index(command) < seen.index(b"O\r") < seen.index(b"t35184502"), seen
    finally:
        sender.close()
        os.close(master)
        os.close(slave)


# ---- frames over slcan --------------------------------------------------------------------------


def test_frames_over_slcan_decode_as_the_bank(wire):
    bank = make_bank(soh=96.0, soc=47.5)
    sender = CanSender(slcan_config(wire.links[0]))
    reader = slcan(wire.links[1])
    try:
        sent = canbms.frames(bank, sender.config, force_charge=True, energy=(5e6, 2.5e6))
        assert sender.send_all(sent) == len(sent)
        got = read_until(reader, lambda fs: len(fs) == len(sent))
    finally:
        sender.close()
        reader.shutdown()
    assert [(m.arbitration_id, bytes(m.data)) for m in got] == sent  # in order, byte-exact
    assert all(not m.is_extended_id and m.dlc == 8 for m in got)
    d = {m.arbitration_id: DB.decode_message(m.arbitration_id, m.data) for m in got}
    assert d[0x351]["ChargeVoltageLimit"] == pytest.approx(bank["cvl"])
    assert d[0x355]["SoC"] == 48 and d[0x355]["SoH"] == 96
    assert d[0x356]["BatteryVoltage"] == pytest.approx(bank["voltage"], abs=0.005)
    assert d[0x360]["ForceCharge"] == "force charge"
    assert d[0x378] == {"EnergyIn": 5_000_000, "EnergyOut": 2_500_000}
    assert d[0x372]["ModulesOnline"] == bank["online"]


# ---- keep-alive ---------------------------------------------------------------------------------


def test_keepalive_makes_the_sender_listening_until_the_timeout(wire, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    sender = CanSender(slcan_config(wire.links[0]), clock)
    gx = slcan(wire.links[1])
    try:
        sender.send_all([])  # opens the port; nothing to send yet
        assert not sender.listening and sender.last_keepalive is None
        gx.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
        ident = bytes.fromhex("12345678") + b"VIC\x00"
        gx.send(can.Message(arbitration_id=0x307, data=ident, is_extended_id=False))
        deadline = time.monotonic() + WAIT
        while sender.identification is None and time.monotonic() < deadline:
            sender.send_all([])
            time.sleep(0.02)
        assert sender.listening and sender.last_keepalive == clock.now
        assert sender.identification == ident and sender.identification[4:7] == b"VIC"
        clock.now += KEEPALIVE_TIMEOUT
        sender.send_all([])
        assert sender.listening  # exactly at the timeout: still listening
        clock.now += 0.1
        sender.send_all([])
        assert not sender.listening
        for _ in range(5):
            clock.now += 1.0
            sender.send_all([])  # stays quiet: logged once per change
    finally:
        sender.close()
        gx.shutdown()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if "keep-alive" in r.getMessage()]  # fmt: skip
    assert [level for level, _ in lines] == ["INFO", "WARNING"], lines
    assert KEEPALIVE_TIMEOUT == 10.0


def test_keepalive_seen_on_a_virtual_bus_with_other_traffic():
    channel = f"ka-{uuid.uuid4().hex}"
    clock = Clock()
    sender = CanSender(CanConfig(enabled=True, interface="virtual", channel=channel), clock)
    gx = can.Bus(interface="virtual", channel=channel)
    try:
        sender.send_all([])
        for k in range(120):  # other devices' frames before and after the keep-alive
            gx.send(can.Message(arbitration_id=0x100 + k, data=b"x", is_extended_id=False))
        gx.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=True))  # 29-bit
        assert sender.send_all([]) == 0 and not sender.listening
        gx.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
        sender.send_all([])
        assert sender.listening and sender.identification is None
    finally:
        sender.close()
        gx.shutdown()


# ---- faults -------------------------------------------------------------------------------------


def test_pty_vanishing_and_coming_back(links, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    sender = CanSender(slcan_config(links[0]), clock)
    frames = canbms.frames(make_bank(), sender.config)
    first = Wire(links)
    reader = slcan(links[1])
    try:
        assert sender.send_all(frames) == len(frames)
        read_until(reader, lambda fs: 0x382 in ids(fs))
        reader.shutdown()
        first.close()  # the adapter is unplugged: its device node disappears
        assert not os.path.exists(links[0])
        deadline = time.monotonic() + WAIT
        while sender.up and time.monotonic() < deadline:  # the next write hits the dead pty
            sender.send_all(frames)
        assert sender.up is False and sender.bus is None
        clock.now += 1.0
        assert sender.send_all(frames) == 0  # reopen fails: no such device
        assert sender.backoff == 4.0  # 1 s, then 2 s, now 4 s
        second = Wire(links)  # plugged in again: a new pty at the same path
        reader = slcan(links[1])
        try:
            assert sender.send_all(frames) == 0  # still backing off (2 s not over)
            clock.now += 2.0
            assert sender.send_all(frames) == len(frames)
            got = read_until(reader, lambda fs: 0x382 in ids(fs))
        finally:
            reader.shutdown()
            second.close()
    finally:
        sender.close()
    assert (0x351, frames[0][1]) in [(m.arbitration_id, bytes(m.data)) for m in got]
    assert sender.up is True and sender.backoff == 1.0
    levels = [r.levelname for r in caplog.records
              if r.name == LOGGER and r.levelname in ("INFO", "WARNING")]  # fmt: skip
    assert levels == ["INFO", "WARNING", "INFO"], levels  # sending, lost once, sending again


class DeafBus:
    """A bus that sends but whose reads fail, like an adapter going bus-off mid-cycle."""

    def __init__(self) -> None:
        self.closed = False

    def send(self, msg, timeout=None):
        pass

    def recv(self, timeout=None):
        raise can.CanOperationError("bus-off")

    def shutdown(self):
        self.closed = True


def test_read_error_closes_and_retries_never_raises(caplog):
    clock = Clock()
    sender = CanSender(CanConfig(enabled=True, interface="virtual", channel="deaf"), clock)
    deaf = DeafBus()
    sender.bus = deaf  # type: ignore[assignment]
    assert sender.send_all([(0x351, bytes(8))]) == 1  # sent, then the read fails
    assert deaf.closed and sender.bus is None and sender.up is False
    assert sender.last_error == "receive: bus-off" and sender.next_try == clock.now + 1.0
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


# ---- a running publisher ------------------------------------------------------------------------


def publisher_config(tmp_path, tap: str, can: str, **extra) -> str:
    lines = [f'runtime_dir = "{tmp_path}"', 'log_level = "debug"', "[bank]",
             f"stale_after = {extra.pop('stale_after', 30.0)}", "interval = 0.2",  # as Arbiter
             "[dbus]", "enabled = false",
             "[can]", "enabled = true", can, f'energy_file = "{tmp_path}/energy.json"']  # fmt: skip
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["[zmq]", f'tap = "{tap}"']
    path = tmp_path / "bmsbank.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class Arbiter:
    """A PUB socket standing in for the arbiter: publishes a bank every 0.2 s while feeding."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind("tcp://127.0.0.1:*")
        self.tap = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.mono = 100.0
        self.feeding = True

    async def feed(self, **bank) -> None:
        while True:
            if self.feeding:
                self.mono += 0.2
                body = make_bank(mono=self.mono, **bank)
                await self.pub.send_multipart([TOPIC_BANK, pack(body)])
            await asyncio.sleep(0.2)

    def close(self) -> None:
        self.pub.close(linger=0)
        self.ctx.term()


def test_publisher_over_slcan(tmp_path, wire):
    async def scenario():
        arbiter = Arbiter()
        can_line = f'interface = "slcan"\nchannel = "{wire.links[0]}"'
        rule = {"force_charge_soc": 50.0, "force_charge_after": 0.0, "force_charge_release": 60.0}
        config = load(publisher_config(tmp_path, arbiter.tap, can_line, **rule))
        publisher = Publisher(config)
        gx = slcan(wire.links[1])
        task = asyncio.create_task(publisher.run(install_signals=False))
        feeder = asyncio.create_task(arbiter.feed(soc=40.0, voltage=50.0, current=36.0))
        try:
            got = await asyncio.to_thread(
                read_until, gx, lambda fs: sum(m.arbitration_id == 0x351 for m in fs) >= 3, 10.0
            )
            ka = can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False)
            await asyncio.to_thread(gx.send, ka)
            deadline = time.monotonic() + WAIT
            while not publisher.can.listening and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert publisher.can.listening
        finally:
            feeder.cancel()
            publisher.stop()
            await asyncio.wait_for(task, 10)
            gx.shutdown()
            arbiter.close()
        return got, publisher

    got, publisher = asyncio.run(asyncio.wait_for(scenario(), 30))
    count = {i: sum(m.arbitration_id == i for m in got) for i in ids(got)}
    fast = (0x351, 0x355, 0x356, 0x35A, 0x360, 0x372, 0x373, 0x374, 0x375, 0x376, 0x377)
    slow = (0x35E, 0x35F, 0x370, 0x371, 0x378, 0x379, 0x380, 0x381, 0x382)
    assert set(count) == set(fast) | set(slow)
    assert all(count[i] >= 2 for i in fast), count  # every tick
    assert all(count[i] == 1 for i in slow if i != 0x378), count  # once in < 10 s
    last = {m.arbitration_id: DB.decode_message(m.arbitration_id, m.data) for m in got}
    assert last[0x360]["ForceCharge"] == "force charge"  # SoC 40 % < 50 %, after 0 s
    assert last[0x356]["BatteryCurrent"] == pytest.approx(36.0)
    assert last[0x355]["SoC"] == 40
    # 1800 W integrated on the banks' clock, saved when the publisher stopped
    saved = json.loads((tmp_path / "energy.json").read_text())
    assert saved["energy_in_wh"] == pytest.approx(publisher.can_output.energy.energy_in)
    assert saved["energy_in_wh"] > 0.0 and saved["energy_out_wh"] == 0.0


def test_publisher_on_stale_silent_stops_every_frame(tmp_path):
    channel = f"silent-{uuid.uuid4().hex}"

    async def scenario():
        arbiter = Arbiter()
        can_line = f'interface = "virtual"\nchannel = "{channel}"'
        path = publisher_config(tmp_path, arbiter.tap, can_line, stale_after=1.0,
                                on_stale="silent")  # fmt: skip
        publisher = Publisher(load(path))
        gx = can.Bus(interface="virtual", channel=channel)
        task = asyncio.create_task(publisher.run(install_signals=False))
        feeder = asyncio.create_task(arbiter.feed())
        try:
            await asyncio.to_thread(read_until, gx, lambda fs: 0x382 in ids(fs), 10.0)
            arbiter.feeding = False
            deadline = time.monotonic() + WAIT
            while not publisher.stale and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert publisher.stale
            await asyncio.sleep(0.05)
            while await asyncio.to_thread(gx.recv, 0.0) is not None:
                pass  # what was sent before the silence began
            quiet = await asyncio.to_thread(gx.recv, 1.5)  # more than one tick: nothing
            arbiter.feeding = True
            back = await asyncio.to_thread(read_until, gx, lambda fs: 0x382 in ids(fs), 10.0)
        finally:
            feeder.cancel()
            publisher.stop()
            await asyncio.wait_for(task, 10)
            gx.shutdown()
            arbiter.close()
        return quiet, back

    quiet, back = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert quiet is None
    assert back[0].arbitration_id == 0x351  # the first tick with data again: every frame
    assert {0x35E, 0x35F, 0x379, 0x380, 0x382} <= ids(back)
