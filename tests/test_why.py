"""Why, everywhere: pollers report their port and links, the arbiter says why per pack.

Real parts: simulated packs on pseudo-terminals, pollers and the arbiter on real ZeroMQ sockets
(the control channel carries the link and health messages), states and banks read from the tap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bmsbank.config import Config, parse
from bmsbank.schema import TOPIC_BANK, TOPIC_HEALTH, TOPIC_LINK, pack, unpack, validate_bank
from bmsbank.services.arbiter.service import Arbiter
from bmsbank.services.poller import plugins
from bmsbank.services.poller.linkstate import FAIL_POLLS
from bmsbank.services.poller.service import run
from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer

WAIT = 15.0  # s, a generous bound on a loaded machine


class ForeignBus:
    """A JK-PB bus that answers whatever it hears with a JK-PB frame (a JK-PB on a JBD port)."""

    def __init__(self) -> None:
        self.inner = create("jkpb", {1: BatteryModel()})
        self.packs = self.inner.packs
        self.baudrate = self.inner.baudrate
        self.trigger = plugins.load("jkpb").queries(1)[0].request

    def feed(self, data: bytes) -> list[bytes]:
        return self.inner.feed(self.trigger) if data else []


class Stack:
    """Ports "ok" (JBD), "gone" (no device), "wrong" (JK-PB frames) and "cells" (16 cells, 4
    configured); an arbiter and a poller per port, in threads, one runtime dir."""

    def __init__(self, rundir: str, stale_after: float = 3.0) -> None:
        self.rundir = rundir
        self.sims: dict[str, PtyServer] = {}
        self.start_sim("ok", create("jbd", {1: BatteryModel(cells=4)}))
        self.start_sim("wrong", ForeignBus())
        self.start_sim("cells", create("jbd", {1: BatteryModel(cells=16)}))
        ports = [{"name": name, "device": f"{rundir}/tty-{name}", "bms": "jbd", "interval": 0.2,
                  "timeout": 0.2} for name in ("ok", "gone", "wrong", "cells")]  # fmt: skip
        packs = {f"{name}:1": {"cells": 4} for name in ("ok", "gone", "wrong", "cells")}
        bank = {"interval": 0.2, "state_file": "", "stale_after": stale_after,
                "strings": [[f"{n}:1"] for n in ("ok", "gone", "wrong", "cells")],
                "packs": packs}  # fmt: skip
        self.config: Config = parse(
            {"runtime_dir": rundir, "bank": bank, "ports": ports}, f"{rundir}/bmsbank.toml"
        )
        self.context = zmq.Context()
        self.arbiter = Arbiter(self.config, self.context)
        self.stops: list[threading.Event] = []
        self.threads: list[threading.Thread] = []
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
        self.sub.connect(self.config.tap_endpoint)

    def start_sim(self, name: str, sim: Any) -> None:
        self.sims[name] = PtyServer(sim, link=f"{self.rundir}/tty-{name}", model_wire=False)
        self.sims[name].start()

    def _thread(self, target: Any, *args: Any) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(*args, stop.is_set), daemon=True)
        thread.start()
        self.stops.append(stop)
        self.threads.append(thread)

    def start_arbiter(self) -> None:
        self._thread(self.arbiter.run)

    def start_pollers(self) -> None:
        for port in ("ok", "gone", "wrong", "cells"):
            self._thread(run, self.config, port)

    def bank(self, pred=lambda b: True, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sub.poll(100):
                bank = validate_bank(unpack(self.sub.recv_multipart()[1]))
                if pred(bank):
                    return bank
        raise AssertionError("no matching bank in time")

    def close(self) -> None:
        for stop in self.stops:
            stop.set()
        for thread in self.threads:
            thread.join(5)
        self.arbiter.close()
        self.sub.close(0)
        for sim in self.sims.values():
            sim.stop()
        self.context.term()


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    rundir = f"/tmp/bmswhy{os.getpid()}{time.monotonic_ns() % 100000}"  # short: socket paths
    os.makedirs(rundir)
    s = Stack(rundir)
    try:
        yield s
    finally:
        s.close()


def by_id(bank: dict) -> dict[str, dict]:
    return {p["id"]: p for p in bank["packs"]}


def reason(pid: str, text: str):
    return lambda b: (by_id(b)[pid]["reason"] or "").startswith(text)


def test_reasons_name_the_cause_in_force(stack):
    stack.start_arbiter()
    first = stack.bank()
    # start-up: no poller yet, every pack is waiting (not OFFLINE)
    assert [p["reason"] for p in first["packs"]] == ["waiting for first state"] * 4
    assert all(p["link"] is None for p in first["packs"])
    stack.start_pollers()
    device = f"{stack.rundir}/tty-gone"
    bank = stack.bank(lambda b: reason("gone:1", f"port {device} missing since ")(b)
                      and reason("wrong:1", "no valid reply")(b)
                      and reason("cells:1", "cells")(b) and by_id(b)["ok:1"]["online"])  # fmt: skip
    packs = by_id(bank)
    assert packs["gone:1"]["reason"] == f"port {device} missing since " + time.strftime(
        "%H:%M", time.localtime(packs["gone:1"]["link"]["since"])
    )
    assert packs["gone:1"]["link"]["state"] == "missing"
    assert packs["wrong:1"]["reason"] == "no valid reply: jkpb frames on a jbd port?"
    assert packs["wrong:1"]["link"]["state"] == "noise"
    assert packs["wrong:1"]["link"]["bad"] + packs["wrong:1"]["link"]["timeouts"] >= FAIL_POLLS
    assert packs["cells:1"]["reason"] == "cells: 16 reported, 4 configured"
    assert packs["cells:1"]["link"]["state"] == "implausible"
    ok = packs["ok:1"]
    assert ok["reason"] is None and ok["link"]["state"] == "answering" and ok["link"]["ok"] > 0
    # the causes go: the adapter is plugged in, the right BMS answers; the reasons clear
    stack.start_sim("gone", create("jbd", {1: BatteryModel(cells=4)}))
    stack.sims["wrong"].stop()
    stack.start_sim("wrong", create("jbd", {1: BatteryModel(cells=4)}))
    bank = stack.bank(lambda b: by_id(b)["gone:1"]["online"] and by_id(b)["wrong:1"]["online"])
    for pid in ("gone:1", "wrong:1"):
        assert by_id(bank)[pid]["reason"] is None
        assert by_id(bank)[pid]["link"]["state"] == "answering"


def test_silent_pack_reason_and_link_message_rate(stack):
    """A pack that stops answering says so; link messages go on change, not per poll."""
    taken = []
    book = stack.arbiter.why
    original = book.take_link
    book.take_link = lambda body, now: taken.append(unpack(body)["port"]) or original(body, now)
    stack.start_arbiter()
    stack.start_pollers()
    stack.bank(lambda b: by_id(b)["ok:1"]["online"])
    stack.sims["ok"].silent = True
    bank = stack.bank(reason("ok:1", "no reply from address 1 since "))
    assert by_id(bank)["ok:1"]["link"]["state"] == "silent"
    assert not by_id(bank)["ok:1"]["online"] or by_id(bank)["ok:1"]["age"] is not None
    stack.sims["ok"].silent = False
    bank = stack.bank(lambda b: by_id(b)["ok:1"]["online"] and by_id(b)["ok:1"]["reason"] is None)
    # some 5 polls a second per port over these seconds, yet only a handful of link messages
    assert taken.count("ok") <= 6, taken


def test_malformed_link_and_health_are_counted_and_dropped(stack):
    stack.start_arbiter()
    dealer = stack.context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(stack.config.control_endpoint)
    good = {"v": 1, "kind": "health",
            "outputs": {"dbus": {"ok": True, "detail": "name owned"}}}  # fmt: skip
    try:
        dealer.send_multipart([TOPIC_LINK, pack({"v": 1, "kind": "link", "port": 5})])
        dealer.send_multipart([TOPIC_HEALTH, b"\xc1 not msgpack"])
        dealer.send_multipart([TOPIC_HEALTH, pack({**good, "outputs": {"dbus": {"ok": "yes"}}})])
        bank = stack.bank(lambda b: b["counters"]["why"]["rejected"] == 3)
        assert bank["counters"]["why"]["links"] == 0 and bank["counters"]["why"]["health"] == 0
        assert bank["counters"]["control"]["rejected"] == 3
        assert bank["outputs"]["dbus"]["ok"] is None  # still unknown: nothing valid came
        dealer.send_multipart([TOPIC_HEALTH, pack(good)])
        bank = stack.bank(lambda b: b["outputs"]["dbus"]["ok"] is True)
        assert bank["outputs"]["dbus"] == {"ok": True, "detail": "name owned",
                                           "age": pytest.approx(0.0, abs=1.0)}  # fmt: skip
        assert bank["outputs"]["can"]["detail"] == "not reported"
    finally:
        dealer.close(0)
