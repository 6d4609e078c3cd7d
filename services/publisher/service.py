"""The publisher process: bank messages in over ZeroMQ, Venus D-Bus service and CAN-bus BMS out.

One asyncio loop runs these tasks:

* receive: a SUB socket on the arbiter's tap (topic ``bank``); each message is unpacked and
  validated with :mod:`bmsbank.schema`; a bad one is rejected, counted and logged (at most one
  warning a minute), never allowed to crash the loop or reach an output.
* watch: the staleness check, woken when the bank would go stale, and the heartbeat that
  :mod:`bmsbank.watchdog` reads (see Liveness).
* can (with CAN): the CAN cycles on their own deadlines (:class:`~.can_output.CanOutput`: 0x351
  and the measurements every second, identity frames every 10 s, then a read of the GX's
  keep-alives). The next cycle is due one period after the previous 0x351 (a little early, so
  the gap never exceeds the period), whatever the D-Bus side is doing: this task never waits
  for D-Bus, and the frames of a new bank are ready before its D-Bus update starts. The first
  bank (or the safe state) after the start, and after a silence, goes out at once: Venus stops
  charge and discharge 3 s after the last 0x351, and a restarted publisher must not eat that.
* dbus: connects (with backoff 1 s doubling to 30 s while the bus is not there yet) once the
  first bank or the stale state exists, then sleeps until the connection drops and reconnects.

Liveness: when no valid bank arrives for ``[bank] stale_after`` seconds the publisher switches
both outputs to the safe state (:func:`paths.safe_bank`: CCL = DCL = 0, last CVL kept, BmsCable
alarm) until a valid bank arrives again. Before the first bank nothing is published, so a
restart of the publisher does not flash zero limits at Venus; the safe state starts after
``stale_after`` seconds of waiting. Only time during which the publisher could receive counts:
after it was stopped (SIGSTOP then SIGCONT) or its loop was blocked, it reads the banks that
queued meanwhile (or waits for the arbiter's next one) and is stale only when no valid bank came
within ``stale_after`` of resuming. It never sends a safe state the arbiter did not cause.

Heartbeat (under supervisord): the publisher promises the watchdog a bank or the safe state by
``stale_after`` + :data:`HEARTBEAT_MARGIN` after its last bank (``stale_after`` from now while
already safe). A publisher that hangs is killed then, its D-Bus name goes with it, and a fresh
one starts: hung, it leaves non-safe limits on D-Bus for at most about ``stale_after`` + 0.5 s.
The resume rule above may wait longer than that deadline (banks are expected after a resume);
with no arbiter either, the watchdog then kills the publisher instead of it going safe. Either
way D-Bus does not show limits older than that as if they were current.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.asyncio

from bmsbank.config import Config
from bmsbank.control import ControlClient
from bmsbank.errors import MessageError
from bmsbank.runtime import STOP_SIGNALS, Heartbeat
from bmsbank.schema import (
    MAX_BANK_BYTES,
    TOPIC_BANK,
    TOPIC_STATE,
    unpack,
    validate_bank,
    validate_state,
)

from . import canbms, health, paths
from .can_output import LIMITS_ID, CanOutput
from .can_sender import CanSender
from .dbus_service import VeService
from .energy import MAX_GAP
from .identity import Identity, NameStore, ServiceIdentity
from .pack_services import PackServices

log = logging.getLogger(__name__)

CAN_PERIOD = 1.0  # s between CAN cycles (seed 004 §1.4: 0x351 every second)
CAN_LEAD = 0.05  # s; a cycle starts this early so that a late wake-up still keeps the period
STALE_MARGIN = 0.01  # s; the staleness check runs this long after the bank would be stale
#: s the watchdog allows beyond stale_after: time to enter the safe state and say so
HEARTBEAT_MARGIN = 0.5
HEARTBEAT_PERIOD = 1.0  # s between heartbeats while banks arrive (each moves the deadline on)
STALL_MAX = 1.0  # s; a wake-up later than this (or stale_after / 2) means the loop was stopped
RCVHWM = 1000  # banks at ~1 Hz and a state per pack; a deep queue would only replay old limits
RECV_BATCH = 200  # messages handled per wake-up at most (then other tasks get their turn)
POLLIN = int(zmq.POLLIN)  # a plain int: zmq's enums cost a call each time they are combined
DBUS_BACKOFF_MAX = 30.0
DBUS_CONNECT_TIMEOUT = 5.0
REJECT_LOG_INTERVAL = 60.0


@dataclass
class Counters:
    """What the publisher has done; tests and the log read them."""

    banks: int = 0  #: valid bank messages
    states: int = 0  #: valid pack states (for the per-pack services)
    rejected: int = 0  #: messages that failed to unpack or validate
    stale: int = 0  #: times the bank went stale (safe state entered)
    dbus_updates: int = 0  #: update() calls that changed something
    can_cycles: int = 0  #: CAN cycles run (frames sent are counted by the CanSender)
    stalls: int = 0  #: times the loop found it had not run (stopped, blocked) for a while
    errors: int = 0  #: unexpected exceptions caught in a loop


class Publisher:
    """Bank in, D-Bus and CAN out; see the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        dbus_address: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        """Set up the outputs for ``config``.

        Args:
            config: the whole configuration.
            dbus_address: the bus to publish on (None: the system bus).
            clock: monotonic time [s].
            heartbeat: the watchdog's heartbeat (default: the supervisord program's, if any).

        """
        self.config = config
        self.clock = clock
        self.counters = Counters()
        self.last_bank: dict[str, Any] | None = None
        self.last_seen = clock()  #: when the last valid bank arrived (start-up before the first)
        self.resumed_at = self.last_seen  #: when the loop last came back from a stop or stall
        self.stale = False
        self.heartbeat = heartbeat or Heartbeat.supervised(config.runtime_dir)
        self.stall_limit = min(STALL_MAX, config.bank.stale_after / 2)
        self.current: dict[str, Any] | None = None  #: the bank being published (real or safe)
        self.frames: list[canbms.Frame] = []
        self.ve = VeService(dbus_address, config.dbus.service) if config.dbus.enabled else None
        names = NameStore(config.dbus.names_file)
        fallback = Identity(paths.unique_id(config), config.dbus.device_instance, config.bank.name)
        self.keeper = ServiceIdentity(self.ve, fallback, names) if self.ve is not None else None
        self.packs = (
            PackServices(config, dbus_address, names)
            if self.ve is not None and config.dbus.pack_services
            else None
        )
        self.can = CanSender(config.can, clock) if config.can.enabled else None
        self.can_output = (
            CanOutput(config.can, max_gap=max(MAX_GAP, 3 * config.bank.interval))
            if config.can.enabled else None
        )  # fmt: skip
        self._registered = False
        self._have_data = asyncio.Event()
        self._can_now = asyncio.Event()  # a CAN cycle is wanted before its deadline
        self._stop = asyncio.Event()
        self._last_reject_log: float | None = None
        self._background: set[asyncio.Task] = set()  # fire-and-forget work the loops never await
        self._next_beat = 0.0  # when on_bank renews the heartbeat next
        self.health: health.HealthReporter | None = None  #: reports the outputs' health (see run)

    # ---- input -------------------------------------------------------------------------------

    def accept(self, parts: list[bytes]) -> dict[str, Any] | None:
        """Check one ZeroMQ message ``[topic, body]``; count and log it when it is not valid.

        Returns:
            The validated bank or state message (its ``kind`` says which), or None.

        """
        try:
            if len(parts) != 2 or parts[0] not in (TOPIC_BANK, TOPIC_STATE):
                raise MessageError(f"expected [b'bank' or b'state', body], got {len(parts)} parts")
            body = unpack(parts[1])
            msg = validate_bank(body) if parts[0] == TOPIC_BANK else validate_state(body)
        except MessageError as exc:
            self.counters.rejected += 1
            now = self.clock()
            last = self._last_reject_log
            if last is None or now - last >= REJECT_LOG_INTERVAL:
                self._last_reject_log = now
                log.warning("rejected bank message (%d so far): %s", self.counters.rejected, exc)
            else:
                log.debug("rejected bank message: %s", exc)
            return None
        if msg["kind"] == "bank":
            self.counters.banks += 1
        else:
            self.counters.states += 1
        return msg

    async def on_bank(self, bank: dict[str, Any]) -> None:
        """Publish a valid bank message on every output."""
        now = self.clock()
        if self.stale:
            log.info("bank data back after %.1f s: leaving the safe state", now - self.last_seen)
            self.stale = False
        self.last_bank, self.last_seen = bank, now
        if now >= self._next_beat:  # the deadline follows the banks, not the watch's wake-ups
            self._beat()
        await self._publish(bank, paths.dbus_values(bank, self.config))
        self.report_health(now)

    def report_health(self, now: float) -> None:
        """Tell the arbiter how the outputs are, when that changed or a heartbeat is due."""
        if self.health is None:
            return
        can_name = f"{self.config.can.interface} {self.config.can.channel}"
        state = health.outputs(self.ve, self.config.dbus.service, self.can, can_name)
        self.health.report(state, now)

    async def check_stale(self) -> None:
        """Enter the safe state when no valid bank arrived for ``stale_after`` seconds.

        Only time the publisher could receive counts: the wait starts again when the loop
        resumes after a stop or a stall (:meth:`resumed`).
        """
        silent = self.clock() - max(self.last_seen, self.resumed_at)
        if self.stale or silent <= self.config.bank.stale_after:
            return
        self.stale = True
        self.counters.stale += 1
        why = f"no valid bank message for {self.config.bank.stale_after:g} s"
        log.warning("%s: safe state (CCL = DCL = 0, last CVL kept)", why)
        bank = paths.safe_bank(self.last_bank, self.config, why)
        await self._publish(bank, paths.safe_values(self.last_bank, self.config, why))

    async def on_state(self, state: dict[str, Any]) -> None:
        """Show a valid pack state on its pack's service (when per-pack services are on)."""
        if self.packs is not None:
            await self.packs.on_state(state)

    def resumed(self, why: str) -> None:
        """Note that the loop could not run until now: the staleness wait starts again."""
        self.resumed_at = self.clock()
        self.counters.stalls += 1
        log.warning("publisher %s: reading what queued meanwhile before judging the bank stale",
                    why)  # fmt: skip

    def _woke(self, late: float) -> None:
        """A timed wake-up came ``late`` seconds after its time; a long delay is a stall."""
        if late > self.stall_limit:
            self.resumed(f"did not run for {late:.1f} s (stopped or blocked)")

    def _beat(self) -> None:
        """Promise the watchdog a fresh bank or the safe state by ``stale_after`` (+ margin).

        While safe already, the promise is only to be alive ``stale_after`` from now.
        """
        now = self.clock()
        stale_after = self.config.bank.stale_after
        since = now if self.stale else self.last_seen
        self.heartbeat.beat(since + stale_after + (0.0 if self.stale else HEARTBEAT_MARGIN))
        self._next_beat = now + HEARTBEAT_PERIOD

    async def _publish(self, bank: dict[str, Any], values: dict[str, Any]) -> None:
        self.current = bank
        if self.can_output is not None:
            idle = not self.frames or self.can_output.silent
            self.frames = self.can_output.update(bank, self.clock(), stale=self.stale)
            if (idle or self.stale) and not self.can_output.silent:
                self._can_now.set()  # the first frames (or the safe state): now, not next tick
        values.update(self._can_values())
        self._have_data.set()
        if self.packs is not None:
            await self.packs.on_bank(bank)
        if self.ve is None:
            return
        if not self._registered:
            self._register(values)
            return
        for path in paths.OWNED:  # set from the claimed identity and by D-Bus clients
            values.pop(path, None)
        if await self.ve.update(values):
            self.counters.dbus_updates += 1

    def _register(self, values: dict[str, Any]) -> None:
        assert self.ve is not None
        for path, value in values.items():
            writable = path in paths.WRITABLE
            self.ve.add_path(
                path, value, writable=writable, fmt=paths.FORMATS.get(path),
                validator=paths.custom_name_ok if writable else None,
                on_set=self.keeper.renamed if writable and self.keeper else None,
            )  # fmt: skip
        self._registered = True

    # ---- tasks -------------------------------------------------------------------------------

    async def _receive(self, sock: zmq.Socket) -> None:
        """Handle what the tap brings, every message queued at each wake-up.

        ``sock`` is a plain (blocking-API) socket read without blocking, its notification
        descriptor watched by the loop: zmq.asyncio's futures per message cost more than the
        message here (states come in bursts, one per pack, once per bank tick). The descriptor
        is edge triggered, so the socket is asked (EVENTS) after every wake and before waiting.
        """
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = cast(int, sock.get(zmq.FD))
        loop.add_reader(fd, ready.set)
        try:
            while True:
                handled = 0
                while handled < RECV_BATCH and cast(int, sock.get(zmq.EVENTS)) & POLLIN:
                    await self._handle(sock.recv_multipart(zmq.NOBLOCK))
                    handled += 1
                if handled == RECV_BATCH:  # more may be queued: let other tasks run first
                    await asyncio.sleep(0)
                    continue
                ready.clear()
                await ready.wait()
        finally:
            loop.remove_reader(fd)

    async def _handle(self, parts: list[bytes]) -> None:
        try:
            msg = self.accept(parts)
            if msg is not None and msg["kind"] == "bank":
                await self.on_bank(msg)
            elif msg is not None:
                await self.on_state(msg)
        except Exception:  # a bug in one message must not stop the outputs
            self.counters.errors += 1
            log.exception("failed to publish a message")

    async def _watch(self) -> None:
        """The staleness check and the heartbeat, each woken when it is due (else asleep)."""
        renew = self.config.bank.stale_after / 2 if self.heartbeat.enabled else float("inf")
        while True:
            try:
                await self.check_stale()
            except Exception:
                self.counters.errors += 1
                log.exception("staleness check failed")
            self._beat()
            delay = min(self._until_stale(), renew)
            due = self.clock() + delay
            await asyncio.sleep(delay)
            self._woke(self.clock() - due)

    async def _can_loop(self) -> None:
        """CAN cycles on their own deadlines (see the module docstring); never waits for D-Bus."""
        while True:
            started = self.clock()
            try:
                await self._can_cycle()
            except Exception:
                self.counters.errors += 1
                log.exception("CAN cycle failed")
            now = self.clock()
            wait = self._until_can(now, started)
            try:
                await asyncio.wait_for(self._can_now.wait(), wait)
            except TimeoutError:
                self._woke(self.clock() - now - wait)
            self._can_now.clear()

    def _until_can(self, now: float, started: float) -> float:
        """Seconds until the next CAN cycle: one period after the last 0x351, a bit early.

        ``started`` is when the cycle just run began: a 0x351 older than that and a period
        old means none is being sent (no data, silent, the bus down), and the cycle (which
        also opens the bus and reads keep-alives) comes a period later.
        """
        last = self.can_output.last_sent(LIMITS_ID) if self.can_output else None
        if last is None or (last < started and last + CAN_PERIOD <= now):
            return CAN_PERIOD
        return max(0.0, last + CAN_PERIOD - CAN_LEAD - now)

    def _until_stale(self) -> float:
        """Seconds until :meth:`check_stale` would switch to the safe state (a little after)."""
        stale_after = self.config.bank.stale_after
        if self.stale:  # nothing to check until a bank arrives (on_bank leaves the safe state)
            return stale_after
        since = max(self.last_seen, self.resumed_at)
        return max(STALE_MARGIN, stale_after - (self.clock() - since) + STALE_MARGIN)

    def _can_values(self) -> dict[str, Any]:
        """D-Bus paths of the CAN port: force-charge request, adapter up, GX listening."""
        out, can_bus = self.can_output, self.can
        return {
            "/Info/ChargeRequest": int(out is not None and out.force.active),
            "/CanBms/Up": None if can_bus is None else int(bool(can_bus.up)),
            "/CanBms/Listening": None if can_bus is None else int(can_bus.listening),
        }

    async def _can_cycle(self) -> None:
        """Send the CAN frames due (and read keep-alives) off the loop; save energy when due."""
        assert self.can is not None
        out, now = self.can_output, self.clock()
        frames = out.due(now) if out is not None else []
        # python-can send may block (socketcan queue full): keep the loop free.
        sent = await asyncio.to_thread(self.can.send_all, frames)
        if frames:
            self.counters.can_cycles += 1
        if self._registered and self.ve is not None:
            self._spawn(self.ve.update(self._can_values()), "can-status")
        if out is None:
            return
        if sent < len(frames):
            out.resend_all()  # the bus failed: everything again once it is back
        if out.save_due(now):
            self._spawn(asyncio.to_thread(out.store.save, out.energy.totals), "energy-save")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` beside the loops; skipped while the previous one of ``name`` runs."""
        if any(task.get_name() == name for task in self._background):
            work.close()
            return
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _dbus(self) -> None:
        assert self.ve is not None
        await self._have_data.wait()
        backoff, failing = 1.0, False
        while True:
            if not self.ve.connected:
                try:
                    assert self.keeper is not None
                    await asyncio.wait_for(self.ve.connect(self.keeper.claim), DBUS_CONNECT_TIMEOUT)
                    backoff, failing = 1.0, False
                except Exception as exc:  # bus not there yet, name taken, daemon restarting
                    if not failing:
                        log.warning("D-Bus not available (%s); retrying up to every %.0f s",
                                    exc, DBUS_BACKOFF_MAX)  # fmt: skip
                        failing = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, DBUS_BACKOFF_MAX)
                    continue
            # Asleep while on the bus (no wake-up a second to check); a dropped connection
            # ends the wait and the next turn reconnects.
            await self.ve.wait_disconnected()
            if self.ve.connected:  # the wait ended but the bus says connected: do not spin
                await asyncio.sleep(1.0)
            else:
                log.warning("D-Bus connection lost; reconnecting")

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe to call from a signal handler)."""
        self._stop.set()

    async def run(self, install_signals: bool = True) -> None:
        """Run until :meth:`stop` (or SIGTERM, SIGINT, SIGHUP when ``install_signals``).

        With ``install_signals``, SIGCONT (the end of a SIGSTOP) restarts the staleness wait.
        """
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGCONT, self.resumed, "continued (SIGCONT)")
        ctx = zmq.asyncio.Context()
        sock = zmq.Socket(ctx, zmq.SUB)  # read without zmq.asyncio: see _receive
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_BANK_BYTES)  # a bigger one is not from the arbiter
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
        if self.packs is not None:
            sock.setsockopt(zmq.SUBSCRIBE, TOPIC_STATE)
        sock.connect(self.config.tap_endpoint)
        can_out = f"{self.config.can.interface} {self.config.can.channel}" if self.can else "off"
        dbus_out = self.config.dbus.service if self.ve else "off"
        log.info("publisher: bank from %s, D-Bus %s, CAN %s", self.config.tap_endpoint, dbus_out,
                 can_out)  # fmt: skip
        self._beat()
        self.health = health.HealthReporter(self.config.control_endpoint, ctx)
        tasks = [asyncio.create_task(self._receive(sock)), asyncio.create_task(self._watch())]
        if self.can is not None:
            tasks.append(asyncio.create_task(self._can_loop()))
        if self.ve is not None:
            tasks.append(asyncio.create_task(self._dbus()))
        if self.packs is not None:
            tasks.append(asyncio.create_task(self.packs.maintain()))
            self.packs.control = ControlClient(self.config.control_endpoint, ctx)
        try:
            await self._stop.wait()
        finally:
            saving = [t for t in self._background if t.get_name() == "energy-save"]
            tasks += [t for t in self._background if t not in saving]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, *saving, return_exceptions=True)  # one writer at a time
            sock.close(linger=0)
            if self.health is not None:
                self.health.close()
                self.health = None
            if self.packs is not None and self.packs.control is not None:
                await self.packs.control.aclose()
                self.packs.control = None
            ctx.term()
            if self.ve is not None:
                await self.ve.close()
            if self.packs is not None:
                await self.packs.close()
            if self.can is not None:
                self.can.close()
            if self.can_output is not None:
                self.can_output.save()
            if install_signals:
                for sig in (*STOP_SIGNALS, signal.SIGCONT):
                    loop.remove_signal_handler(sig)
            self.heartbeat.close()
            log.info("publisher stopped (%s)", self.counters)
