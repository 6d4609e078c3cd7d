"""The publisher process: bank messages in over ZeroMQ, Venus D-Bus service and CAN-bus BMS out.

One asyncio loop runs three tasks:

* receive: a SUB socket on the arbiter's tap (topic ``bank``); each message is unpacked and
  validated with :mod:`bmsbank.schema`; a bad one is rejected, counted and logged (at most one
  warning a minute), never allowed to crash the loop or reach an output.
* tick (every 1.0 s, on a fixed schedule, with CAN; without, only when the bank would go
  stale): the staleness check, then the CAN frames due
  (:class:`~.can_output.CanOutput`: 0x351 and the measurements every second whatever the
  arbiter's timing, as the seed asks, since Venus stops charge and discharge after 3 s without
  0x351; identity frames every 10 s) and a read of the GX's keep-alives.
* dbus: connects (with backoff 1 s doubling to 30 s while the bus is not there yet) once the
  first bank or the stale state exists, then sleeps until the connection drops and reconnects.

Liveness: when no valid bank arrives for ``[bank] stale_after`` seconds the publisher switches
both outputs to the safe state (:func:`paths.safe_bank`: CCL = DCL = 0, last CVL kept, BmsCable
alarm) until a valid bank arrives again. Before the first bank nothing is published, so a
restart of the publisher does not flash zero limits at Venus; the safe state starts after
``stale_after`` seconds of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.asyncio

from bmsbank.config import Config
from bmsbank.control import ControlClient
from bmsbank.errors import MessageError
from bmsbank.schema import (
    MAX_BANK_BYTES,
    TOPIC_BANK,
    TOPIC_STATE,
    unpack,
    validate_bank,
    validate_state,
)

from . import canbms, paths
from .can_output import CanOutput
from .can_sender import CanSender
from .dbus_service import VeService
from .energy import MAX_GAP
from .identity import Identity, NameStore, ServiceIdentity
from .pack_services import PackServices

log = logging.getLogger(__name__)

CAN_PERIOD = 1.0  # s between CAN cycles (seed 004 §1.4: 0x351 every second)
STALE_MARGIN = 0.01  # s; the staleness check runs this long after the bank would be stale
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
    errors: int = 0  #: unexpected exceptions caught in a loop


class Publisher:
    """Bank in, D-Bus and CAN out; see the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        dbus_address: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.counters = Counters()
        self.last_bank: dict[str, Any] | None = None
        self.last_seen = clock()  #: when the last valid bank arrived (start-up before the first)
        self.stale = False
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
        self._stop = asyncio.Event()
        self._last_reject_log: float | None = None

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
        await self._publish(bank, paths.dbus_values(bank, self.config))

    async def check_stale(self) -> None:
        """Enter the safe state when no valid bank arrived for ``stale_after`` seconds."""
        silent = self.clock() - self.last_seen
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

    async def _publish(self, bank: dict[str, Any], values: dict[str, Any]) -> None:
        self.current = bank
        if self.can_output is not None:
            self.frames = self.can_output.update(bank, self.clock(), stale=self.stale)
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

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.check_stale()
                if self.can is not None:
                    await self._can_cycle()
                    if self._registered and self.ve is not None:
                        await self.ve.update(self._can_values())
            except Exception:
                self.counters.errors += 1
                log.exception("publisher cycle failed")
            now = loop.time()
            if self.can is None:
                # Without CAN the only duty is the staleness check: wake when the bank would go
                # stale (a bank arriving meanwhile moves that moment on), not every second.
                await asyncio.sleep(self._until_stale())
                continue
            next_at += CAN_PERIOD
            if next_at < now:  # fell behind (suspended host): restart the schedule
                next_at = now + CAN_PERIOD
            await asyncio.sleep(next_at - now)

    def _until_stale(self) -> float:
        """Seconds until :meth:`check_stale` would switch to the safe state (a little after)."""
        stale_after = self.config.bank.stale_after
        if self.stale:  # nothing to check until a bank arrives (on_bank leaves the safe state)
            return stale_after
        return max(STALE_MARGIN, stale_after - (self.clock() - self.last_seen) + STALE_MARGIN)

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
        if out is None:
            return
        if sent < len(frames):
            out.resend_all()  # the bus failed: everything again once it is back
        if out.save_due(now):
            await asyncio.to_thread(out.store.save, out.energy.totals)

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
        """Run until :meth:`stop` (or SIGTERM/SIGINT when ``install_signals``)."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
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
        tasks = [asyncio.create_task(self._receive(sock)), asyncio.create_task(self._tick())]
        if self.ve is not None:
            tasks.append(asyncio.create_task(self._dbus()))
        if self.packs is not None:
            tasks.append(asyncio.create_task(self.packs.maintain()))
            self.packs.control = ControlClient(self.config.control_endpoint, ctx)
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sock.close(linger=0)
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
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("publisher stopped (%s)", self.counters)
