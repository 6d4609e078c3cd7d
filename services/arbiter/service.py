"""The arbiter's loop: pull states, keep the registry, publish a bank every interval.

Sockets: a PULL socket bound at ``states_endpoint`` (pollers connect and push; PUSH/PULL does not
drop while both ends are up), a PUB socket bound at ``tap_endpoint`` carrying every accepted
state (topic ``state``) and every bank (topic ``bank``), and the control ROUTER bound at
``control_endpoint`` (:mod:`bmsbank.services.arbiter.control`). The tap is read-only by
construction: a subscriber cannot send anything back on it; the control channel is the only
path backwards, and one ``zmq.Poller`` serves all of them without starving the bank tick.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import zmq

from bmsbank.config import Config
from bmsbank.errors import MessageError
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack, unpack
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.control import ControlRouter
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.services.arbiter.persist import StateFile

log = logging.getLogger(__name__)

SAVE_EVERY = 60.0  # s between state-file writes (flash wear on a GX vs. what a crash may lose)


def _prepare(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        os.makedirs(os.path.dirname(endpoint[len("ipc://") :]) or ".", exist_ok=True)


class Arbiter:
    """Owns the sockets, the registry and the bank computer."""

    def __init__(self, config: Config, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        now = time.monotonic()
        self.engine = BankEngine(config.bank, config.topology())
        self.registry = self.engine.registry
        self.bank = BankComputer(self.engine, config.bank.name, now)
        self.state_file = StateFile(config.bank.state_file)
        snap = self.state_file.load()
        if snap is not None:
            self.engine.restore(now, snap)
            log.info("restored days since full charge and SoC from %s", config.bank.state_file)
        self.next_save = now + SAVE_EVERY
        for endpoint in (config.states_endpoint, config.tap_endpoint, config.control_endpoint):
            _prepare(endpoint)
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 10000)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(config.states_endpoint)
        self.tap = self.context.socket(zmq.PUB)
        self.tap.setsockopt(zmq.SNDHWM, 10000)
        self.tap.setsockopt(zmq.LINGER, 0)
        self.tap.bind(config.tap_endpoint)
        self.control = ControlRouter(config.control_endpoint, self.registry.packs, self.context)
        self.next_bank = now + min(0.5, config.bank.interval)

    def handle(self, parts: list[bytes], now: float) -> None:
        """Accept one message from a poller; forward it to the tap when it validates."""
        if len(parts) != 2 or parts[0] != TOPIC_STATE:
            self.registry.counters.rejected += 1
            log.warning("rejected message with %d part(s), topic %r", len(parts), parts[:1])
            return
        try:
            msg = unpack(parts[1])
        except MessageError as exc:
            self.registry.counters.rejected += 1
            log.warning("rejected state: %s", exc)
            return
        if self.registry.accept(msg, now) is not None:
            self.tap.send_multipart([TOPIC_STATE, parts[1]])

    def publish_bank(self, now: float) -> dict:
        """Refresh freshness, compute the bank and publish it."""
        bank = self.bank.compute(now)
        bank["counters"]["control"] = self.control.counters.as_dict()
        self.tap.send_multipart([TOPIC_BANK, pack(bank)])
        if now >= self.next_save:
            self.state_file.save(self.engine.snapshot())
            self.next_save = now + SAVE_EVERY
        return bank

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Serve until ``stop()`` is true (or SystemExit from a signal)."""
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.control.socket, zmq.POLLIN)
        while not stop():
            now = time.monotonic()
            if now >= self.next_bank:
                self.publish_bank(now)
                # Keep a steady cadence; skip missed ticks instead of bursting after a stall.
                self.next_bank += self.config.bank.interval
                if self.next_bank <= now:
                    self.next_bank = now + self.config.bank.interval
            self.control.expire(now)
            deadline = self.control.next_deadline()
            wake = self.next_bank if deadline is None else min(self.next_bank, deadline)
            timeout_ms = max(0, int((wake - time.monotonic()) * 1000) + 1)
            for _ in range(1000):  # drain what is queued, but never starve the bank tick
                events = dict(poller.poll(timeout_ms))
                if not events:
                    break
                if self.pull in events:
                    self.handle(self.pull.recv_multipart(), time.monotonic())
                if self.control.socket in events:
                    self.control.receive(time.monotonic())
                if time.monotonic() >= self.next_bank:
                    break  # a flood waits for the next pass; the bank is due
                timeout_ms = 0

    def close(self) -> None:
        """Save the engine's memory and close the sockets."""
        if self.engine.ticks:
            self.state_file.save(self.engine.snapshot())
        self.pull.close()
        self.tap.close()
        self.control.close()
