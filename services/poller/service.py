"""The poller: polls every pack on one port in turn and pushes state messages to the arbiter.

One thread per port (:func:`run`); the ports of one poller process (``[[ports]] process``, all of
them unless a port is given a process of its own) share it (:func:`run_ports`). A missing port is
retried with exponential backoff and logged once per state change; while it backs off, its device
path is looked at (one stat) every :data:`DEVICE_WATCH` seconds, and a path that appears (or
becomes another device) is opened at once, so an adapter plugged back in rejoins within a second
whatever the backoff has grown to. A malformed or missing reply is counted per link and never
stops the loop.

Control requests (:mod:`bmsbank.services.poller.control`) are carried out between two requests of
the poll cycle, never inside a request/reply exchange: the poller calls ``between()`` after each
exchange, and :meth:`Poller.control` uses the same serial link, gaps and timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from bmsbank import plausibility
from bmsbank.config import AUTO, Config, PortConfig
from bmsbank.curve import client_keys
from bmsbank.errors import ControlError, FrameError, LinkTimeout, MessageError, TransportError
from bmsbank.logs import ChangeLog
from bmsbank.plausibility import PackBounds, default_bounds, implausible
from bmsbank.schema import TOPIC_STATE, packer, validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.linkstate import LinkReport, bad_replies
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, Query, run_query
from bmsbank.services.poller.sniff import noise_text
from bmsbank.services.poller.spi_transport import SpiTransport
from bmsbank.services.poller.transport import SerialTransport
from bmsbank.state import make_state

if TYPE_CHECKING:
    from bmsbank.services.poller.ble_transport import BleTransport

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5  # s, first retry after a port failure
BACKOFF_MAX = 30.0  # s
DEVICE_WATCH = 0.5  # s between two looks (one stat each) at a missing port's device path
WATCH_INTERVAL = 3600.0  # s; run_ports' main thread only waits for a signal or a failed port


def transport_for(
    port: PortConfig, plugin: Plugin
) -> SerialTransport | SpiTransport | BleTransport:
    """The transport of ``port``: BLE, SPI or serial.

    BLE for a ``ble:<adapter>/<MAC>`` device, SPI for a family whose link is SPI (MNB), else
    serial.

    Raises:
        ValueError: a BLE device of a family that does not speak BLE, or a malformed BLE device.

    """
    if port.device.startswith("ble:"):
        from bmsbank.services.poller.ble_transport import BleTransport

        if plugin.info.ble is None:
            raise ValueError(f"port {port.name}: {plugin.name} does not speak BLE "
                             f"(device {port.device})")  # fmt: skip
        return BleTransport(port.device, plugin.info.ble)
    speed = port.baudrate or plugin.baudrate
    if plugin.info.link.upper().startswith("SPI"):
        return SpiTransport(port.device, speed)
    return SerialTransport(port.device, speed, port.echo, plugin.info.parity)


@dataclass
class PackLink:
    """Per-pack bookkeeping: counters and reply parts kept across cycles."""

    address: int
    #: the requests of a poll cycle (built once: they depend on the address and options only)
    queries: tuple[Query, ...] = ()
    stats: LinkStats = field(default_factory=LinkStats)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: parts read in the running cycle (a collecting query counts from them)
    fresh: dict[str, dict[str, Any]] = field(default_factory=dict)
    done_once: set[str] = field(default_factory=set)


def checked_state(
    port: str, address: int, bms: str, seq: int, fields: Mapping[str, Any], stats: LinkStats,
    bounds: PackBounds,
) -> dict[str, Any] | str:  # fmt: skip
    """The state message of one reading, counted ``ok``; or why not, counted ``malformed``.

    A frame can pass its checksum and still carry nonsense: a state that fails the schema
    (:func:`~bmsbank.schema.validate_state`) or is implausible for the pack (``bounds``,
    :func:`~bmsbank.plausibility.implausible`) is never sent on. The serial poller and the CAN
    input (:mod:`bmsbank.services.poller.can_input`) both build their states here.
    """
    stats.ok += 1  # before make_state: the message carries the counters with this reading
    msg = make_state(port, address, bms, seq, fields, stats.as_dict())
    try:
        validate_state(msg)
        why = implausible(msg, bounds)
        if why is not None:
            raise MessageError(why)
    except MessageError as exc:
        stats.ok -= 1
        stats.malformed += 1
        return str(exc)
    return msg


class Poller:
    """Polls the packs of one configured port."""

    def __init__(
        self,
        port: PortConfig,
        send: Callable[[dict[str, Any]], None],
        plugin: Plugin | None = None,
        bounds: Mapping[str, PackBounds] | None = None,
    ) -> None:
        """Poll ``port``, handing each state to ``send``.

        ``bounds``: per pack id, its plausible readings (:mod:`bmsbank.plausibility`); a state
        outside them is counted as malformed and not sent. None: the defaults for the port's
        family on a LiFePO4 bank.
        """
        self.port = port
        self.bounds = bounds or {}
        self.default_bounds = default_bounds()
        self.plugin = plugin or plugins.load(port.bms, port.options)
        self.send = send
        self.transport = transport_for(port, self.plugin)
        self.timeout = port.timeout or self.plugin.reply_timeout
        self.gap = self.plugin.command_gap if port.command_gap < 0 else port.command_gap
        self.links = {a: PackLink(a, tuple(self.plugin.queries(a))) for a in port.addresses}
        #: the port's and packs' link states for the arbiter (sent on a change, see run)
        self.report = LinkReport(port.name, port.device,
                                 {a: k.stats for a, k in self.links.items()})  # fmt: skip
        #: a sample of what the port heard during a pack's poll (serial ports keep one)
        self._heard: bytearray | None = getattr(self.transport, "heard", None)
        self.cycle = 0
        self.seq = 0
        #: reconnect backoff [s]: the transport's own range where it has one (BLE: 1 s doubling
        #: to 60 s), read when used (a BLE link that keeps stalling raises its own minimum)
        self.backoff: float = getattr(self.transport, "backoff_min", BACKOFF_MIN)
        self.retry_at = 0.0  #: monotonic time of the next attempt to open a missing port [s]
        self._device_then: tuple[int, int, int] | None = None  #: the device at the last failure
        self.changes = ChangeLog(log, f"[{port.name}] ")
        self._last_io = 0.0
        #: the counters of the pack being polled (stale bytes drained before a request count there)
        self._stats: LinkStats | None = None
        #: called between two exchanges of a poll cycle (the control channel's slot)
        self.between: Callable[[], object] = lambda: None

    def pack_ids(self) -> list[str]:
        """Ids of the packs this poller owns, "port:address"."""
        return [f"{self.port.name}:{a}" for a in self.links]

    # -- one cycle ---------------------------------------------------------------------------
    def poll_once(self) -> float:
        """Run one poll cycle over every pack; return seconds to wait before the next attempt.

        When the port is missing the return value is at most :data:`DEVICE_WATCH`: the next
        call opens it when its backoff has run out or its device path has come (back).
        """
        if not self.transport.is_open:
            now = time.monotonic()
            if now < self.retry_at and self._device() in (None, self._device_then):
                return min(DEVICE_WATCH, self.retry_at - now)
            if not self._open():
                top = getattr(self.transport, "backoff_max", BACKOFF_MAX)
                delay, self.backoff = self.backoff, min(self.backoff * 2, top)
                self.retry_at = now + delay
                self._device_then = self._device()
                return min(DEVICE_WATCH, delay)
        # Late replies and line noise gather while the port idles: ask the driver once a cycle
        # (within the cycle, only after an exchange that went wrong; see SerialTransport.drain).
        self.transport.unsettle()
        try:
            for link in self.links.values():
                self._poll_pack(link)
        except TransportError as exc:
            self._lose_port(exc)
            return self.backoff
        self.cycle += 1
        return self.port.interval

    def _device(self) -> tuple[int, int, int] | None:
        """What the configured device path is now (device, inode, device number), None if absent.

        A symlink (``/dev/serial/by-id/...``) is followed. A pyserial URL is never a path: it
        keeps None and is retried on its backoff alone.
        """
        try:
            info = os.stat(self.port.device)
        except (OSError, ValueError):
            return None
        return info.st_dev, info.st_ino, info.st_rdev

    def _lose_port(self, exc: TransportError) -> None:
        for link in self.links.values():
            link.stats.port_errors += 1
        self.transport.close()
        self.changes.set("port", "lost", logging.WARNING, str(exc))
        self.report.port_state("missing", str(exc))

    def _open(self) -> bool:
        try:
            self.transport.open()
        except TransportError as exc:
            for link in self.links.values():
                link.stats.port_errors += 1
            self.changes.set("port", "missing", logging.WARNING, str(exc))
            self.report.port_state("missing", str(exc))
            return False
        self.backoff = getattr(self.transport, "backoff_min", BACKOFF_MIN)
        self.changes.set("port", "open", logging.INFO, self.port.device)
        self.report.port_state("open")
        return True

    def _due(self, link: PackLink, q: Query) -> bool:
        if q.every == 0:
            return q.part not in link.done_once
        return self.cycle % q.every == 0 or q.part not in link.parts

    def _poll_pack(self, link: PackLink) -> None:
        link.fresh = fresh = {}
        heard = self._heard
        if heard:
            heard.clear()
        # what went wrong before this poll (to tell silence from noise if it fails)
        bad, noise = bad_replies(link.stats), link.stats.noise_bytes
        for q in link.queries:
            if not self._due(link, q):
                continue
            result = self._exchange(link, q)
            self.between()
            if result is None:
                if q.required:
                    self.changes.set(str(link.address), "silent", logging.WARNING, "no valid reply")
                    noisy = bad_replies(link.stats) > bad or link.stats.noise_bytes > noise
                    text = noise_text(bytes(heard or b""), self.plugin.name) if noisy else ""
                    self.report.failed(link.address, noisy, text)
                    return
                continue
            if q.expects_reply:
                fresh[q.part] = result
            link.done_once.add(q.part)
        link.parts.update(fresh)
        try:
            fields = self.plugin.state(link.parts)
        except FrameError as exc:
            link.stats.count(exc.kind)
            self.changes.set(str(link.address), "incomplete", logging.WARNING, str(exc))
            self.report.refused(link.address, "incomplete", f"incomplete reply: {exc}")
            return
        bounds = self.bounds.get(f"{self.port.name}:{link.address}", self.default_bounds)
        msg = checked_state(self.port.name, link.address, self.plugin.name, self.seq, fields,
                            link.stats, bounds)  # fmt: skip
        if isinstance(msg, str):
            self.changes.set(str(link.address), "implausible values", logging.WARNING, msg)
            self.report.refused(link.address, "implausible", msg)
            return
        self.changes.set(str(link.address), "answering")
        self.report.answered(link.address)
        self.seq += 1
        self.send(msg)

    def _exchange(self, link: PackLink, q: Query) -> dict[str, Any] | None:
        """Send one request (with retries); return the decoded part, or None."""
        self._stats = link.stats
        try:
            for _attempt in range(self.port.retries + 1):
                try:
                    # a collecting query counts from this cycle's parts (Daly's 0x94 cell count)
                    parts = {**link.parts, **link.fresh} if q.collect else link.parts
                    return run_query(self.plugin, self, q, link.address, parts, link.stats)
                except LinkTimeout as exc:
                    link.stats.count(str(exc))
                except FrameError as exc:
                    self.transport.unsettle()  # a wrong reply: more of them may be on the way
                    link.stats.count(exc.kind)
                    log.debug("[%s:%d] %s: %s", self.port.name, link.address, q.part, exc)
            return None
        finally:
            self._stats = None

    # -- control ------------------------------------------------------------------------------
    def control(self, pack_id: str, action: str, value: Any) -> str | None:
        """Carry out a control action on one of this port's packs.

        Returns:
            None when the BMS acknowledged, else why not (for the requester: "jbd does not
            support reset_soc", "pack rs485:3 did not acknowledge within 0.5 s", ...).

        """
        name = self.port.name
        link = next((k for a, k in self.links.items() if f"{name}:{a}" == pack_id), None)
        if link is None:
            return f"pack {pack_id} is not polled on port {name}"
        if action not in self.plugin.controls:
            return f"{self.plugin.name} does not support {action}"
        if not self.transport.is_open:
            return f"port {name} is not open ({self.port.device})"
        try:
            self.plugin.control(self, link.address, action, value, link.parts)
        except ControlError as exc:
            return str(exc)
        except LinkTimeout:
            return f"pack {pack_id} did not acknowledge within {self.timeout:g} s"
        except FrameError as exc:
            self.transport.unsettle()
            link.stats.count(exc.kind)
            return f"pack {pack_id} sent a bad acknowledgement: {exc.reason}"
        except TransportError as exc:
            self._lose_port(exc)
            return f"port {name} failed: {exc}"
        return None

    def exchange(self, request: bytes, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """Send one request and return its reply (the families' ``Link``).

        Waits the command gap first and drops what arrived unasked (counted as noise of the pack
        being polled); waits ``timeout`` for the reply.

        Raises:
            LinkTimeout, FrameError, TransportError: as ``SerialTransport.receive``.

        """
        self._wait_gap()
        stale = self.transport.drain()
        if self._stats is not None:
            self._stats.noise_bytes += stale
        try:
            self.transport.send(request)
            return self.transport.receive(extract, self.timeout)
        finally:
            self._last_io = time.monotonic()

    def receive(self, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """The next frame of a multi-frame reply (``Link``); waits ``timeout`` for it."""
        try:
            return self.transport.receive(extract, self.timeout)
        finally:
            self._last_io = time.monotonic()

    def _wait_gap(self) -> None:
        wait = self._last_io + self.gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def close(self) -> None:
        """Close the port."""
        self.transport.close()


def zmq_sender(config: Config, context: zmq.Context) -> tuple[zmq.Socket, Callable]:
    """A PUSH socket to the arbiter and a send function that never blocks.

    PUSH does not drop while the arbiter is up; when it is down, sends fail fast (the high-water
    mark is small on purpose: an old state is worth nothing) and are counted as dropped.
    """
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 50)
    sock.setsockopt(zmq.LINGER, 0)
    client_keys(config.zmq, sock)  # a remote poller: CURVE to the arbiter's remote_states
    sock.connect(config.states_endpoint)
    dropped = ChangeLog(log)
    pack = packer()  # this port thread's own
    more, last = int(zmq.SNDMORE | zmq.NOBLOCK), int(zmq.NOBLOCK)  # plain ints: no enum per send

    def send(msg: dict[str, Any]) -> None:
        try:
            # two sends: once the first part is queued the second is too (zmq multipart is atomic)
            sock.send(TOPIC_STATE, more)
            sock.send(pack(msg), last)
            dropped.set("arbiter", "reachable", logging.DEBUG)
        except zmq.Again:
            dropped.set("arbiter", "not taking states (dropping)", logging.WARNING)

    return sock, send


def run(
    config: Config,
    port_name: str,
    stop: Callable[[], bool] = lambda: False,
    hello_interval: float | None = None,
) -> None:
    """Poll ``port_name`` until ``stop()`` is true (or SystemExit from a signal).

    Control requests are served between the exchanges of a cycle and while waiting for the next;
    the poller says hello to the arbiter every ``hello_interval`` seconds (default 5).
    """
    from bmsbank.services.poller.control import HELLO_INTERVAL, PollerControl

    port = config.port(port_name)
    if port.bms == AUTO:
        from bmsbank.services.poller.scan import resolve_auto

        found = resolve_auto(port, stop)
        if found is None:
            return  # stopped while scanning
        port = found
    context: zmq.Context = zmq.Context.instance()
    sock, send = zmq_sender(config, context)
    poller = Poller(port, send, bounds=plausibility.bounds(config.bank, config.topology()))
    control = PollerControl(
        config.control_endpoint, port.name, poller.plugin.name, poller.pack_ids(), context,
        hello_interval or HELLO_INTERVAL,
    )  # fmt: skip
    poller.between = lambda: control.between(poller.control)
    log.info(
        "[%s] polling %s (%s) at %s every %.1f s",
        port.name,
        port.device,
        port.bms,
        port.addresses,
        port.interval,
    )
    try:
        while not stop():
            started = time.monotonic()
            delay = poller.poll_once()
            control.report_link(poller.report)
            control.wait(started + delay - time.monotonic(), poller.control, stop)
    finally:
        poller.close()
        control.close()
        sock.close()


def run_ports(config: Config, port_names: list[str], join_timeout: float = 5.0) -> int:
    """Poll several ports in one process, each in a thread of its own, until SIGTERM/SIGINT.

    One interpreter for all of them: its memory once, and the same code warm in the caches for
    every port (a process per port pays both per port; see docs/PERFORMANCE.md). A port that
    blocks (a USB adapter that hangs a write) blocks only its thread. A thread that dies of an
    unexpected error stops the process with exit status 1, so that supervisord restarts it
    whole instead of it polling on with a port missing.

    Returns:
        The exit status: 0 after a stop signal, 1 when a port's thread failed.

    """
    stopping = threading.Event()
    failed: list[str] = []

    def poll(name: str) -> None:
        try:
            run(config, name, stopping.is_set)
        except Exception:
            log.exception("[%s] poller failed", name)
            failed.append(name)
            stopping.set()

    threads = [threading.Thread(target=poll, args=(name,), name=f"poller-{name}", daemon=True)
               for name in port_names]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        while not stopping.wait(WATCH_INTERVAL):
            pass
    except (SystemExit, KeyboardInterrupt):  # SIGTERM (runtime.exit_on_sigterm) or SIGINT
        stopping.set()
    deadline = time.monotonic() + join_timeout
    for thread in threads:  # each ends after its exchange or wait slice (<= 1 s) in progress
        thread.join(max(0.0, deadline - time.monotonic()))
    if failed:
        log.error("stopping: the poller of %s failed", ", ".join(failed))
        return 1
    return 0
