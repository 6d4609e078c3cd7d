"""The publisher under faults of its own: stopped and continued, its loop blocked, CAN deadlines.

The resume test runs the real services under supervisord without the watchdog (which would
kill a publisher stopped that long; tests/test_watchdog.py covers that) and reads D-Bus signals
and the CAN wire the way a GX would. The in-process tests use tests/test_publisher_service.py's
rig: a PUB socket standing in for the arbiter, a private dbus-daemon, python-can's virtual bus.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import threading
import time

import can
import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.ministack import Stack, has_owner, limits, run
from tests.test_publisher_service import STALE_AFTER, Rig, bank

pytestmark = pytest.mark.timeout(180)

IFACE = "com.victronenergy.BusItem"
WATCHED = ("/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent", "/Alarms/BmsCable")


class CanReader:
    """Every 0x351 on the wire, with the time it arrived, read by a thread (the GX's side)."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="slcan", channel=channel, sleep_after_open=0)
        self.frames: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.bus.recv(0.1)
            if msg is not None and msg.arbitration_id == 0x351:
                self.frames.append((time.monotonic(), bytes(msg.data)))

    def limits(self, since: float = 0.0) -> list[tuple[float, float, float]]:
        """(time, CCL, DCL) [s, A, A] of every 0x351 since ``since``."""
        out = []
        for t, data in list(self.frames):
            _cvl, ccl, dcl = struct.unpack("<3H", data[:6])
            if t >= since:
                out.append((t, ccl / 10, dcl / 10))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bus.shutdown()


class DbusRecorder:
    """The values the bank service announces in its signals, as a Venus client sees them."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, object]] = []

    def on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL or msg.interface != IFACE:
            return
        now = time.monotonic()
        if msg.member == "ItemsChanged":
            for path, item in msg.body[0].items():
                if path in WATCHED:
                    self.seen.append((now, path, item["Value"].value))
        elif msg.member == "PropertiesChanged" and msg.path in WATCHED:
            self.seen.append((now, msg.path, msg.body[0]["Value"].value))


def test_a_continued_publisher_sends_no_safe_state_while_the_arbiter_runs():
    stack = Stack(stale_after=3.0, watchdog=False).start()
    reader = None

    async def scenario():
        nonlocal reader
        deadline = time.monotonic() + 30
        while True:
            try:
                bus = await MessageBus(bus_address=stack.bus_address).connect()
                break
            except OSError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        recorder = DbusRecorder()
        bus.add_message_handler(recorder.on_message)
        await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{IFACE}'"],
        ))  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:  # live limits on D-Bus first
                got = await limits(bus) if await has_owner(bus) else None
                if got is not None and min(got) > 0:
                    break
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.2)
            reader = CanReader(stack.can_peer)
            deadline = time.monotonic() + 20
            while not [f for f in reader.limits() if min(f[1:]) > 0]:
                assert time.monotonic() < deadline, "no live 0x351 on the wire"
                await asyncio.sleep(0.1)
            live_from = time.monotonic()
            pid = stack.pid("publisher")
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(stack.stale_after + 2.0)  # far longer than stale_after
            os.kill(pid, signal.SIGCONT)
            continued = time.monotonic()
            await asyncio.sleep(stack.stale_after + 1.0)  # long enough for any verdict
            assert await limits(bus) is not None and min(await limits(bus)) > 0
            return pid, live_from, continued, recorder.seen, stack.pid("publisher")
        finally:
            bus.disconnect()

    try:
        pid, live_from, continued, seen, stack_pid_after = run(scenario())
        frames = reader.limits(live_from)
        log = stack.log("publisher")
    finally:
        if reader is not None:
            reader.close()
        stack.close()
    # no safe state on CAN: not one 0x351 with CCL = DCL = 0; and CAN resumed at once
    assert [f for f in frames if f[1] == f[2] == 0.0] == []
    after = [t for t, *_ in frames if t > continued]
    assert after and after[0] - continued < 1.5, after[:2]
    # nor on D-Bus: no signal with a zero limit or the BMS-cable alarm
    late = [(path, value) for t, path, value in seen if t >= live_from]
    assert ("/Alarms/BmsCable", 2) not in late
    assert [v for p, v in late if p != "/Alarms/BmsCable" and v == 0.0] == []
    assert "continued (SIGCONT)" in log
    assert "safe state" not in log, log
    assert stack_pid_after == pid  # the same process all along (no watchdog here)


def test_first_0x351_goes_out_with_the_first_bank_not_on_a_tick(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_client=False) as rig:
            await asyncio.sleep(0.4)  # between two of the CAN task's idle cycles
            await rig.send(bank(ccl=80.0, dcl=90.0))
            sent = time.monotonic()
            while True:
                msg = await asyncio.to_thread(rig.can.recv, 5.0)
                assert msg is not None, "no CAN frame after the first bank"
                if msg.arbitration_id == 0x351:
                    return time.monotonic() - sent, bytes(msg.data)

    delay, data = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert struct.unpack("<3H", data[:6])[1:] == (800, 900)
    assert delay < 0.35, delay  # at once (a 1 s tick would be ~0.6 s away)


def test_a_blocked_loop_neither_delays_0x351_a_period_nor_fakes_a_stale_bank(
    tmp_path, dbus_address
):
    """The loop blocked longer than stale_after while banks keep coming (a stalled process)."""

    async def scenario():
        async with Rig(tmp_path, dbus_address) as rig:
            live = bank(ccl=70.0, dcl=60.0)
            await rig.until("/Info/MaxChargeCurrent", Variant("d", 70.0), live)
            feeder = asyncio.create_task(rig.feed(live, 0.2))
            reader = asyncio.create_task(rig.frames(STALE_AFTER + 4.0))
            await asyncio.sleep(1.0)
            blocked = time.time()  # wall clock: python-can stamps frames with it
            time.sleep(STALE_AFTER + 0.5)  # nothing in this loop runs meanwhile
            resumed = time.time()
            got = await reader
            feeder.cancel()
            return got, blocked, resumed, rig.publisher.counters

    got, blocked, resumed, counters = asyncio.run(asyncio.wait_for(scenario(), 30))
    limits_351 = [(m.timestamp, struct.unpack("<3H", bytes(m.data)[:6])) for m in got
                  if m.arbitration_id == 0x351]  # fmt: skip
    assert all(v[1:] == (700, 600) for _, v in limits_351), limits_351  # never the safe state
    assert counters.stale == 0
    # the overdue 0x351 went out as soon as the loop ran again, then every period
    after = [t for t, _ in limits_351 if t > blocked]
    first = [t for t in after if t >= resumed - 0.05]
    assert first and first[0] - resumed < 0.3, (first[:1], resumed)
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert gaps and max(gaps) <= 1.3, gaps  # every period (wake-ups late under load)
