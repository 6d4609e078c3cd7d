"""The arbiter's loop: pull states, keep the registry, publish a bank every interval.

Sockets: a PULL socket bound at ``states_endpoint`` (pollers connect and push; PUSH/PULL does not
drop while both ends are up), a PUB socket bound at ``tap_endpoint`` carrying every accepted
state (topic ``state``) and every bank (topic ``bank``), and the control ROUTER bound at
``control_endpoint`` (:mod:`bmsbank.services.arbiter.control`). The tap is read-only by
construction: a subscriber cannot send anything back on it; the control channel is the only
path backwards. States are taken in one burst per bank tick (see :meth:`Arbiter.run`).

A bank computed before the packs have spoken would cut the limits for nothing: with only some
packs online the others' shares are missing, and the limits then climb back on their ramp for
many seconds. So on start, and after a stall (the process stopped, the machine swapped), the
arbiter first *gathers* (:meth:`Arbiter.gather`): it takes states until every configured pack
has reported since then, or a grace period passes (:func:`gather_grace`, at most half of
``stale_after``; the publisher keeps the last bank meanwhile), and only then computes a bank.
After a stall the states that queued meanwhile are read before any pack is judged silent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq

from bmsbank.config import AUTO, Config
from bmsbank.curve import RemoteListener
from bmsbank.errors import MessageError
from bmsbank.schema import MAX_STATE_BYTES, TOPIC_BANK, TOPIC_STATE, pack, unpack
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.control import ControlRouter
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.services.arbiter.persist import CellsFile, StateFile
from bmsbank.services.arbiter.why import WhyBook
from bmsbank.sockets import bind_private

log = logging.getLogger(__name__)

SAVE_EVERY = 60.0  # s between state-file writes (flash wear on a GX vs. what a crash may lose)
#: s between writes of what cell health learnt, when it learnt something: its samples come a
#: few an hour and the file is larger than the state file (flash wear again)
CELLS_SAVE_EVERY = 900.0
STATES_HWM = 1000  # states queued per poller connection (about 15 minutes of one port's)
#: messages queued per tap reader: with states of at most MAX_STATE_BYTES and banks of a few
#: KiB, a reader that stops reading costs the arbiter at most a few MiB
TAP_HWM = 1000
GATHER_MIN = 2.0  # s; the least grace for the packs to report (two default poll intervals)
PER_PACK = 0.25  # s a poll cycle takes per pack on a bus, about (request, reply, gaps)
STALL_MIN = 1.0  # s; a bank tick this late (and at least two intervals) means the loop stalled
MAX_STATES = 10000  # states taken per tick at most
POLLIN = int(zmq.POLLIN)
SNDMORE = int(zmq.SNDMORE)  # a plain int: zmq's enums cost a call each time they are combined


def gather_grace(config: Config) -> float:
    """Seconds to wait for every pack before the first bank (and after a stall).

    Two of the slowest configured poll cycles (at least :data:`GATHER_MIN`), never more than
    half of ``stale_after``, so the publisher's last bank is still fresh when the next comes. A
    cycle is the port's interval, or longer on a bus whose packs take more than that to read
    (:data:`PER_PACK` each).
    """
    slowest = max((max(p.interval, PER_PACK * len(p.addresses)) for p in config.ports), default=1.0)
    return min(0.5 * config.bank.stale_after, max(GATHER_MIN, 2.0 * slowest))


class Arbiter:
    """Owns the sockets, the registry and the bank computer."""

    def __init__(self, config: Config, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        now = time.monotonic()
        families = {f"{p.name}:{a}": "" if p.bms == AUTO else p.bms  # "auto": any family
                    for p in config.ports for a in p.addresses}  # fmt: skip
        self.engine = BankEngine(config.bank, config.topology(), families=families)
        self.registry = self.engine.registry
        self.why = WhyBook(now, max(config.bank.stale_after, gather_grace(config)))
        self.bank = BankComputer(self.engine, config.bank.name, now, self.why)
        self.state_file = StateFile(config.bank.state_file)
        self._restore(now)
        self.next_save = now + SAVE_EVERY
        self.cells_file = CellsFile(config.bank.state_file)
        if self.engine.cells is not None:
            self.cells_file.load_cells(self.engine.cells)
        self.next_cells_save = now + CELLS_SAVE_EVERY
        self.cells_saved = self._cells_learnt()
        self.grace = gather_grace(config)
        self.started = now
        # Memory is bounded by count x size: a peer sending a bigger message is disconnected,
        # a tap reader that stops reading holds at most TAP_HWM messages (then it loses them).
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, STATES_HWM)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_STATE_BYTES)
        self.pull.setsockopt(zmq.LINGER, 0)
        bind_private(self.pull, config.states_endpoint)
        self.tap = self.context.socket(zmq.PUB)
        self.tap.setsockopt(zmq.SNDHWM, TAP_HWM)
        self.tap.setsockopt(zmq.LINGER, 0)
        bind_private(self.tap, config.tap_endpoint)
        self.control = ControlRouter(
            config.control_endpoint, self.registry.packs, self.context, why=self.why
        )
        self.remote: RemoteListener | None = None
        if config.zmq.remote_states:  # pollers on other machines: CURVE with an allow-list
            self.remote = RemoteListener(config.zmq, self.context, STATES_HWM, MAX_STATE_BYTES)
        self.next_bank = now  # after the first gathering (see run)

    def _restore(self, now: float) -> None:
        """Take back the engine's memory from the state file; a file it refuses is ignored."""
        snap = self.state_file.load(self.engine.native.n)
        if snap is None:
            return
        try:
            self.engine.restore(now, snap)
        except ValueError as exc:  # checked on load too: only a file from another bank gets here
            log.warning("state file %s not for this bank, ignored: %s", self.state_file.path, exc)
            return
        log.info("restored days since full charge and SoC from %s", self.state_file.path)

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
        if self.engine.take(msg, now) is not None:
            self.tap.send(TOPIC_STATE, SNDMORE)  # two sends: send_multipart combines enum flags
            self.tap.send(parts[1])

    def publish_bank(self, now: float) -> dict:
        """Refresh freshness, compute the bank and publish it."""
        bank = self.bank.compute(now)
        bank["counters"]["control"] = self.control.counters.as_dict()
        if self.remote is not None:
            bank["counters"]["remote_refused"] = self.remote.count_refused()
        self.tap.send_multipart([TOPIC_BANK, pack(bank)])
        if now >= self.next_save:
            self.state_file.save(self.engine.snapshot())
            self.next_save = now + SAVE_EVERY
        if now >= self.next_cells_save:
            self._save_cells()
            self.next_cells_save = now + CELLS_SAVE_EVERY
        return bank

    def _cells_learnt(self) -> int:
        """A count that grows whenever cell health learns something (0 when it is off)."""
        return 0 if self.engine.cells is None else self.engine.cells.learnt()

    def _save_cells(self) -> None:
        """Write cell health's file when it learnt something since the last write."""
        learnt = self._cells_learnt()
        if self.engine.cells is not None and learnt != self.cells_saved:
            self.cells_file.save_cells(self.engine.cells)
            self.cells_saved = learnt

    def drain_states(self, now: float, limit: int = MAX_STATES) -> int:
        """Take every state queued since the last tick (at most ``limit``); return how many."""
        taken = 0
        while taken < limit and self.pull.get(zmq.EVENTS) & POLLIN:
            self.handle(self.pull.recv_multipart(zmq.NOBLOCK), now)
            taken += 1
        if self.remote is not None:
            remote = self.remote.socket
            while taken < limit and remote.get(zmq.EVENTS) & POLLIN:
                self.handle(remote.recv_multipart(zmq.NOBLOCK), now)
                taken += 1
        return taken

    def reported_since(self, since: float) -> bool:
        """True when every configured pack has sent a good state since monotonic ``since``."""
        return all(e.seen is not None and e.seen >= since for e in self.engine.entries)

    def gather(self, since: float, stop: Callable[[], bool] = lambda: False) -> int:
        """Take states until every pack has reported since ``since`` or the grace has passed.

        Wakes for each arriving state (and serves the control channel); bounded by
        :attr:`grace` from ``since``. Returns the states taken.
        """
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        if self.remote is not None:
            poller.register(self.remote.socket, zmq.POLLIN)
        poller.register(self.control.socket, zmq.POLLIN)
        deadline = since + self.grace
        taken = 0
        while not stop():
            now = time.monotonic()
            taken += self.drain_states(now)
            if self.reported_since(since) or now >= deadline:
                break
            self.control.expire(now)
            ready = dict(poller.poll(max(1, int((deadline - now) * 1000) + 1)))
            if self.control.socket in ready:
                self.control.receive(time.monotonic())
        missing = [e.pack for e in self.engine.entries if e.seen is None or e.seen < since]
        if missing:
            log.info("gathered states for %.1f s; none yet from %s", time.monotonic() - since,
                     ", ".join(missing))  # fmt: skip
        return taken

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Serve until ``stop()`` is true (or SystemExit from a signal).

        It first gathers the packs' states (:meth:`gather`). Then the process wakes for the
        bank tick, when it takes every state queued since the last one (a burst: one wake-up
        per tick instead of one per state), and for the control channel, which is served at
        once. A state waits at most one interval, far below ``stale_after``; the tap carries
        the tick's states just before its bank. A tick that comes late by more than two
        intervals (and :data:`STALL_MIN`) means the process stalled: it gathers again, so the
        states that queued meanwhile are read before any pack is judged silent.
        """
        poller = zmq.Poller()
        poller.register(self.control.socket, zmq.POLLIN)
        interval = self.config.bank.interval
        self.gather(self.started, stop)
        self.next_bank = time.monotonic()
        while not stop():
            now = time.monotonic()
            if now >= self.next_bank:
                late = now - self.next_bank
                if late > max(2.0 * interval, STALL_MIN):
                    log.warning("stalled for %.1f s: reading the states that queued meanwhile",
                                late)  # fmt: skip
                    self.gather(now, stop)
                    now = time.monotonic()
                self.drain_states(now)
                self.publish_bank(now)
                # Keep a steady cadence; skip missed ticks instead of bursting after a stall.
                self.next_bank += interval
                if self.next_bank <= now:
                    self.next_bank = now + interval
            self.control.expire(now)
            deadline = self.control.next_deadline()
            wake = self.next_bank if deadline is None else min(self.next_bank, deadline)
            timeout_ms = max(0, int((wake - time.monotonic()) * 1000) + 1)
            for _ in range(1000):  # serve the control channel, never starving the bank tick
                if not poller.poll(timeout_ms):
                    break
                self.control.receive(time.monotonic())
                if time.monotonic() >= self.next_bank:
                    break
                timeout_ms = 0

    def close(self) -> None:
        """Save the engine's memory and close the sockets."""
        if self.engine.ticks:
            self.state_file.save(self.engine.snapshot())
        self._save_cells()
        self.pull.close()
        self.tap.close()
        self.control.close()
        if self.remote is not None:
            self.remote.close()
