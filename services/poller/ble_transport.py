"""BLE transport: a BMS's GATT characteristics through bleak on BlueZ, shaped like a serial port.

:class:`BleTransport` has :class:`~bmsbank.services.poller.transport.SerialTransport`'s interface,
so the :class:`~bmsbank.services.poller.service.Poller` polls a BLE device unchanged: a request is
written to the family's write characteristic, the notifications of its notify characteristic
gather in :attr:`BleTransport.rx`, and the family's framer (``extract``) finds the reply in them
however the device split it (20-byte pieces, one byte each, or records spread over many).

Threads: bleak runs on asyncio. One event loop, in one daemon thread, serves every BleTransport
of the process (:func:`ble_loop`, started on first use); each device is polled by its own poller
thread (``run_ports``), which hands coroutines to that loop and waits for them with a timeout, so
a device that hangs a connect blocks only its own thread. Notifications are appended to ``rx``
under a lock in the loop thread, which also runs the waiting receive's framer on them and wakes
the poller thread through a condition once the reply is whole (or bad): one thread wake-up per
reply, not per notification (a wake-up is ~0.07 ms of CPU here, docs/PERFORMANCE.md), no polling
loop, no per-byte work.

Connecting (:meth:`BleTransport.open`): a device that BlueZ already holds connected (a previous
process left it so) is taken as it is; otherwise the adapter is scanned until the device
advertises (one BlueZ discovery per adapter, shared by every transport looking for a device on
it: BlueZ answers a client's second ``StartDiscovery`` on an adapter with InProgress, bluez
src/adapter.c ``start_discovery``, "Every client can only start one discovery"), then
bleak-retry-connector's ``establish_connection`` connects (its retries cover BlueZ's transient
errors) and notifications are started. Every failure -- adapter missing, device not found, BlueZ
or D-Bus errors, timeouts -- is a :class:`TransportError` with a sentence saying what failed. A
disconnect (the device went away, the adapter was removed) marks the link broken: the next send
or receive raises TransportError with the reason, and the poller closes it and reconnects with
its backoff, here 1 s doubling to 60 s (:attr:`BleTransport.backoff_min` / ``backoff_max``). A
device that stays connected but stops notifying is caught by stall detection
(:attr:`BleTransport.stall_after`); each stalled link in a row doubles the first reconnect delay.

Requests without response (ATT Write Command) are written from the poller thread to the socket
BlueZ's ``AcquireWrite`` hands over (:meth:`BleTransport._acquire_write`): no D-Bus message and
no wake-up of the BLE loop per request; where BlueZ refuses it, they go out as one D-Bus
``WriteValue`` that asks for no reply (:meth:`BleTransport._command_writer`). bench/ble.py
measures the whole poller process per pack-update (docs/PERFORMANCE.md).

Notifications come through BlueZ's ``AcquireNotify`` where the device allows it, else through
``StartNotify``. Why: with ``StartNotify`` every notification is a D-Bus ``PropertiesChanged``
signal that bluetoothd builds and sends, the bus daemon routes and dbus-fast parses in the BLE
loop (bench/ble.py, docs/PERFORMANCE.md: the loop thread 0.36 -> 0.25 ms per pack-update, the
bus daemon's work about halved). ``AcquireNotify`` (bluez
doc/org.bluez.GattCharacteristic.rst) hands a ``SOCK_SEQPACKET`` socket instead: one notification
is one packet, read by bleak with one ``read`` (bleak ``start_notify(...,
bluez={"use_start_notify": False})``), and no D-Bus message at all. bleak uses ``StartNotify`` by
default because "a number of devices have issues with AcquireNotify" (bleak
backends/bluezdbus/client.py ``start_notify``), so the fallback is per device: an
``AcquireNotify`` that fails (BlueZ refuses it, the characteristic has no ``NotifyAcquired``)
makes the transport use ``StartNotify`` at once, one that never answers (the connect times out
in it) from the next connect; so does a link whose notifications stall while acquired without a
single byte having come through the socket (the issue seen: notifications never arrive; a
device that notified and then went quiet is the device's silence, not this). Each is logged
once and sticks for the transport's life (the poller process's). BlueZ closes the socket when
the device disconnects; a socket that closes without a disconnect breaks the link as well
(noticed at the next receive timeout), and the poller reconnects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bmsbank.config import ADAPTER_RE, MAC_RE, ble_target
from bmsbank.errors import FrameError, LinkTimeout, TransportError
from bmsbank.services.poller.plugins.info import Ble

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_MIN = 1.0  #: s, the first reconnect delay (the issue: 1 s doubling to 60 s)
RX_MAX = 65536  #: bytes of unasked notifications kept until the next request drains them

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def ble_loop() -> asyncio.AbstractEventLoop:
    """The process's BLE event loop, running in a daemon thread (started on the first call)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="ble-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def parse_device(device: str) -> tuple[str, str]:
    """``(adapter, MAC upper case)`` of a ``ble:<adapter>/<MAC>`` device string.

    Raises:
        ValueError: ``device`` is not of that form (the message shows the form).

    """
    target = ble_target(device)  # the form [[ble.devices]] makes
    if target is None or not (ADAPTER_RE.match(target[0]) and MAC_RE.match(target[1])):
        raise ValueError(f"BLE device {device!r}: expected ble:<adapter>/<MAC>, "
                         "for example ble:hci0/AA:BB:CC:DD:EE:01")  # fmt: skip
    return target[0], target[1].upper()


class _Finder:
    """One BlueZ discovery on an adapter, shared by every transport looking for a device on it.

    Runs in the BLE loop. The discovery runs while anybody waits and stops when nobody does; a
    discovery that starts while the last one is still stopping waits for it (BlueZ refuses a
    client's second discovery on an adapter).
    """

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.waiters: dict[str, list[asyncio.Future[Any]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.idle = asyncio.Event()  #: set: the running discovery may stop

    async def find(self, mac: str, timeout: float) -> Any:
        """The BLEDevice of ``mac`` once it advertises, None after ``timeout`` seconds.

        Raises:
            TransportError: the discovery could not start (adapter missing, BlueZ down).

        """
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(mac, []).append(fut)
        if self.task is None or self.task.done() or self.idle.is_set():
            self.idle = asyncio.Event()
            self.task = asyncio.create_task(self._scan(self.task, self.idle))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            waiting = self.waiters.get(mac, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self.waiters.pop(mac, None)
            if not self.waiters:
                self.idle.set()

    async def _scan(self, previous: asyncio.Task[None] | None, idle: asyncio.Event) -> None:
        from bleak import BleakScanner

        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        if idle.is_set():
            return  # everybody stopped waiting meanwhile

        def seen(device: Any, _adv: Any) -> None:
            for fut in self.waiters.pop(device.address.upper(), []):
                if not fut.done():
                    fut.set_result(device)
            if not self.waiters:
                idle.set()

        scanner = BleakScanner(detection_callback=seen, bluez={"adapter": self.adapter})
        try:
            await scanner.start()
        except Exception as exc:  # BleakError (adapter missing), D-Bus errors, OSError
            failed = TransportError(
                f"cannot scan on {self.adapter} (adapter missing or BlueZ not running?): "
                f"{_text(exc)}"
            )
            for futs in self.waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(failed)
            return
        try:
            await idle.wait()
        finally:
            try:
                await scanner.stop()
            except Exception as exc:  # the adapter went away while scanning
                log.debug("stopping the scan on %s: %s", self.adapter, exc)


_finders: dict[str, _Finder] = {}  # adapter -> its finder; touched in the BLE loop only


def _finder(adapter: str) -> _Finder:
    finder = _finders.get(adapter)
    if finder is None:
        finder = _finders[adapter] = _Finder(adapter)
    return finder


class BleTransport:
    """One BLE device (``ble:<adapter>/<MAC>``) speaking a family's frames over GATT.

    Args:
        device: ``ble:<adapter>/<MAC>``.
        ble: the family's GATT facts (``FamilyInfo.ble``).

    Attributes:
        baudrate: 0 (a BLE link has none; kept for the serial interface).
        rx: received bytes not consumed yet (owned by the poller thread).
        settled: the last reply ended exactly where the received bytes did.
        backoff_min, backoff_max: the poller's reconnect backoff [s] (1 s doubling to 60 s;
            see :attr:`backoff_min`).
        stall_after: consecutive receives without a single byte after which the link counts
            as stalled (TransportError: the poller drops and reconnects it).
        scan_timeout: s to wait for the device to advertise when (re)connecting.
        connect_timeout: s for a whole :meth:`open` (scan, connect, start notifications).
        write_timeout: s a write may stay unconfirmed before the link counts as failed.
        close_timeout: s :meth:`close` waits for the disconnect.

    """

    backoff_max = 60.0
    stall_after = 3
    scan_timeout = 5.0
    connect_timeout = 30.0
    write_timeout = 5.0
    close_timeout = 5.0

    def __init__(self, device: str, ble: Ble) -> None:
        self.adapter, self.address = parse_device(device)
        self.device = device
        self.ble = ble
        self.baudrate = 0
        self.rx = bytearray()  #: guarded by _cond (the loop appends, see _on_notify)
        self.settled = False
        self._cond = threading.Condition(threading.Lock())
        self._failure: str | None = None  #: why the link broke (guarded by _cond)
        #: while a receive waits: its framer, run by the loop on every notification (_cond)
        self._extract: Callable[[bytearray], bytes | None] | None = None
        self._outcome: bytes | Exception | None = None  #: the waiting receive's result (_cond)
        self._got = False  #: a byte arrived since the waiting receive began (_cond)
        self._client: Any = None
        self._write_char: Any = None
        self._command: Callable[[bytes], None] | None = None  #: see _command_writer
        self._write_fd: int | None = None  #: the AcquireWrite socket (see _acquire_write)
        self.acquire_write = True  #: try AcquireWrite at the next connect (False: it failed)
        self._writing: concurrent.futures.Future[Any] | None = None
        self._quiet = 0  #: consecutive receives that got no byte at all
        self._stalls = 0  #: links dropped as stalled since the device last sent a byte
        self._generation = 0  #: bumped by close(): an old connection's callbacks are ignored
        self.acquire = True  #: try AcquireNotify at the next connect (False: fell back for good)
        self._acquired: str | None = None  #: D-Bus path of the acquired characteristic
        self._acquired_bytes = False  #: bytes came through the acquired socket on this link
        self._acquiring = False  #: an AcquireNotify call is under way (or hung)

    # -- the serial interface -----------------------------------------------------------------
    @property
    def backoff_min(self) -> float:
        """The first reconnect delay [s]: 1 s, doubled for every stalled link in a row.

        A device that connects and then never notifies would otherwise be reconnected (and the
        poller's loss and reopening logged) every few seconds for ever; this way the delays grow
        1, 2, 4 ... 60 s, as for a device that is gone, until it sends a byte again.
        """
        return min(BACKOFF_MIN * 2.0**self._stalls, self.backoff_max)

    @property
    def is_open(self) -> bool:
        """True from a successful :meth:`open` to :meth:`close`, like a serial port's.

        A link that broke meanwhile (the device went away, a write failed) stays "open" until
        the next send or receive raises TransportError: the poller then logs the loss with its
        reason and closes it.
        """
        return self._client is not None

    def open(self) -> None:
        """Connect and start notifications (raises TransportError on any failure)."""
        self.close()
        self._acquiring = False
        try:
            self._client = self._run(self._connect(), self.connect_timeout, "connect")
        except TransportError:
            if self._acquiring and self.acquire:  # the connect timed out waiting for it
                self.acquire = False
                log.warning("%s: AcquireNotify did not answer; using StartNotify from the "
                            "next connect", self.device)  # fmt: skip
            raise
        except Exception as exc:  # BleakError, D-Bus errors, OSError, KeyError from bleak
            raise TransportError(f"cannot connect {self.device}: {_text(exc)}") from exc
        self.settled = False
        self._quiet = 0

    def close(self) -> None:
        """Disconnect (waiting at most :attr:`close_timeout`); safe to call when closed."""
        client, self._client = self._client, None
        self._generation += 1
        self._write_char = None
        self._command = None
        fd, self._write_fd = self._write_fd, None
        if fd is not None:
            try:
                os.close(fd)  # releases the acquisition in BlueZ
            except OSError as exc:  # already closed
                log.debug("%s: closing the write socket: %s", self.device, exc)
        self._writing = None
        self._acquired = None
        with self._cond:
            self.rx.clear()
            self._failure = None
        if client is None:
            return
        try:
            self._run(_disconnect(client), self.close_timeout, "disconnect")
        except Exception as exc:  # the device or adapter is already gone: nothing to undo
            log.debug("%s: disconnect: %s", self.device, _text(exc))

    def unsettle(self) -> None:
        """Make the next :meth:`drain` discard what gathered (see :meth:`drain`)."""
        self.settled = False

    def drain(self) -> int:
        """Discard the notification bytes that arrived unasked; return 0.

        A BLE device may notify without being asked -- JK BMSs stream records once started --
        and a late reply to a timed-out request lands here too. That is the device's normal
        traffic, not line noise: it is discarded, not counted as noise bytes. (Bytes that came,
        however unasked, also prove the notifications are alive: they reset stall detection.)
        """
        with self._cond:
            if self.rx:
                self._quiet = self._stalls = 0
                self.rx.clear()
        return 0

    def send(self, request: bytes) -> None:
        """Write ``request`` to the write characteristic (the reply timeout runs from here).

        A write without response (ATT Write Command: the device confirms nothing, JBD's way) is
        one ``write`` on the socket BlueZ's ``AcquireWrite`` handed over, from this thread (see
        :meth:`_acquire_write`); where that socket could not be had, one D-Bus ``WriteValue``
        handed to the BLE loop that asks BlueZ for no reply (see :meth:`_command_writer`). Either
        way it is not waited for: its outcome comes back with the reply. A write with response
        goes through bleak's ``write_gatt_char``, and its failure ends the wait in
        :meth:`receive` with TransportError. A write still unconfirmed from the last request is
        waited for first (:attr:`write_timeout`).

        Raises:
            TransportError: not connected, or the previous write failed or hangs.

        """
        client = self._checked()
        fd = self._write_fd
        if fd is not None:
            try:
                os.write(fd, request)  # one packet, one ATT Write Command (see _acquire_write)
            except BlockingIOError:
                raise TransportError(f"write {self.device}: BlueZ takes no more writes") from None
            except OSError as exc:  # EPIPE, ECONNRESET: BlueZ hung up (device gone)
                why = f"write socket closed by BlueZ ({exc.strerror}; disconnected?)"
                self._fail(why)
                raise TransportError(f"{self.device}: {why}") from exc
            return
        if self._command is not None:
            ble_loop().call_soon_threadsafe(self._command, bytes(request))
            return
        previous = self._writing
        if previous is not None and not previous.done():
            try:
                previous.result(self.write_timeout)
            except Exception as exc:  # its failure is reported through _failure too
                raise TransportError(f"write {self.device}: {_text(exc)}") from exc
        self._writing = asyncio.run_coroutine_threadsafe(
            self._write(client, bytes(request)), ble_loop()
        )

    def receive(self, extract: Callable[[bytearray], bytes | None], timeout: float) -> bytes:
        """Wait until ``extract`` returns a complete reply or ``timeout`` seconds pass.

        Same contract as ``SerialTransport.receive``: bytes after the reply stay in ``rx``.

        Args:
            extract: takes the receive buffer, removes what it consumes, returns a frame or None;
                it raises FrameError for a corrupt frame, which ends the exchange.
            timeout: seconds from now.

        Raises:
            LinkTimeout: no reply began ("timeout") or only part of one arrived ("truncated").
            FrameError: the reply was corrupt.
            TransportError: the link broke, or :attr:`stall_after` receives in a row got no
                byte at all ("notifications stalled").

        """
        self._checked()
        deadline = time.monotonic() + timeout
        self.settled = False
        cond = self._cond
        with cond:
            outcome: bytes | Exception | None = extract(self.rx) if self.rx else None
            if outcome is None:
                # the loop runs the framer on each notification and wakes this thread once,
                # for a whole frame (or a bad one): no wake-up per notification
                self._extract, self._outcome, self._got = extract, None, False
                try:
                    while self._outcome is None and self._failure is None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        cond.wait(remaining)
                finally:
                    self._extract = None
                outcome, failure, got = self._outcome, self._failure, self._got
            else:
                failure, got = None, False
            rest = len(self.rx)
        if got:
            self._quiet = self._stalls = 0
        if isinstance(outcome, Exception):
            raise outcome  # FrameError; anything else is a framer bug, raised in this thread
        if outcome is not None:
            self.settled = not rest
            return outcome
        if failure is not None:
            raise TransportError(f"{self.device}: {failure}")
        if self._acquired is not None and not self._socket_open(self._acquired):
            self._fail("notification socket closed by BlueZ")
            raise TransportError(f"{self.device}: notification socket closed by BlueZ")
        if not rest:
            self._quiet += 1
            if self._quiet >= self.stall_after:
                self._quiet = 0
                self._stalls = min(self._stalls + 1, 16)
                if self._acquired is not None and not self._acquired_bytes and self.acquire:
                    self.acquire = False
                    log.warning(
                        "%s: no notification ever came through AcquireNotify; "
                        "using StartNotify from the next connect", self.device,
                    )  # fmt: skip
                raise TransportError(
                    f"{self.device}: notifications stalled "
                    f"({self.stall_after} requests in a row got no byte)"
                )
        raise LinkTimeout("truncated" if rest else "timeout")

    # -- the BLE loop side ----------------------------------------------------------------------
    def _checked(self) -> Any:
        """The connected client; TransportError when there is none or the link broke."""
        client = self._client
        if client is None:
            raise TransportError(f"{self.device} is not connected")
        failure = self._failure
        if failure is not None:
            raise TransportError(f"{self.device}: {failure}")
        return client

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """Run ``coro`` in the BLE loop and wait for it at most ``timeout`` seconds."""
        fut = asyncio.run_coroutine_threadsafe(coro, ble_loop())
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TransportError(f"{what} {self.device}: no answer within {timeout:g} s") from None

    async def _connect(self) -> Any:
        from bleak import BleakScanner  # noqa: F401 (imported here: only BLE ports need bleak)
        from bleak_retry_connector import (
            BleakClientWithServiceCache,
            establish_connection,
            get_device_by_adapter,
        )

        device = await get_device_by_adapter(self.address, self.adapter)
        if device is None or not device.details.get("props", {}).get("Connected"):
            device = await _finder(self.adapter).find(self.address, self.scan_timeout)
        if device is None:
            raise TransportError(
                f"{self.address} not seen on {self.adapter} within {self.scan_timeout:g} s "
                "(out of range or switched off?)"
            )
        generation = self._generation
        client = await establish_connection(
            BleakClientWithServiceCache, device, self.device,
            disconnected_callback=lambda _client: self._on_disconnect(generation),
            max_attempts=2,
        )  # fmt: skip
        try:
            services = client.services
            notify = services.get_characteristic(self.ble.notify)
            self._write_char = services.get_characteristic(self.ble.write)
            if notify is None or self._write_char is None:
                raise TransportError(
                    f"{self.device} has no characteristic {self.ble.notify} / {self.ble.write} "
                    f"(not a device of this family?)"
                )
            await self._start_notify(client, notify)
            self._write_fd = await self._acquire_write(client)
            if self._write_fd is None:
                self._command = self._command_writer(client)
        except BaseException:
            await _disconnect(client)
            raise
        if not client.is_connected:
            raise TransportError(f"{self.device} disconnected while connecting")
        return client

    async def _start_notify(self, client: Any, notify: Any) -> None:
        """Start notifications: AcquireNotify unless it failed before, else StartNotify.

        An AcquireNotify that fails while the device stays connected turns it off for this
        transport (logged once) and StartNotify is used at once; a failure because the device
        went away is raised like any other. One that never answers (the connect times out in
        it) turns it off from the next connect.
        """
        self._acquired = None
        self._acquired_bytes = False
        if self.acquire:
            self._acquiring = True
            try:
                await client.start_notify(
                    notify, self._on_notify, bluez={"use_start_notify": False}
                )
            except Exception as exc:  # BleakDBusError: NotSupported, NotPermitted, Failed
                self._acquiring = False
                if not client.is_connected:
                    raise
                self.acquire = False
                log.warning("%s: AcquireNotify failed (%s); using StartNotify",
                            self.device, _text(exc))  # fmt: skip
            else:
                self._acquiring = False
                path = str(notify.obj[0]) if isinstance(notify.obj, tuple) else None
                fds = _notification_fds(client)
                if fds is not None and path in fds:
                    self._acquired = path
                    return
                if fds is not None:
                    # bleak took StartNotify itself: no NotifyAcquired on the characteristic
                    self.acquire = False
                    log.warning("%s: the notify characteristic offers no AcquireNotify; "
                                "using StartNotify", self.device)  # fmt: skip
                return
        await client.start_notify(notify, self._on_notify)

    async def _acquire_write(self, client: Any) -> int | None:
        """The socket of BlueZ's ``AcquireWrite`` on the write characteristic, else None.

        Why: a request written there is one ``write`` from the poller thread, which bluetoothd
        reads and sends as an ATT Write Command (bluez src/gatt-client.c ``create_sock``,
        ``sock_read``): no D-Bus message, no wake-up of the BLE loop (two a pack-update for JBD,
        bench/ble.py). BlueZ offers it only for a characteristic flagged
        "write-without-response" (``characteristic_acquire_write``); the socket is
        non-blocking, and BlueZ closes its end when the device disconnects, so a write then
        fails with EPIPE. A family that writes with response, a characteristic without the
        flag, or a refusal (logged once; sticks for the transport's life) leaves None: the
        writes go through ``WriteValue``.
        """
        char = self._write_char
        obj = getattr(char, "obj", None)
        bus = getattr(getattr(client, "_backend", None), "_bus", None)
        if (self.ble.with_response or not self.acquire_write or bus is None
                or not isinstance(obj, tuple) or not obj
                or "write-without-response" not in getattr(char, "properties", ())):  # fmt: skip
            return None
        from dbus_fast import Message, MessageType

        reply = await bus.call(Message(
            destination="org.bluez", path=str(obj[0]), interface="org.bluez.GattCharacteristic1",
            member="AcquireWrite", signature="a{sv}", body=[{}],
        ))  # fmt: skip
        if reply.message_type == MessageType.ERROR:
            if not client.is_connected:
                raise TransportError(f"{self.device} disconnected while connecting")
            self.acquire_write = False
            why = " ".join(map(str, reply.body)) or reply.error_name
            log.warning("%s: AcquireWrite failed (%s); writing through WriteValue",
                        self.device, why)  # fmt: skip
            return None
        fd = reply.unix_fds[reply.body[0]]
        os.set_blocking(fd, False)  # BlueZ's socketpair is; a fake's may not be
        return fd

    def _socket_open(self, path: str) -> bool:
        """Whether bleak still reads the acquired socket of ``path`` (it drops it on hang-up)."""
        fds = _notification_fds(self._client)
        return fds is None or path in fds

    def _command_writer(self, client: Any) -> Callable[[bytes], None] | None:
        """A write without response as one D-Bus message, no reply asked; None: use bleak's.

        bleak's ``write_gatt_char`` waits for BlueZ's reply to ``WriteValue`` even for an ATT
        Write Command, which the device never confirms: a D-Bus message to read, a future and
        a task per request, half the BLE loop's work per pack-update (bench/ble.py). This sends
        the same ``WriteValue`` (``type`` "command", as bleak does) with D-Bus's
        NO_REPLY_EXPECTED flag on the client's own connection, called in the BLE loop. It
        reads bleak's BlueZ backend attributes (``BleakClient._backend._bus``, the
        characteristic's ``obj`` path); where they are not there (another bleak version or
        backend) bleak's own write is used. A write BlueZ refuses is then not reported: the
        request goes unanswered, and stall detection or the disconnect callback ends the link.
        """
        if self.ble.with_response:
            return None
        bus = getattr(getattr(client, "_backend", None), "_bus", None)
        obj = getattr(self._write_char, "obj", None)
        if bus is None or not hasattr(bus, "send") or not isinstance(obj, tuple) or not obj:
            return None
        from dbus_fast import Message, MessageFlag, Variant

        path = str(obj[0])
        options = {"type": Variant("s", "command")}

        def write(data: bytes) -> None:
            try:
                bus.send(Message(
                    destination="org.bluez", path=path,
                    interface="org.bluez.GattCharacteristic1", member="WriteValue",
                    signature="aya{sv}", body=[data, options],
                    flags=MessageFlag.NO_REPLY_EXPECTED,
                ))  # fmt: skip
            except Exception as exc:  # the client's bus is closed or broken
                self._fail(f"write failed: {_text(exc)}")

        return write

    def _on_notify(self, _char: Any, data: bytearray) -> None:
        with self._cond:
            rx = self.rx
            rx += data
            self._got = self._acquired_bytes = True
            extract = self._extract
            if extract is None:
                if len(rx) > RX_MAX:  # unasked notifications pile up (JK streams records)
                    del rx[: len(rx) - RX_MAX]
                return
            outcome: bytes | Exception | None
            try:
                outcome = extract(rx)
            except Exception as exc:  # FrameError: ends the exchange in the poller thread
                outcome = exc
            if outcome is not None:
                self._outcome, self._extract = outcome, None
                self._cond.notify()

    def _on_disconnect(self, generation: int) -> None:
        if generation != self._generation:
            return  # an earlier connection's late callback
        self._fail("disconnected (device gone or adapter removed)")

    def _fail(self, why: str) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = why
            self._cond.notify_all()

    async def _write(self, client: Any, data: bytes) -> None:
        try:
            await client.write_gatt_char(self._write_char, data, response=self.ble.with_response)
        except Exception as exc:  # BleakError, D-Bus errors, EOFError of a dead bus
            self._fail(f"write failed: {_text(exc)}")
            raise


def _notification_fds(client: Any) -> dict[str, int] | None:
    """The acquired sockets in bleak's BlueZ backend: path -> fd (None: not there)."""
    fds = getattr(getattr(client, "_backend", None), "_notification_fds", None)
    return fds if isinstance(fds, dict) else None


async def _disconnect(client: Any) -> None:
    # bleak's disconnect leaves acquired sockets open (it only drops one on a hang-up): close them
    # first, which also releases the acquisition in BlueZ
    fds = _notification_fds(client)
    if fds:
        loop = asyncio.get_running_loop()
        for path in list(fds):
            fd = fds.pop(path)
            loop.remove_reader(fd)
            try:
                os.close(fd)
            except OSError as exc:  # already closed
                log.debug("closing the notification socket: %s", exc)
    try:
        await client.disconnect()
    except Exception as exc:  # already gone
        log.debug("disconnect: %s", _text(exc))


def _text(exc: BaseException) -> str:
    """An exception as one short line.

    bleak's TimeoutError has no text; D-Bus error texts end in a newline; bleak's GATT protocol
    errors carry (code, text), shown as the text.
    """
    args = exc.args
    text = args[-1] if len(args) > 1 and isinstance(args[-1], str) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


__all__ = ["BleTransport", "FrameError", "LinkTimeout", "TransportError", "ble_loop"]
