"""The arbiter process under faults of its own: a restart and a stall must cut no limit.

Real parts: the arbiter runs as a process (``python -m bmsbank.services.arbiter``, with
whichever limits engine this run uses) on loopback ZeroMQ; a feeder thread plays four pollers,
pushing each pack's state every poll interval, staggered as a real bus is, and it goes on while
the arbiter is killed, restarted or stopped. Four packs in parallel make the bank's CCL and DCL
four packs' worth: a bank computed before every pack has spoken has less, and the limits then
climb back on their ramp (1 A/s per pack) for many seconds. The poll interval is longer than a
restart takes, so the states that queue while the arbiter is down are not every pack's: the
states a dead arbiter had received are lost with it, and some packs speak again only after the
new one has started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

from bmsbank.config import parse
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack, unpack
from bmsbank.services.arbiter.service import gather_grace
from tests.factories import state_msg
from tests.zmqhelp import free_tcp

PACKS = ["p:1", "p:2", "p:3", "p:4"]
POLL = 2.0  # s between two states of a pack: longer than the arbiter's restart takes
STALE_AFTER = 6.0  # s


class Feeder:
    """Pushes a state for every pack each :data:`POLL` seconds, one pack after the other."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            for pid in PACKS:
                port, addr = pid.split(":")
                with contextlib.suppress(zmq.Again):
                    self.push.send_multipart(
                        [TOPIC_STATE, pack(state_msg(port, int(addr), seq=seq))], zmq.NOBLOCK
                    )
                seq += 1
                if self.stop.wait(POLL / len(PACKS)):
                    return

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)
        self.push.close(0)


@contextlib.contextmanager
def arbiter_setup(tmp_path: Path) -> Iterator[tuple[zmq.Context, str, str, Path]]:
    """A config for four parallel packs on loopback: (context, states, tap, config file)."""
    states, tap, control = free_tcp(), free_tcp(), free_tcp()
    strings = ", ".join(f'["{p}"]' for p in PACKS)
    path = tmp_path / "bmsbank.toml"
    path.write_text(
        f'[bank]\ninterval = 0.25\nstale_after = {STALE_AFTER}\nstate_file = ""\n'
        f"strings = [{strings}]\n"
        f'[zmq]\nstates = "{states}"\ntap = "{tap}"\ncontrol = "{control}"\n'
    )
    ctx = zmq.Context()
    try:
        yield ctx, states, tap, path
    finally:
        ctx.term()


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bmsbank.services.arbiter", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    _, err = proc.communicate(timeout=10)
    return err


def banks(sub: zmq.Socket, seconds: float) -> list[dict]:
    """Every bank on the tap for ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sub.poll(max(1, int(left * 1000))):
            topic, body = sub.recv_multipart()
            if topic == TOPIC_BANK:
                out.append(unpack(body))
    return out


def steady(sub: zmq.Socket) -> tuple[float, float]:
    """CCL and DCL once every pack is online and two banks in a row agree."""
    deadline = time.monotonic() + 15.0
    last = None
    while time.monotonic() < deadline:
        for bank in banks(sub, 0.3):
            now = (bank["online"], bank["ccl"], bank["dcl"])
            if now[0] == len(PACKS) and now == last:
                return now[1], now[2]
            last = now
    raise AssertionError("the bank never settled with every pack online")


def subscriber(ctx: zmq.Context, tap: str) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
    sub.connect(tap)
    return sub


def test_a_restarted_arbiter_cuts_no_limit(tmp_path):
    with arbiter_setup(tmp_path) as (ctx, states, tap, config), Feeder(ctx, states):
        sub = subscriber(ctx, tap)
        first = start(config)
        second = None
        try:
            ccl, dcl = steady(sub)
            assert ccl > 0.0 and dcl > 0.0
            first.kill()  # kill -9: no shutdown path
            first.wait(10)
            time.sleep(0.3)  # the feeder goes on; its states queue
            second = start(config)
            after = banks(sub, 4.0)
            assert len(after) >= 8, "the restarted arbiter published no banks"
            assert after[0]["seq"] <= 3  # its first banks (the subscriber may miss a connect)
            assert [(b["online"], b["ccl"], b["dcl"]) for b in after] == [
                (len(PACKS), ccl, dcl)
            ] * len(after)
        finally:
            sub.close(0)
            stop(first)
            if second is not None:
                stop(second)


def test_a_stalled_arbiter_reads_what_queued_before_judging_the_packs(tmp_path):
    with arbiter_setup(tmp_path) as (ctx, states, tap, config), Feeder(ctx, states):
        sub = subscriber(ctx, tap)
        proc = start(config)
        try:
            ccl, dcl = steady(sub)
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(STALE_AFTER + 1.5)  # longer than stale_after; the states queue meanwhile
            banks(sub, 0.0)
            os.kill(proc.pid, signal.SIGCONT)
            after = banks(sub, 3.0)
            assert len(after) >= 5, "no banks after the stall"
            assert [(b["online"], b["ccl"], b["dcl"]) for b in after] == [
                (len(PACKS), ccl, dcl)
            ] * len(after)
        finally:
            sub.close(0)
            err = stop(proc)
        assert "stalled for" in err  # it noticed, and said so once
        assert err.count("offline") == 0, err


def test_a_pack_that_never_reports_does_not_hold_back_the_first_bank(tmp_path):
    missing = 1
    with arbiter_setup(tmp_path) as (ctx, states, tap, config):
        sub = subscriber(ctx, tap)
        proc = start(config)
        try:
            time.sleep(0.5)  # let the subscription through before any bank
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(states)
            for pid in PACKS[missing:]:
                port, addr = pid.split(":")
                push.send_multipart([TOPIC_STATE, pack(state_msg(port, int(addr)))])
            got = banks(sub, 3.0)
            push.close(0)
            assert got and got[0]["seq"] == 1
            assert got[0]["online"] == len(PACKS) - missing  # published without the silent one
        finally:
            sub.close(0)
            stop(proc)


def test_the_grace_covers_two_poll_cycles_and_stays_under_half_of_stale_after():
    def grace(stale_after: float, *ports: tuple[float, int]) -> float:
        table = [
            {
                "name": f"p{i}",
                "device": f"/dev/ttyUSB{i}",
                "bms": "jkpb",
                "interval": every,
                "timeout": 0.1,
                "addresses": list(range(1, packs + 1)),
            }
            for i, (every, packs) in enumerate(ports)
        ]
        return gather_grace(parse({"bank": {"stale_after": stale_after}, "ports": table}, "test"))

    assert grace(10.0) == 2.0  # no port here (remote pollers): two default intervals
    assert grace(30.0, (1.0, 1)) == 2.0
    assert grace(20.0, (1.0, 1), (3.0, 1)) == 6.0  # the slowest port's two intervals
    assert grace(30.0, (1.0, 15)) == 7.5  # 15 packs on a bus take longer than its interval
    assert grace(10.0, (1.0, 15)) == 5.0  # never more than half of stale_after
    assert grace(2.5, (1.0, 1)) == 1.25
