"""The watchdog: hung services are killed and restarted by a real supervisord.

A small installation (tests/ministack.py: a simulated JBD pack, its poller, the arbiter, the
publisher on a private dbus-daemon, CAN over slcan) runs under supervisord with the watchdog
listener as ``bmsbank supervisor-config`` renders it. Services are hung with SIGSTOP, which no
process can catch: only the heartbeat's silence gives them away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from bmsbank import runtime
from bmsbank.watchdog import Beat, read_beat
from tests.ministack import Stack, has_owner, limits, run

pytestmark = pytest.mark.timeout(180)

STALE_AFTER = 3.0
MUTE_GRACE = 4.0  # s the watchdog gives the never-beating program "mute" after its start


@pytest.fixture(scope="module")
def stack():
    s = Stack(stale_after=STALE_AFTER, mute_grace=MUTE_GRACE).start()
    try:
        yield s
    finally:
        s.close()


async def connect(stack: Stack) -> MessageBus:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await MessageBus(bus_address=stack.bus_address).connect()
        except OSError:  # the private dbus-daemon is not up yet
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)


async def until_flowing(bus: MessageBus, timeout: float = 60.0) -> tuple[float, float]:
    """Wait for the bank on D-Bus with limits that are not the safe state (CCL, DCL > 0)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await limits(bus) if await has_owner(bus) else None
        if got is not None and got[0] > 0 and got[1] > 0:
            return got
        assert time.monotonic() < deadline, f"no live limits on D-Bus (last: {got})"
        await asyncio.sleep(0.2)


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_heartbeat_files_promise_a_deadline_for_every_service(stack):
    for program in ("arbiter", "publisher", "poller-shared"):
        pid = stack.pid(program)
        path = runtime.heartbeat_path(str(stack.rundir), program)
        beat = None
        deadline = time.monotonic() + 30
        while beat is None or beat.pid != pid:
            assert time.monotonic() < deadline, f"no heartbeat from {program}"
            time.sleep(0.1)
            beat = read_beat(path)
        # a promise on the shared monotonic clock, a little ahead of now
        assert time.monotonic() < beat.deadline <= time.monotonic() + 2 * STALE_AFTER + 1


def test_hung_publisher_leaves_dbus_within_stale_after_and_comes_back(stack):
    async def scenario():
        bus = await connect(stack)
        try:
            await until_flowing(bus)
            pid = stack.pid("publisher")
            os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                while await has_owner(bus):  # a stopped owner keeps its name until it dies
                    assert time.monotonic() - stopped < 30, "the hung publisher stays on D-Bus"
                    await asyncio.sleep(0.02)
                gone = time.monotonic() - stopped
            finally:
                kill(pid)
            again = await until_flowing(bus)  # a fresh publisher with the real limits
            return pid, gone, again
        finally:
            bus.disconnect()

    pid, gone, again = run(scenario())
    assert gone <= STALE_AFTER + 1.0, gone  # its non-safe limits vanished in time
    assert stack.pid("publisher") != pid
    assert again[0] > 0 and again[1] > 0
    assert f"publisher (pid {pid}) hung" in stack.log("watchdog")


def test_hung_arbiter_and_poller_are_restarted_and_the_bank_recovers(stack):
    async def scenario():
        bus = await connect(stack)
        try:
            await until_flowing(bus)
            publisher = stack.pid("publisher")
            hung = {name: stack.pid(name) for name in ("arbiter", "poller-shared")}
            for pid in hung.values():
                os.kill(pid, signal.SIGSTOP)
            try:
                # the publisher sees no bank: safe state after stale_after (it is alive)
                deadline = time.monotonic() + 30
                while await limits(bus) != (0.0, 0.0):
                    assert time.monotonic() < deadline, "no safe state without the arbiter"
                    await asyncio.sleep(0.1)
                # both restarted within hung_after (twice stale_after) and a little
                deadline = time.monotonic() + 30
                while any(stack.pid(n) == pid for n, pid in hung.items()):
                    assert time.monotonic() < deadline, "the hung services were not restarted"
                    await asyncio.sleep(0.2)
            finally:
                for pid in hung.values():
                    kill(pid)
            await until_flowing(bus)  # the bank is back
            return hung, publisher
        finally:
            bus.disconnect()

    hung, publisher = run(scenario())
    log = stack.log("watchdog")
    for name, pid in hung.items():
        assert f"{name} (pid {pid}) hung" in log
    # the publisher in its safe state was alive and said so: not killed
    assert stack.pid("publisher") == publisher


def test_a_process_that_never_beats_is_killed_after_the_start_grace(stack):
    first = stack.pid("mute")
    deadline = time.monotonic() + MUTE_GRACE + 30
    while stack.pid("mute") == first:
        assert time.monotonic() < deadline, "a silent process was never restarted"
        time.sleep(0.2)
    assert f"mute (pid {first}) hung: no heartbeat within {MUTE_GRACE:g} s of its start" in (
        stack.log("watchdog")
    )


def test_heartbeat_file_round_trip_and_clean_removal(tmp_path):
    off = runtime.Heartbeat(str(tmp_path), None)  # not under supervisord: writes nothing
    off.beat(123.0)
    assert not off.enabled and not (tmp_path / runtime.HEARTBEAT_DIR).exists()
    beat = runtime.Heartbeat(str(tmp_path), "publisher")
    beat.beat(1234.5678)
    path = runtime.heartbeat_path(str(tmp_path), "publisher")
    assert read_beat(path) == Beat(os.getpid(), 1234.568)
    assert os.listdir(tmp_path / runtime.HEARTBEAT_DIR) == ["publisher"]  # no temporary left
    Path(path).write_text("999999 1.0\n")  # a newer process's file: not ours to remove
    beat.close()
    assert read_beat(path) == Beat(999999, 1.0)
    beat.beat(5.0)  # after close: nothing
    assert read_beat(path) == Beat(999999, 1.0)
    mine = runtime.Heartbeat(str(tmp_path), "publisher")
    mine.beat(2.0)
    mine.close()
    assert not os.path.exists(path)
    Path(path).write_text("not a beat")
    assert read_beat(path) is None
