"""The publisher service end to end: ZeroMQ bank in, D-Bus and CAN (python-can virtual) out."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import can
import pytest
import zmq
import zmq.asyncio
from dbus_fast import Variant

from bmsbank.config import CanConfig, load
from bmsbank.demo import PRIVATE_BUS_CONF
from bmsbank.schema import ALARMS, TOPIC_BANK, pack
from bmsbank.services.publisher import canbms
from bmsbank.services.publisher.can_sender import CanSender
from bmsbank.services.publisher.service import Publisher
from tests.test_dbus_service import Client
from tests.test_publisher_paths import make_bank

NAME = "com.victronenergy.battery.test"
STALE_AFTER = 1.5


def write_config(
    tmp_path, tap: str, can_channel: str | None, dbus_extra: str = "", can_extra: str = ""
) -> str:
    can_section = (
        f'[can]\nenabled = true\ninterface = "virtual"\nchannel = "{can_channel}"\n'
        f'energy_file = "{tmp_path}/energy.json"\n{can_extra}\n'
        if can_channel else "[can]\nenabled = false\n"
    )  # fmt: skip
    path = tmp_path / "bmsbank.toml"
    path.write_text(
        f'runtime_dir = "{tmp_path}"\nlog_level = "debug"\n'
        f"[bank]\nname = \"house\"\nstale_after = {STALE_AFTER}\ninterval = 0.2\n"  # as Rig.feed
        f'[dbus]\nservice = "{NAME}"\ndevice_instance = 7\nnames_file = "{tmp_path}/names.json"\n'
        f"{dbus_extra}\n"
        f'{can_section}[zmq]\ntap = "{tap}"\n'
    )  # fmt: skip
    return str(path)


class Rig:
    """A PUB socket standing in for the arbiter, the publisher, a D-Bus client and a CAN reader."""

    def __init__(
        self, tmp_path, address: str, with_can: bool = True, with_client: bool = True,
        dbus_extra: str = "", can_extra: str = "",
    ) -> None:  # fmt: skip
        self.with_client = with_client
        self.ctx = zmq.asyncio.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind("tcp://127.0.0.1:*")
        tap = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        channel = f"pubtest-{uuid.uuid4().hex}" if with_can else None
        self.config = load(write_config(tmp_path, tap, channel, dbus_extra, can_extra))
        self.can = can.Bus(interface="virtual", channel=channel) if channel else None
        self.publisher = Publisher(self.config, dbus_address=address)
        self.client = Client(address)
        self.address = address

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.publisher.run(install_signals=False))
        if self.with_client:
            await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        self.publisher.stop()
        await asyncio.wait_for(self.task, 5)
        if getattr(self.client, "bus", None) is not None:  # entered (now or later)
            await self.client.__aexit__()
        self.pub.close(linger=0)
        self.ctx.term()
        if self.can is not None:
            self.can.shutdown()

    async def send(self, body: dict | bytes, topic: bytes = TOPIC_BANK) -> None:
        await self.pub.send_multipart([topic, body if isinstance(body, bytes) else pack(body)])

    async def value(self, path: str):
        reply = await self.client.call(path, "GetValue")
        return reply.body[0] if reply.message_type.name == "METHOD_RETURN" else None

    async def until(self, path: str, expected, bank: dict | None = None, timeout: float = 5.0):
        """Wait until ``path`` reads ``expected``, re-sending ``bank`` (PUB drops until joined)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if bank is not None:
                await self.send(bank)
            if await self.value(path) == expected:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} never became {expected!r} (is {await self.value(path)!r})")

    async def feed(self, body: dict, period: float) -> None:
        """Keep sending ``body`` (as a live arbiter would) until cancelled."""
        while True:
            await self.send(body)
            await asyncio.sleep(period)

    async def frames(self, seconds: float) -> list[can.Message]:
        assert self.can is not None
        got: list[can.Message] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = await asyncio.to_thread(self.can.recv, 0.05)
            if msg is not None:
                got.append(msg)
        return got


def run(coro, timeout: float = 18.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def bank(**kw):
    return make_bank(**kw)


def test_dbus_and_can_follow_banks(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address) as rig:
            first = bank(soc=81.26, cvl=55.2, ccl=100.0, dcl=200.0)
            await rig.until("/Soc", Variant("d", 81.3), first)
            assert await rig.value("/DeviceInstance") == Variant("i", 7)
            assert await rig.value("/Info/MaxChargeVoltage") == Variant("d", 55.2)
            second = bank(seq=8, soc=55.5, cvl=54.4, ccl=12.3, dcl=150.0)
            await rig.until("/Soc", Variant("d", 55.5), second)
            assert await rig.value("/Info/MaxChargeCurrent") == Variant("d", 12.3)
            assert rig.publisher.counters.banks >= 2 and rig.publisher.counters.rejected == 0
            # banks at an odd 0.37 s period: CAN must still go out once a second
            feeder = asyncio.create_task(rig.feed(second, 0.37))
            got = await rig.frames(2.6)
            feeder.cancel()
            assert not rig.publisher.stale
            return got, second, rig.config.can

    got, second, can_config = run(scenario())
    stamps = [m.timestamp for m in got if m.arbitration_id == 0x351]
    assert 2 <= len(stamps) <= 4, stamps
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0.6 <= g <= 1.4 for g in gaps), gaps  # ~1 Hz
    expected = dict(canbms.frames(second, can_config))
    last = {m.arbitration_id: bytes(m.data) for m in got}
    assert set(expected) <= set(last)
    assert all(not m.is_extended_id for m in got)
    assert last[0x351] == expected[0x351]
    assert struct.unpack("<4H", last[0x351])[:3] == (544, 123, 1500)
    assert struct.unpack("<H", last[0x355][:2]) == (56,)  # 55.5 % -> 56 (1 % resolution)


def test_invalid_bank_rejected_and_counted(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            good = bank(soc=81.26, ccl=100.0)
            await rig.until("/Soc", Variant("d", 81.3), good)
            bad_nan = dict(good, ccl=float("nan"), soc=10.0)
            bad_type = dict(good, kind="state", soc=10.0)
            await rig.send(b"\xc1 not msgpack")
            await rig.send(pack(bad_nan))
            await rig.send(pack(bad_type))
            await rig.send(pack(good), topic=b"bankX")  # another topic that matches the prefix
            deadline = time.monotonic() + 3
            while rig.publisher.counters.rejected < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert rig.publisher.counters.rejected == 4
            # none of them reached an output (each bad one carries soc = 10)
            assert await rig.value("/Soc") == Variant("d", 81.3)
            assert await rig.value("/Info/MaxChargeCurrent") == Variant("d", 100.0)
            # the publisher is still alive and follows the next good bank
            await rig.until("/Soc", Variant("d", 60.0), bank(soc=60.0))

    run(scenario())


def test_stale_bank_gives_safe_state_and_recovers(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address) as rig:
            alarms = dict.fromkeys(ALARMS, 0)
            last = bank(cvl=55.2, ccl=100.0, dcl=200.0, alarms=alarms)
            await rig.until("/Info/MaxChargeCurrent", Variant("d", 100.0), last)
            silent_from = time.monotonic()
            await rig.until("/Info/MaxChargeCurrent", Variant("d", 0.0), timeout=STALE_AFTER + 3)
            waited = time.monotonic() - silent_from
            assert await rig.value("/Info/MaxDischargeCurrent") == Variant("d", 0.0)
            assert await rig.value("/Info/MaxChargeVoltage") == Variant("d", 55.2)
            assert await rig.value("/Alarms/BmsCable") == Variant("i", 2)
            assert await rig.value("/Connected") == Variant("i", 1)
            assert (await rig.value("/Soc")).signature == "ai"  # unknown now
            assert rig.publisher.stale and rig.publisher.counters.stale == 1
            got = await rig.frames(1.2)
            safe = [bytes(m.data) for m in got if m.arbitration_id == 0x351]
            assert safe and struct.unpack("<4H", safe[-1])[:3] == (552, 0, 0)
            cable = [bytes(m.data) for m in got if m.arbitration_id == 0x35A][-1]
            assert (cable[2] >> 6) & 0b11 == 0b01  # BMS internal alarm active
            # a valid bank again: back to the real limits
            await rig.until("/Info/MaxChargeCurrent", Variant("d", 100.0), last)
            assert await rig.value("/Alarms/BmsCable") == Variant("i", 0)
            assert not rig.publisher.stale
            return waited

    waited = run(scenario())
    assert STALE_AFTER - 0.3 <= waited <= STALE_AFTER + 2.5


def test_safe_state_without_any_bank(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address) as rig:
            # nothing is published until stale_after passes without a bank
            assert await rig.value("/Soc") is None
            await rig.until("/Alarms/BmsCable", Variant("i", 2), timeout=STALE_AFTER + 3)
            assert await rig.value("/Info/MaxChargeCurrent") == Variant("d", 0.0)
            assert await rig.value("/Info/MaxChargeVoltage") == Variant("d", 0.0)
            got = await rig.frames(1.2)
            assert any(m.arbitration_id == 0x351 for m in got)

    run(scenario())


def test_can_failure_never_crashes_the_publisher(tmp_path, dbus_address):
    async def scenario():
        rig = Rig(tmp_path, dbus_address, with_can=False)
        rig.publisher.can = CanSender(CanConfig(enabled=True, interface="nosuchbus"))
        async with rig:
            await rig.until("/Soc", Variant("d", 70.0), bank(soc=70.0))
            await asyncio.sleep(1.2)
            assert rig.publisher.can.errors >= 1 and rig.publisher.can.up is False
            await rig.until("/Soc", Variant("d", 71.0), bank(soc=71.0))

    run(scenario())


def test_dbus_not_there_yet_is_retried(tmp_path):
    sock_dir = Path(tempfile.mkdtemp(prefix="bmslate", dir="/tmp"))
    conf = sock_dir / "bus.conf"
    conf.write_text(PRIVATE_BUS_CONF.format(sock=sock_dir / "bus.sock"))
    address = f"unix:path={sock_dir / 'bus.sock'}"

    async def scenario():
        async with Rig(tmp_path, address, with_can=False, with_client=False) as rig:
            feeder = asyncio.create_task(rig.feed(bank(soc=33.0), 0.2))
            await asyncio.sleep(1.5)  # the publisher has data and is failing to connect
            assert not rig.publisher.ve.connected
            daemon = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork"])
            try:
                await asyncio.sleep(0.3)
                await rig.client.__aenter__()
                await rig.until("/Soc", Variant("d", 33.0), timeout=8.0)
                feeder.cancel()
            finally:
                daemon.terminate()
                daemon.wait(5)

    try:
        run(scenario())
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


# ---- CanSender ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class BrokenBus:
    """A bus whose writes fail, like an adapter that went bus-off or was unplugged."""

    def __init__(self) -> None:
        self.closed = False

    def send(self, msg, timeout=None):
        raise can.CanOperationError("Transmit buffer full")

    def shutdown(self):
        self.closed = True


def test_can_sender_backoff_and_logs_once_per_state_change(caplog):
    clock = Clock()
    sender = CanSender(CanConfig(enabled=True, interface="nosuchbus", channel="x"), clock)
    frames = [(0x351, bytes(8))]
    caplog.set_level("DEBUG", logger="bmsbank.services.publisher.can_sender")
    attempts = []
    for _ in range(200):  # 100 s of 0.5 s ticks with the interface missing
        before = sender.errors
        assert sender.send_all(frames) == 0
        if sender.errors > before:
            attempts.append(clock.now - 100.0)
        clock.now += 0.5
    assert attempts[:6] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]  # 1, 2, 4, 8, 16 s ...
    assert attempts[6] - attempts[5] == 30.0  # ... capped at 30 s
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert sender.up is False and sender.bus is None

    # the adapter comes back: one INFO, backoff reset
    channel = f"sendertest-{uuid.uuid4().hex}"
    reader = can.Bus(interface="virtual", channel=channel)
    try:
        sender.config = CanConfig(enabled=True, interface="virtual", channel=channel)
        caplog.clear()
        clock.now += 30.0
        sent = canbms.frames(make_bank(cvl=58.1, ccl=110, dcl=110, low_voltage=0.0), sender.config)
        assert sender.send_all(sent) == len(sent) == 18
        first = reader.recv(1.0)
        assert first is not None and first.arbitration_id == 0x351
        assert bytes(first.data) == bytes.fromhex("45 02 4c 04 4c 04 00 00")
        assert [r.levelname for r in caplog.records if r.levelname != "DEBUG"] == ["INFO"]
        assert sender.up is True and sender.backoff == 1.0

        # a write error: closed, one WARNING, retried after 1 s with a fresh bus
        broken = BrokenBus()
        sender.bus = broken  # type: ignore[assignment]
        caplog.clear()
        assert sender.send_all(frames) == 0
        assert broken.closed and sender.bus is None and sender.up is False
        assert sender.send_all(frames) == 0  # still backing off
        clock.now += 1.0
        assert sender.send_all(frames) == 1
        assert [r.levelname for r in caplog.records if r.levelname != "DEBUG"] == [
            "WARNING",
            "INFO",
        ]
    finally:
        sender.close()
        reader.shutdown()


# ---- as a process -------------------------------------------------------------------------------


def test_config_error_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[dbus]\nservice = 'org.example'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bmsbank.services.publisher", "--config", str(bad)],
        capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "dbus.service" in proc.stderr


def test_process_publishes_and_stops_on_sigterm(tmp_path, dbus_address):
    async def scenario():
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        pub.bind("tcp://127.0.0.1:*")
        tap = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        config = write_config(tmp_path, tap, None)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=dbus_address)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bmsbank.services.publisher", "--config", config, env=env,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with Client(dbus_address) as c:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    await pub.send_multipart([TOPIC_BANK, pack(bank(soc=42.0))])
                    reply = await c.call("/Soc", "GetValue")
                    if reply.message_type.name == "METHOD_RETURN":
                        if reply.body[0] == Variant("d", 42.0):
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the publisher never showed /Soc = 42")
                proc.terminate()
                _, err = await asyncio.wait_for(proc.communicate(), 10)
                names = (await c.dbus("ListNames")).body[0]
                return proc.returncode, err.decode(), names
        finally:
            if proc.returncode is None:
                proc.kill()
            pub.close(linger=0)
            ctx.term()

    code, err, names = run(scenario())
    assert code == 0, err
    assert NAME not in names
    assert "publisher stopped" in err
    assert "Traceback" not in err


@pytest.fixture(autouse=True)
def _no_system_bus(monkeypatch):
    # The in-process publisher gets the private bus explicitly; never reach for a real one.
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)


def test_can_port_state_and_force_charge_on_dbus(tmp_path, dbus_address):
    async def scenario():
        extra = "force_charge_soc = 20.0\nforce_charge_after = 1.0\nforce_charge_release = 30.0"
        async with Rig(tmp_path, dbus_address, can_extra=extra) as rig:
            low = bank(soc=15.0)
            await rig.until("/Soc", Variant("d", 15.0), low)
            assert await rig.value("/CanBms/Listening") == Variant("i", 0)  # no GX yet
            await rig.until("/CanBms/Up", Variant("i", 1), low)
            # the GX's keep-alive arrives: an inverter is listening
            rig.can.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
            await rig.until("/CanBms/Listening", Variant("i", 1), low)
            # low SoC for longer than force_charge_after: charge request on D-Bus and in 0x360
            await rig.until("/Info/ChargeRequest", Variant("i", 1), low)
            got = await rig.frames(1.5)
            assert [bytes(m.data)[0] for m in got if m.arbitration_id == 0x360][-1] == 0xFF
            await rig.until("/Info/ChargeRequest", Variant("i", 0), bank(soc=31.0))

    run(scenario(), timeout=25)


def test_can_paths_unknown_without_can(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            await rig.until("/Soc", Variant("d", 50.0), bank(soc=50.0))
            assert (await rig.value("/CanBms/Listening")).signature == "ai"
            assert await rig.value("/Info/ChargeRequest") == Variant("i", 0)

    run(scenario())
