"""Send CAN-bus BMS frames with python-can, surviving a missing or failing bus.

The CAN port is the inverter's only source of limits, but a broken adapter must never take the
publisher (and with it the D-Bus service) down. :class:`CanSender` therefore never raises: on any
error (no such interface or port, bus-off, write error) it closes the bus, logs once per state
change (up -> down, down -> up; not once a second while the cable stays unplugged) and reopens
with a backoff of 1 s doubling to 30 s. It only reopens the port: a socketcan controller that
went bus-off is restarted by the kernel when the interface has ``restart-ms`` set (see the
README).

Each cycle also drains what arrived on the bus without waiting (``recv(timeout=0)``) and looks
for the GX's keep-alive 0x305 and its identification 0x307 (seed 004 §3, both sent every second).
:attr:`CanSender.listening` is True while one arrived within :data:`KEEPALIVE_TIMEOUT` seconds.
It is a status for the user (is a GX on this bus, at this bitrate?), never a reason to change
what is sent: the seed's advice of a 10-minute timeout is for batteries that open their
contactor without a keep-alive, which bmsbank never does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import can

from bmsbank.config import CanConfig

log = logging.getLogger(__name__)

KEEPALIVE = 0x305  #: GX -> BMS keep-alive, 8 zero bytes
IDENTIFICATION = 0x307  #: GX -> BMS inverter identification, "VIC" in bytes 4-6
KEEPALIVE_TIMEOUT = 10.0  #: s without 0x305/0x307 after which nobody is listening
MAX_DRAIN = 1000  #: reads per cycle at most (the rest waits for the next cycle)
#: Empty reads in a row that end a drain. One is not enough: slcan returns "nothing" for each
#: line that is not a frame (an adapter's "z" acknowledgement), with frames queued behind it.
IDLE_READS = 50
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
SEND_TIMEOUT = 0.2  # s; a frame not accepted by then means the bus is stuck


class KeepAlive:
    """Keep-alive (0x305) and identification (0x307) frames from the GX; time passed in."""

    def __init__(self, timeout: float = KEEPALIVE_TIMEOUT) -> None:
        self.timeout = timeout
        self.last: float | None = None  #: monotonic time [s] of the last 0x305 or 0x307
        self.identification: bytes | None = None  #: data of the last 0x307, if any came
        self.received = 0  #: keep-alive and identification frames seen
        self.logged = False  #: the listening state last logged

    def feed(self, can_id: int, data: bytes, now: float) -> bool:
        """Note a received frame at ``now`` [s]; True when it was 0x305 or 0x307."""
        if can_id not in (KEEPALIVE, IDENTIFICATION):
            return False
        self.last = now
        self.received += 1
        if can_id == IDENTIFICATION and data != self.identification:
            self.identification = bytes(data)
            log.info("CAN: inverter identification (0x307) %s", self.identification.hex(" "))
        return True

    def listening(self, now: float) -> bool:
        """True when a keep-alive or identification arrived within ``timeout`` seconds."""
        return self.last is not None and now - self.last <= self.timeout

    def check(self, now: float) -> bool:
        """:meth:`listening`, logging once per change; returns it."""
        listening = self.listening(now)
        if listening != self.logged:
            self.logged = listening
            if listening:
                log.info("CAN: keep-alive from the GX received: the GX is listening")
            else:
                log.warning("CAN: no keep-alive (0x305) for %.0f s: is the GX on this bus "
                            "and bitrate?", self.timeout)  # fmt: skip
        return listening


class CanSender:
    """Owns one python-can bus for the publisher's CAN output."""

    def __init__(self, config: CanConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.bus: can.BusABC | None = None
        self.up: bool | None = None  #: None before the first attempt, then the last state
        self.sent = 0  #: frames sent
        self.errors = 0  #: open or send failures
        self.backoff = BACKOFF_FIRST
        self.next_try = 0.0
        self.last_error: str | None = None
        self.keepalive = KeepAlive()

    @property
    def listening(self) -> bool:
        """True when the GX's keep-alive (0x305 or 0x307) arrived within the last 10 s."""
        return self.keepalive.listening(self.clock())

    @property
    def last_keepalive(self) -> float | None:
        """Monotonic time [s] (of ``clock``) of the last keep-alive, None before the first."""
        return self.keepalive.last

    @property
    def identification(self) -> bytes | None:
        """The 8 data bytes of the last 0x307 (``12 34 56 78 'VIC' 00`` from a GX), if any."""
        return self.keepalive.identification

    def _open(self) -> can.BusABC:
        kwargs: dict[str, Any] = {}
        if self.config.interface == "slcan":
            kwargs["sleep_after_open"] = 0  # the default 2 s sleep would stall every reopen
        return can.Bus(
            interface=self.config.interface,
            channel=self.config.channel,
            bitrate=self.config.bitrate,
            **kwargs,
        )

    def send_all(self, frames: Iterable[tuple[int, bytes]]) -> int:
        """Send frames in order, then read what arrived (keep-alives); never raises.

        Called once per cycle, also with no frames: the bus is then opened (or retried) and
        read all the same, so keep-alives are seen before the first bank and while silent.

        Args:
            frames: ``(11-bit id, data)`` pairs, for example from :func:`canbms.frames`.

        Returns:
            The number of frames sent (0 while the bus is down and waiting for its next retry).

        """
        now = self.clock()
        try:
            if self.bus is None and now >= self.next_try:
                self._connect(now)
            return self._cycle(list(frames), now) if self.bus is not None else 0
        finally:
            self.keepalive.check(self.clock())

    def _connect(self, now: float) -> None:
        try:
            self.bus = self._open()
        except Exception as exc:  # python-can raises many types (ImportError, OSError, ...)
            self._fail(exc, now, "open")

    def _cycle(self, frames: list[tuple[int, bytes]], now: float) -> int:
        assert self.bus is not None
        sent = 0
        try:
            for can_id, data in frames:
                msg = can.Message(arbitration_id=can_id, data=data, is_extended_id=False)
                self.bus.send(msg, timeout=SEND_TIMEOUT)
                sent += 1
        except Exception as exc:
            self._fail(exc, now, "send")
            self.sent += sent
            return sent
        self.sent += sent
        if sent:
            self.backoff = BACKOFF_FIRST  # only a working send proves the bus is healthy
            if self.up is not True:
                log.info("CAN %s %s: sending", self.config.interface, self.config.channel)
                self.up = True
        self._receive()
        return sent

    def _receive(self) -> None:
        """Drain the frames that arrived, without waiting, and note keep-alives."""
        assert self.bus is not None
        idle = 0
        try:
            for _ in range(MAX_DRAIN):
                msg = self.bus.recv(timeout=0)
                if msg is None:
                    idle += 1
                    if idle >= IDLE_READS:
                        break
                    continue
                idle = 0
                if not (msg.is_extended_id or msg.is_error_frame or msg.is_remote_frame):
                    self.keepalive.feed(msg.arbitration_id, bytes(msg.data), self.clock())
        except Exception as exc:
            self._fail(exc, self.clock(), "receive")

    def _fail(self, exc: BaseException, now: float, what: str) -> None:
        self.errors += 1
        self.last_error = f"{what}: {exc}"
        self._shutdown()
        self.next_try = now + self.backoff
        if self.up is not False:
            log.warning(
                "CAN %s %s: %s failed (%s); retrying with backoff up to %.0f s",
                self.config.interface, self.config.channel, what, exc, BACKOFF_MAX,
            )  # fmt: skip
            self.up = False
        else:
            log.debug("CAN %s failed again: %s (next try in %.0f s)", what, exc, self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _shutdown(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except Exception as exc:  # a half-dead adapter may fail to close; it is gone anyway
                log.debug("CAN shutdown failed: %s", exc)

    def close(self) -> None:
        """Close the bus (the next :meth:`send_all` reopens it)."""
        self._shutdown()
