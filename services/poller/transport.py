"""Serial transport: pyserial on a device path or pyserial URL, one request/reply at a time."""

from __future__ import annotations

import time
from collections.abc import Callable

import serial

from bmsbank.errors import FrameError, LinkTimeout, TransportError


class SerialTransport:
    """A serial port that may come and go (USB adapters do)."""

    def __init__(self, device: str, baudrate: int) -> None:
        self.device = device
        self.baudrate = baudrate
        self.port: serial.SerialBase | None = None

    @property
    def is_open(self) -> bool:
        """True when the port is open."""
        return self.port is not None and self.port.is_open

    def open(self) -> None:
        """Open the port (raises TransportError when it is missing or busy)."""
        try:
            self.port = serial.serial_for_url(
                self.device, baudrate=self.baudrate, timeout=0, write_timeout=1.0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self.port = None
            raise TransportError(f"cannot open {self.device}: {exc}") from exc

    def close(self) -> None:
        """Close the port; safe to call when it is closed."""
        if self.port is not None:
            try:
                self.port.close()
            except (serial.SerialException, OSError):
                pass
        self.port = None

    def drain(self) -> int:
        """Discard bytes that arrived unasked (late replies, line noise); return how many."""
        port = self._port()
        try:
            n = port.in_waiting
            return len(port.read(n)) if n else 0
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"read {self.device}: {exc}") from exc

    def send(self, request: bytes) -> None:
        """Write ``request`` and wait until it has left the driver."""
        port = self._port()
        try:
            port.write(request)
            port.flush()
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"write {self.device}: {exc}") from exc

    def receive(self, extract: Callable[[bytearray], bytes | None], timeout: float) -> bytes:
        """Read until ``extract`` returns a complete reply or ``timeout`` seconds pass.

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
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            frame = extract(buf)
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # What extract() kept is the start of a reply; echoes and noise it dropped are not.
                raise LinkTimeout("truncated" if buf else "timeout")
            try:
                port.timeout = remaining
                chunk = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise TransportError(f"read {self.device}: {exc}") from exc
            buf += chunk

    def _port(self) -> serial.SerialBase:
        if self.port is None:
            raise TransportError(f"{self.device} is not open")
        return self.port


__all__ = ["FrameError", "LinkTimeout", "SerialTransport", "TransportError"]
