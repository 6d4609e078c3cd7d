"""The control channel end to end: requester -> arbiter -> poller -> simulated BMS -> result.

Real ZeroMQ sockets on ipc:// in a private directory, real pyserial on pseudo-terminals with the
simulators behind them, the arbiter and pollers in threads (as ``run`` loops, the same code the
services run).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from bmsbank import control
from bmsbank.config import Config, parse
from bmsbank.schema import (
    TOPIC_BANK,
    TOPIC_CONTROL,
    TOPIC_CONTROL_RESULT,
    TOPIC_HELLO,
    TOPIC_STATE,
    control_request,
    pack,
    unpack,
    validate_control_result,
)
from bmsbank.services.arbiter.service import Arbiter
from bmsbank.services.poller import plugins
from bmsbank.services.poller.service import run
from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer

HELLO = 0.3  # s between hellos in these tests (5 s in service)
WAIT = 15.0  # s, generous bound for conditions on a loaded machine


def wait_for(condition: Callable[[], Any], timeout: float = WAIT, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(step)
    raise AssertionError("condition not met in time")


class Stack:
    """Simulated packs on ptys, an arbiter and one poller per port, all in one runtime dir."""

    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.models = {
            "jbd1": {1: BatteryModel(current=6.0, soc=55.0)},
            "bus": {a: BatteryModel(current=2.0, soc=99.0, imbalance=0.05) for a in (1, 2, 3)},
        }
        self.sims = {
            "jbd1": PtyServer(create("jbd", self.models["jbd1"]), link=f"{rundir}/tty-jbd1",
                              model_wire=False).start(),
            "bus": PtyServer(create("jkpb", self.models["bus"]), link=f"{rundir}/tty-bus",
                             model_wire=False).start(),
        }  # fmt: skip
        self.sims["bus"].sim.echo = True  # a CH341 adapter echoing every request
        ports = [
            {"name": "jbd1", "device": f"{rundir}/tty-jbd1", "bms": "jbd", "interval": 0.2,
             "timeout": 0.3},
            {"name": "bus", "device": f"{rundir}/tty-bus", "bms": "jkpb", "addresses": [1, 2, 3],
             "interval": 0.2, "timeout": 0.3, "command_gap": 0.01},
        ]  # fmt: skip
        bank = {"interval": 0.2, "state_file": "", "stale_after": 5.0}
        self.config: Config = parse(
            {"runtime_dir": rundir, "bank": bank, "ports": ports}, f"{rundir}/bmsbank.toml"
        )
        self.context = zmq.Context()
        self.arbiter: Arbiter | None = None
        self._arbiter_stop = threading.Event()
        self._arbiter_thread: threading.Thread | None = None
        self.pollers: dict[str, tuple[threading.Event, threading.Thread]] = {}

    @property
    def endpoint(self) -> str:
        return self.config.control_endpoint

    def start_arbiter(self) -> Arbiter:
        self.arbiter = Arbiter(self.config, self.context)
        self._arbiter_stop = threading.Event()
        self._arbiter_thread = threading.Thread(
            target=self.arbiter.run, args=(self._arbiter_stop.is_set,), daemon=True
        )
        self._arbiter_thread.start()
        return self.arbiter

    def stop_arbiter(self) -> None:
        assert self.arbiter is not None and self._arbiter_thread is not None
        self._arbiter_stop.set()
        self._arbiter_thread.join(5)
        assert not self._arbiter_thread.is_alive()
        self.arbiter.close()

    def start_poller(self, port: str) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(self.config, port, stop.is_set, HELLO),
                                  daemon=True)  # fmt: skip
        thread.start()
        self.pollers[port] = (stop, thread)

    def stop_poller(self, port: str) -> None:
        stop, thread = self.pollers.pop(port)
        stop.set()
        thread.join(5)
        assert not thread.is_alive()

    def subscribe(self) -> zmq.Socket:
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.config.tap_endpoint)
        return sub

    def close(self) -> None:
        for port in list(self.pollers):
            self.stop_poller(port)
        if self._arbiter_thread is not None and self._arbiter_thread.is_alive():
            self.stop_arbiter()
        for sim in self.sims.values():
            sim.stop()
        self.context.term()


@pytest.fixture
def stack() -> Iterator[Stack]:
    rundir = tempfile.mkdtemp(prefix="bmsctl", dir="/tmp")  # short: ipc paths max ~107 bytes
    s = Stack(rundir)
    try:
        s.start_arbiter()
        for port in ("jbd1", "bus"):
            s.start_poller(port)
        wait_for(lambda: {"jbd1", "bus"} <= set(s.arbiter.control.pollers))  # type: ignore[union-attr]
        yield s
    finally:
        s.close()
        shutil.rmtree(rundir, ignore_errors=True)


def next_message(sub: zmq.Socket, topic: bytes, pred: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if sub.poll(100):
            got, body = sub.recv_multipart()
            msg = unpack(body)
            if got == topic and pred(msg):
                return msg
    raise AssertionError(f"no matching {topic!r} message")


def ask(stack: Stack, pack_id: str, action: str, value: Any, timeout: float = 6.0) -> dict:
    return control.request(stack.endpoint, pack_id, action, value, timeout)


# -- the happy path ----------------------------------------------------------------------------
def test_charge_off_reaches_the_bms_and_the_next_state_shows_it(stack: Stack) -> None:
    sub = stack.subscribe()
    next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "jbd1:1" and s["current"] > 5)
    started = time.monotonic()
    result = ask(stack, "jbd1:1", "charge", False)
    assert result["ok"] and result["error"] is None, result
    assert (result["pack"], result["action"]) == ("jbd1:1", "charge")
    assert time.monotonic() - started < 3.0
    state = next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "jbd1:1" and not s["charge_fet"])
    assert state["discharge_fet"] and state["current"] == 0.0  # no charge current flows
    assert ask(stack, "jbd1:1", "charge", True)["ok"]
    next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "jbd1:1" and s["current"] > 5)
    bank = next_message(sub, TOPIC_BANK, lambda b: b["counters"]["control"]["ok"] >= 2)
    assert bank["counters"]["control"]["forwarded"] == 2
    sub.close(0)


def test_jk_bus_switches_reach_one_pack_through_the_echo(stack: Stack) -> None:
    sub = stack.subscribe()
    assert ask(stack, "bus:2", "balance", False)["ok"]
    assert ask(stack, "bus:3", "discharge", False)["ok"]
    two = next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "bus:2" and not any(s["balancing"]))
    assert two["charge_fet"] and two["discharge_fet"]
    three = next_message(
        sub, TOPIC_STATE, lambda s: s["pack"] == "bus:3" and not s["discharge_fet"]
    )
    assert three["charge_fet"] and any(three["balancing"])  # its balancer is still on
    one = next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "bus:1")
    assert one["discharge_fet"] and any(one["balancing"])
    sub.close(0)


def test_reset_soc_on_jbd_and_refusal_on_jk(stack: Stack) -> None:
    stack.models["jbd1"][1].soc_error = 20.0
    sub = stack.subscribe()
    next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "jbd1:1" and s["soc"] == 75.0)
    assert ask(stack, "jbd1:1", "reset_soc", True)["ok"]
    next_message(sub, TOPIC_STATE, lambda s: s["pack"] == "jbd1:1" and s["soc"] == 55.0)
    result = ask(stack, "bus:1", "reset_soc", True)
    assert not result["ok"] and result["error"] == "jkpb does not support reset_soc"
    assert plugins.controls("jkpb") == {"charge", "discharge", "balance"}
    assert control.supported_actions("jbd") == {"charge", "discharge", "balance", "reset_soc"}
    assert control.supported_actions("nonesuch") == frozenset()
    sub.close(0)


# -- refusals that come back at once -----------------------------------------------------------
def test_unknown_pack_and_silent_bms(stack: Stack) -> None:
    started = time.monotonic()
    result = ask(stack, "bus:9", "charge", False)
    assert not result["ok"] and result["error"].startswith("pack bus:9 is not configured")
    assert time.monotonic() - started < 2.0
    stack.sims["jbd1"].silent = True
    result = ask(stack, "jbd1:1", "discharge", False)
    assert not result["ok"] and result["error"] == "pack jbd1:1 did not acknowledge within 0.3 s"


def test_malformed_requests_are_answered_counted_and_survived(stack: Stack) -> None:
    assert stack.arbiter is not None
    dealer = stack.context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(stack.endpoint)
    bad_request = {"v": 1, "kind": "control", "id": "bad-1", "pack": "jbd1:1",
                   "action": "explode", "value": True}  # fmt: skip
    answered = [
        [TOPIC_CONTROL, b"\xc1 not msgpack"],
        [TOPIC_CONTROL, pack(bad_request)],
        [TOPIC_CONTROL, pack({**bad_request, "action": "charge", "value": float("nan")})],
        [TOPIC_CONTROL, pack([1, 2, 3])],
        [TOPIC_CONTROL, b"x" * 5000],
        [TOPIC_CONTROL],
    ]
    silent = [
        [b"nonsense", b""],
        [TOPIC_CONTROL_RESULT, pack({"v": 1, "kind": "control_result", "id": 5})],
        [
            TOPIC_HELLO,
            pack({"v": 1, "kind": "hello", "port": "jbd1", "bms": "jbd", "packs": ["bus:1"]}),
        ],  # fmt: skip
    ]
    for parts in answered + silent:
        dealer.send_multipart(parts)
    replies = []
    while len(replies) < len(answered):
        assert dealer.poll(int(WAIT * 1000)), f"only {len(replies)} replies"
        topic, body = dealer.recv_multipart()
        assert topic == TOPIC_CONTROL_RESULT
        replies.append(validate_control_result(unpack(body)))
    assert all(not r["ok"] and r["error"].startswith("malformed request") for r in replies)
    assert replies[1]["id"] == "bad-1" and "action" in replies[1]["error"]
    assert "value" in replies[2]["error"]
    counters = stack.arbiter.control.counters
    wait_for(lambda: counters.rejected == len(answered) + len(silent))
    assert ask(stack, "jbd1:1", "balance", True)["ok"]  # the arbiter carries on
    assert stack.arbiter.control.pollers["jbd1"].packs == {
        "jbd1:1"
    }  # the bad hello changed nothing
    dealer.close(0)


def test_poller_down_gets_a_prompt_answer(stack: Stack) -> None:
    stack.stop_poller("jbd1")
    started = time.monotonic()
    result = ask(stack, "jbd1:1", "charge", False, timeout=2.0)
    assert not result["ok"] and time.monotonic() - started < 3.0
    assert result["error"] in ("poller jbd1 is not connected",
                               "no reply from poller jbd1 within 1.5 s")  # fmt: skip
    # A poller that announces itself but never answers: the arbiter's own timeout.
    mute = stack.context.socket(zmq.DEALER)
    mute.setsockopt(zmq.LINGER, 0)
    mute.connect(stack.endpoint)
    hello = {"v": 1, "kind": "hello", "port": "jbd1", "bms": "jbd", "packs": ["jbd1:1"]}
    mute.send_multipart([TOPIC_HELLO, pack(hello)])
    assert stack.arbiter is not None
    wait_for(lambda: "jbd1" in stack.arbiter.control.pollers)  # type: ignore[union-attr]
    started = time.monotonic()
    result = ask(stack, "jbd1:1", "charge", False, timeout=2.0)
    elapsed = time.monotonic() - started
    assert result["error"] == "no reply from poller jbd1 within 1.5 s" and elapsed < 2.5
    assert mute.poll(1000) and mute.recv_multipart()[0] == TOPIC_CONTROL  # it was forwarded
    mute.close(0)


def test_arbiter_restart_relearns_the_pollers(stack: Stack) -> None:
    stack.stop_arbiter()
    result = ask(stack, "bus:1", "charge", False, timeout=2.0)
    assert not result["ok"] and result["error"].startswith(("arbiter not reachable", "no reply"))
    arbiter = stack.start_arbiter()
    wait_for(lambda: {"jbd1", "bus"} <= set(arbiter.control.pollers))  # re-announced
    assert ask(stack, "bus:1", "charge", False)["ok"]
    assert not stack.models["bus"][1].charge_fet


def test_several_requesters_at_once_get_their_own_replies(stack: Stack) -> None:
    work = [
        ("bus:1", "balance", False),
        ("bus:2", "charge", False),
        ("bus:3", "discharge", False),
        ("jbd1:1", "balance", False),
        ("bus:9", "charge", True),
        ("bus:1", "reset_soc", True),
    ]

    async def requester(item: tuple[str, str, Any]) -> dict:
        async with control.ControlClient(stack.endpoint) as client:
            return await client.request(*item)

    async def one_client() -> list[dict]:
        async with control.ControlClient(stack.endpoint) as client:
            return list(await asyncio.gather(*(client.request(*w) for w in work)))

    async def everyone() -> tuple[list[dict], list[dict]]:
        separate = asyncio.gather(*(requester(w) for w in work))
        shared = one_client()
        return tuple(await asyncio.gather(separate, shared))  # type: ignore[return-value]

    threaded: list[dict] = []
    sync = threading.Thread(target=lambda: threaded.append(ask(stack, "bus:2", "balance", False)))
    sync.start()
    for results in asyncio.run(everyone()):
        assert [(r["pack"], r["action"]) for r in results] == [(p, a) for p, a, _ in work]
        assert [r["ok"] for r in results] == [True, True, True, True, False, False]
        assert len({r["id"] for r in results}) == len(work)
    sync.join(WAIT)
    assert threaded and threaded[0]["ok"] and threaded[0]["pack"] == "bus:2"


def test_client_without_arbiter_and_bad_arguments() -> None:
    endpoint = f"ipc://{tempfile.gettempdir()}/bmsctl-nobody-{time.monotonic_ns()}.ipc"
    started = time.monotonic()
    result = control.request(endpoint, "p:1", "charge", True, timeout=0.5)
    assert result == {"v": 1, "kind": "control_result", "id": result["id"], "pack": "p:1",
                      "action": "charge", "ok": False,
                      "error": f"arbiter not reachable at {endpoint}"}  # fmt: skip
    assert time.monotonic() - started < 1.5

    async def asynchronous() -> dict:
        async with control.ControlClient(endpoint) as client:
            return await client.request("p:1", "discharge", True, timeout=0.5)

    assert asyncio.run(asynchronous())["error"] == f"arbiter not reachable at {endpoint}"
    for args in (("p1", "charge", True), ("p:1", "fly", True), ("p:1", "charge", 1),
                 ("p:1", "reset_soc", 50)):  # fmt: skip
        with pytest.raises(ValueError):
            control.request(endpoint, *args)
    with pytest.raises(ValueError, match="timeout"):
        control.request(endpoint, "p:1", "charge", True, timeout=600)
    assert control_request("x", "p:1", "charge", True)["value"] is True


# -- the poller's end, against a stand-in arbiter ----------------------------------------------
def test_poller_control_survives_malformed_requests_and_honours_expiry() -> None:
    from bmsbank.services.poller.control import PollerControl

    rundir = tempfile.mkdtemp(prefix="bmsctl", dir="/tmp")
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{rundir}/control.ipc")
    done: list[tuple[str, str, Any]] = []

    def execute(pack_id: str, action: str, value: Any) -> str | None:
        done.append((pack_id, action, value))
        if action == "discharge":
            raise RuntimeError("a plugin defect")
        return None if action == "charge" else "jbd does not like that"

    poller = PollerControl(f"ipc://{rundir}/control.ipc", "p", "jbd", ["p:1"], context, 0.2)
    try:
        poller.service(execute)
        assert router.poll(int(WAIT * 1000))
        identity, topic, body = router.recv_multipart()
        assert topic == TOPIC_HELLO and unpack(body)["packs"] == ["p:1"]
        good = control_request("k1", "p:1", "charge", False)
        for parts in (
            [TOPIC_CONTROL, b"\xc1"],
            [TOPIC_CONTROL, pack({**good, "value": "off"})],
            [b"weird", b"", b""],
            [TOPIC_CONTROL, pack({**good, "id": "k2", "expires": time.time() - 1})],
            [TOPIC_CONTROL, pack(good)],
            [TOPIC_CONTROL, pack({**good, "id": "k3", "action": "balance"})],
            [TOPIC_CONTROL, pack({**good, "id": "k4", "action": "discharge"})],
        ):
            router.send_multipart([identity, *parts])
        results = []
        deadline = time.monotonic() + WAIT
        while len(results) < 5 and time.monotonic() < deadline:
            poller.wait(0.1, execute, lambda: False)
            while router.poll(0):
                _, topic, body = router.recv_multipart()
                if topic == TOPIC_CONTROL_RESULT:
                    results.append(validate_control_result(unpack(body)))
        assert [(r["id"], r["ok"]) for r in results] == [
            ("k1", False), ("k2", False), ("k1", True), ("k3", False), ("k4", False)]  # fmt: skip
        assert results[0]["error"].startswith("malformed request: value")
        assert results[1]["error"] == "request expired before the poller could carry it out"
        assert results[3]["error"] == "jbd does not like that"
        assert results[4]["error"] == "internal error in the poller: RuntimeError: a plugin defect"
        assert [a for _, a, _ in done] == ["charge", "balance", "discharge"]
        assert (poller.rejected, poller.expired, poller.done) == (3, 1, 3)
    finally:
        poller.close()
        router.close(0)
        context.term()
        shutil.rmtree(rundir, ignore_errors=True)


def test_poller_wait_wakes_for_requests_queued_during_a_cycle_and_drains_a_flood() -> None:
    """The wait asks the socket only when its descriptor says so; nothing queued is left behind."""
    from bmsbank.services.poller import control as pc

    rundir = tempfile.mkdtemp(prefix="bmsctl", dir="/tmp")
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{rundir}/control.ipc")
    done: list[str] = []
    when: list[float] = []

    def execute(pack_id: str, action: str, value: Any) -> str | None:
        done.append(pack_id)
        when.append(time.monotonic())
        return None

    poller = pc.PollerControl(f"ipc://{rundir}/control.ipc", "p", "jbd", ["p:1"], context, 60)
    try:
        poller.service(execute)  # the hello: the router learns the poller's identity
        assert router.poll(int(WAIT * 1000))
        identity = router.recv_multipart()[0]
        # Between two exchanges the socket is asked at most every BETWEEN_EVERY seconds.
        router.send_multipart([identity, TOPIC_CONTROL, pack(control_request("a", "p:1", "charge",
                                                                             True))])  # fmt: skip
        time.sleep(0.05)
        assert poller.between(execute) == 0 and done == []
        time.sleep(pc.BETWEEN_EVERY)
        assert poller.between(execute) == 1 and done == ["p:1"]
        # A request that arrives while the poller is busy (nobody asks the socket) wakes the
        # next wait at once, long before its 5 s are over.
        router.send_multipart([identity, TOPIC_CONTROL, pack(control_request("b", "p:1", "charge",
                                                                             True))])  # fmt: skip
        time.sleep(0.05)
        began = time.monotonic()
        poller.wait(1.5, execute, lambda: len(done) == 2)
        assert len(done) == 2 and when[-1] - began < 0.5
        # More than one ask's worth (DRAIN) queued at once: the wait carries out every one
        # before it sleeps, although the descriptor signalled once.
        flood = 3 * pc.DRAIN + 1
        for k in range(flood):
            router.send_multipart([identity, TOPIC_CONTROL,
                                   pack(control_request(f"f{k}", "p:1", "charge", True))])
        time.sleep(0.2)
        began = time.monotonic()
        poller.wait(1.5, execute, lambda: len(done) == 2 + flood)
        assert len(done) == 2 + flood and when[-1] - began < 0.5
    finally:
        poller.close()
        router.close(0)
        context.term()
        shutil.rmtree(rundir, ignore_errors=True)


# -- the command line --------------------------------------------------------------------------
def bmsbank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_control_exit_codes(stack: Stack) -> None:
    config = f"{stack.rundir}/bmsbank.toml"
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(f'runtime_dir = "{stack.rundir}"\n[[ports]]\nname = "jbd1"\n'
                 f'device = "{stack.rundir}/tty-jbd1"\nbms = "jbd"\n')  # fmt: skip
    out = bmsbank("control", "jbd1:1", "discharge", "off", "--config", config)
    assert out.returncode == 0 and out.stdout == "jbd1:1 discharge off: ok\n", out.stderr
    assert not stack.models["jbd1"][1].discharge_fet
    out = bmsbank("control", "bus:1", "reset_soc", "true", "--endpoint", stack.endpoint)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == "bmsbank: bus:1 reset_soc: jkpb does not support reset_soc\n"
    out = bmsbank("control", "bus:7", "charge", "on", "--endpoint", stack.endpoint)
    assert out.returncode == 1 and "pack bus:7 is not configured" in out.stderr
    out = bmsbank("control", "jbd1:1", "charge", "maybe", "--endpoint", stack.endpoint)
    assert out.returncode == 2 and "charge takes on or off, got 'maybe'" in out.stderr
    out = bmsbank("control", "jbd1:1", "reset_soc", "off", "--endpoint", stack.endpoint)
    assert out.returncode == 2 and "reset_soc takes true" in out.stderr
    out = bmsbank("control", "jbd1", "charge", "on", "--endpoint", stack.endpoint)
    assert out.returncode == 2 and "pack" in out.stderr
    out = bmsbank("control", "jbd1:1", "fly", "on", "--endpoint", stack.endpoint)
    assert out.returncode == 2 and "invalid choice" in out.stderr
