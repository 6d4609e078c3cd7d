"""Serial transport: pyserial on a device path or pyserial URL, one request/reply at a time.

RS485 adapters on CH340/CH341 chips (and any half-duplex adapter without echo suppression) hear
what they send: the transport drops the echo of its own request for every family, as the port's
``echo`` option says: "auto" drops an exact copy of the request at the head of what arrives,
True drops as many bytes as the request had whatever they are (an adapter that always echoes,
even garbled), False keeps everything (a reply may legitimately repeat the request, as a Modbus
FC06 acknowledgement does).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

import serial

from bmsbank.errors import FrameError, LinkTimeout, TransportError

HEARD_MAX = 64  #: bytes kept of what the port heard (a sample to tell whose frames they are)


class SerialTransport:
    """A serial port that may come and go (USB adapters do)."""

    def __init__(
        self, device: str, baudrate: int, echo: str | bool = "auto", parity: str = "N"
    ) -> None:
        self.device = device
        self.baudrate = baudrate
        self.parity = parity  #: "N", "E" or "O" (ECS speaks 8E1; the other families 8N1)
        self.echo = echo
        self.port: serial.SerialBase | None = None
        self.rx = bytearray()  #: received bytes not consumed yet (a multi-frame reply's rest)
        self.echoes = 0  #: echoes of our own requests dropped
        self._pending = b""  #: the request whose echo may still arrive
        self._echoed = b""  #: the copy "auto" dropped (a reply may repeat its request exactly)
        self._fd: int | None = None  #: the port's file descriptor, read directly (see _read)
        self._poll = select.poll()
        #: the last reply ended exactly where the received bytes did and nothing went wrong since:
        #: no stale bytes are expected, so :meth:`drain` spares its syscall (one of the few an
        #: exchange makes). Anything unusual clears it (see :meth:`unsettle`).
        self.settled = False
        #: the first bytes heard since the poller last cleared it (bounded: HEARD_MAX); the
        #: poller looks at it only when no valid reply came (:mod:`..sniff`)
        self.heard = bytearray()

    @property
    def is_open(self) -> bool:
        """True when the port is open."""
        return self.port is not None and self.port.is_open

    def open(self) -> None:
        """Open the port (raises TransportError when it is missing or busy)."""
        try:
            self.port = serial.serial_for_url(
                self.device, baudrate=self.baudrate, parity=self.parity, timeout=0,
                write_timeout=1.0, exclusive=True,
            )  # fmt: skip
        except (serial.SerialException, OSError, ValueError) as exc:
            self.port = None
            raise TransportError(f"cannot open {self.device}: {exc}") from exc
        self.settled = False  # whatever the adapter buffered before we opened it is stale
        try:
            self._fd = self.port.fileno()
        except (AttributeError, OSError, serial.SerialException):
            self._fd = None  # a pyserial URL handler without a descriptor: its own read()
        else:
            self._poll = select.poll()  # registered once: waiting is one syscall, no fd lists
            self._poll.register(self._fd, select.POLLIN)

    def close(self) -> None:
        """Close the port; safe to call when it is closed."""
        if self.port is not None:
            try:
                self.port.close()
            except (serial.SerialException, OSError):
                pass
        self.port = None
        self._fd = None

    def unsettle(self) -> None:
        """Make the next :meth:`drain` ask the driver (a reply was wrong, late or missing)."""
        self.settled = False

    def drain(self) -> int:
        """Discard bytes that arrived unasked (late replies, line noise); return how many.

        Right after a clean exchange (:attr:`settled`) the driver is not asked: bytes that come
        unasked in that instant reach the framer, which skips noise (counted) and whose frame the
        family checks (a wrong one unsettles the port, and the retry drains). The poller
        unsettles the port at the start of every poll cycle, so what gathered while it idled is
        always asked for.
        """
        port = self._port()
        stale = len(self.rx)
        self.rx.clear()
        if self.settled:
            return stale
        try:
            n = port.in_waiting
            if not n:
                return stale
            data = port.read(n)
            if len(self.heard) < HEARD_MAX:
                self.heard += data[:HEARD_MAX]
            return stale + len(data)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"read {self.device}: {exc}") from exc

    def send(self, request: bytes) -> None:
        """Hand ``request`` to the driver (the reply timeout runs from here).

        Written straight to the descriptor, without waiting for the line to drain (tcdrain): a
        request is a few bytes, a few ms on the wire against a reply timeout of 0.5 s, and the
        syscall saved is one of the few a poll cycle makes.
        """
        port = self._port()
        self._pending = bytes(request) if self.echo is not False else b""
        self._echoed = b""
        try:
            if self._fd is None:
                port.write(request)
                port.flush()
                return
            view = memoryview(request)
            while view:
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:  # the driver's buffer is full: wait for room
                    self._poll_out(port)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"write {self.device}: {exc}") from exc

    def _poll_out(self, port: serial.SerialBase) -> None:
        """Wait up to the write timeout for room in the driver's output buffer."""
        waiter = select.poll()
        waiter.register(self._fd, select.POLLOUT)  # type: ignore[arg-type]
        if not waiter.poll(int((port.write_timeout or 1.0) * 1000)):
            raise TransportError(f"write {self.device}: timed out")

    def _drop_echo(self) -> bool:
        """Drop the echo of the last request from the head of ``rx``; False while undecided."""
        pending = self._pending
        if not pending:
            return True
        head = bytes(self.rx[: len(pending)])
        if self.echo is True or head == pending:
            if len(head) < len(pending):
                return False
            del self.rx[: len(pending)]
            self.echoes += 1
            self._echoed = head if self.echo == "auto" else b""
        elif pending.startswith(head):
            return False  # an echo may still be arriving
        self._pending = b""
        return True

    def receive(self, extract: Callable[[bytearray], bytes | None], timeout: float) -> bytes:
        """Read until ``extract`` returns a complete reply or ``timeout`` seconds pass.

        Bytes after the reply stay in ``rx`` for the next call (the next frame of a multi-frame
        reply); :meth:`drain` discards them before the next request.

        Args:
            extract: takes the receive buffer, removes what it consumes, returns a frame or None;
                it raises FrameError for a corrupt frame, which ends the exchange.
            timeout: seconds from now.

        Raises:
            LinkTimeout: no reply began ("timeout") or only part of one arrived ("truncated").
            FrameError: the reply was corrupt.
            TransportError: the port failed.

        """
        port = self._port()
        deadline = time.monotonic() + timeout
        self.settled = False  # until a frame ends exactly where the bytes do
        while True:
            if self._drop_echo():
                frame = extract(self.rx)
                if frame is not None:
                    self.settled = not self.rx and not self._pending
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self._pending or self._echoed:  # what looked like an echo was the reply
                    restored = self._echoed
                    self.rx[:0] = restored
                    self._pending = self._echoed = b""
                    frame = extract(self.rx)
                    if frame is not None:
                        self.echoes -= bool(restored)
                        return frame
                # What extract() kept is the start of a reply; echoes and noise it dropped are not.
                raise LinkTimeout("truncated" if self.rx else "timeout")
            self.rx += self._read(port, remaining)

    def _read(self, port: serial.SerialBase, timeout: float) -> bytes:
        """What arrives within ``timeout`` seconds (b"" when nothing does).

        The descriptor is waited on with poll and read directly: setting pyserial's timeout
        reconfigures the port (tcsetattr) on every change, which cost more CPU than the whole
        decode. The port stays non-blocking (opened with timeout 0).

        Raises:
            TransportError: the port failed or vanished (readable, yet no data: unplugged).

        """
        try:
            if self._fd is None:
                port.timeout = timeout
                return bytes(port.read(port.in_waiting or 1))
            if not self._poll.poll(max(1, int(timeout * 1000 + 0.999))):
                return b""
            data = os.read(self._fd, 4096)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"read {self.device}: {exc}") from exc
        if not data:
            raise TransportError(f"read {self.device}: readable but no data (device gone?)")
        if len(self.heard) < HEARD_MAX:
            self.heard += data[:HEARD_MAX]
        return data

    def _port(self) -> serial.SerialBase:
        if self.port is None:
            raise TransportError(f"{self.device} is not open")
        return self.port


__all__ = ["FrameError", "LinkTimeout", "SerialTransport", "TransportError"]
