"""Send CAN-bus BMS frames with python-can, surviving a missing or failing bus.

The CAN port is the inverter's only source of limits, but a broken adapter must never take the
publisher (and with it the D-Bus service) down. :class:`CanSender` therefore never raises: on any
error (no such interface or port, bus-off, write error) it closes the bus, logs once per state
change (up -> down, down -> up; not once a second while the cable stays unplugged) and reopens
with a backoff of 1 s doubling to 30 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import can

from bmsbank.config import CanConfig

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
SEND_TIMEOUT = 0.2  # s; a frame not accepted by then means the bus is stuck


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
        """Send frames in order; never raises.

        Args:
            frames: ``(11-bit id, data)`` pairs, for example from :func:`canbms.frames`.

        Returns:
            The number of frames sent (0 while the bus is down and waiting for its next retry).

        """
        now = self.clock()
        if self.bus is None:
            if now < self.next_try:
                return 0
            try:
                self.bus = self._open()
            except Exception as exc:  # python-can raises many types (ImportError, OSError, ...)
                self._fail(exc, now, "open")
                return 0
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
        self.backoff = BACKOFF_FIRST  # only a working send proves the bus is healthy
        if self.up is not True:
            log.info("CAN %s %s: sending", self.config.interface, self.config.channel)
            self.up = True
        return sent

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
