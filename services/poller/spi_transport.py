"""SPI transport: the poller's link to a chip on an SPI bus, with the serial transport's interface.

A family whose ``FamilyInfo.link`` starts with "SPI" (the MNB's MAX17853) gets this transport
instead of :class:`~bmsbank.services.poller.transport.SerialTransport`; the poller, the families'
``Link`` and the error counters see no difference. SPI is full duplex and the host clocks it:
:meth:`SpiTransport.send` is one transaction (chip select held for the whole request,
``xfer2``), and the bytes the chip shifted out meanwhile are the reply that
:meth:`SpiTransport.receive` hands to the family's ``extract``. Nothing arrives unasked, so there
is no echo and no stale input; a reply that is not a whole frame is reported at once.

Devices (a port's ``device``):

- ``/dev/spidevB.D``: SPI bus B, chip select D, through the ``spidev`` module (py-spidev),
  imported when such a port opens: install it with ``pip install spidev`` (or the package's
  ``spi`` extra). A machine without it loses only its SPI ports, with a message saying so.
- ``spisim:/path/to/socket``: the test and demo stand-in. :class:`SpiSocketServer` serves a
  simulated chip (anything with ``transfer(bytes) -> bytes``) on a Unix socket, and
  :class:`SpiSocketClient` offers the ``SpiDev`` methods the transport uses, so a poller in
  another process reads the simulated chip exactly as it would read a real one.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from bmsbank.errors import LinkTimeout, TransportError

SIMULATED = "spisim:"  #: device prefix of the socket stand-in
DEVICE_RE = re.compile(r"/dev/spidev(\d+)\.(\d+)")
SPI_MODE = 0  #: clock idle low, data sampled on the rising edge (the MNB driver's mode 0)
MAX_TRANSFER = 4096  #: bytes one transaction may carry (the spidev driver's default buffer)
LENGTH = struct.Struct(">H")  #: the stand-in's framing: a length, then the MOSI bytes


def open_spi(device: str, speed_hz: int) -> Any:
    """An open ``SpiDev`` (or the stand-in's client) for ``device`` at ``speed_hz``.

    Raises:
        TransportError: not an SPI device name, spidev missing, or the device cannot be opened.

    """
    if device.startswith(SIMULATED):
        try:
            return SpiSocketClient(device[len(SIMULATED) :])
        except OSError as exc:
            raise TransportError(f"cannot open {device}: {exc}") from exc
    match = DEVICE_RE.fullmatch(device)
    if match is None:
        raise TransportError(f"{device!r} is not an SPI device: /dev/spidevB.D or spisim:/path")
    try:
        spidev = importlib.import_module("spidev")
    except ImportError as exc:
        raise TransportError(f"{device}: the SPI transport needs the spidev module "
                             "(pip install spidev)") from exc  # fmt: skip
    spi = spidev.SpiDev()
    try:
        spi.open(int(match[1]), int(match[2]))
        spi.max_speed_hz = speed_hz
        spi.mode = SPI_MODE
    except (OSError, ValueError, TypeError) as exc:
        spi.close()
        raise TransportError(f"cannot open {device}: {exc}") from exc
    return spi


class SpiTransport:
    """An SPI device with the interface of ``SerialTransport`` (one request/reply at a time)."""

    def __init__(
        self, device: str, baudrate: int, echo: str | bool = "auto", parity: str = "N"
    ) -> None:
        self.device = device
        self.baudrate = baudrate  #: the SPI clock [Hz]
        self.parity = parity  #: unused: kept for the serial transport's signature
        self.echo = echo  #: unused: an SPI bus has no echo
        self.spi: Any = None
        self.rx = bytearray()  #: reply bytes not consumed yet
        self.echoes = 0  #: always 0 (the serial transport's counter)
        self.settled = False

    @property
    def is_open(self) -> bool:
        """True when the device is open."""
        return self.spi is not None

    def open(self) -> None:
        """Open the device (raises TransportError when it is missing or unusable)."""
        self.spi = open_spi(self.device, self.baudrate)
        self.rx.clear()

    def close(self) -> None:
        """Close the device; safe to call when it is closed."""
        if self.spi is not None:
            try:
                self.spi.close()
            except OSError:
                pass
        self.spi = None

    def unsettle(self) -> None:
        """Nothing to do: no byte reaches an SPI host unasked (the serial transport's hook)."""
        self.settled = False

    def drain(self) -> int:
        """Drop reply bytes no frame took; return how many."""
        stale = len(self.rx)
        self.rx.clear()
        return stale

    def send(self, request: bytes) -> None:
        """One transaction: clock ``request`` out, keep what the chip clocked in.

        Raises:
            TransportError: the device failed, or returned another number of bytes.

        """
        spi = self._spi()
        if not request or len(request) > MAX_TRANSFER:
            raise TransportError(f"{self.device}: a transaction carries 1-{MAX_TRANSFER} bytes")
        try:
            reply = bytes(spi.xfer2(list(request)))
        except (OSError, ValueError, TypeError) as exc:
            raise TransportError(f"transfer {self.device}: {exc}") from exc
        if len(reply) != len(request):
            raise TransportError(f"transfer {self.device}: {len(reply)} bytes back for "
                                 f"{len(request)}")  # fmt: skip
        self.rx += reply

    def receive(self, extract: Callable[[bytearray], bytes | None], timeout: float) -> bytes:
        """The reply frame in what the last transaction returned (``timeout`` is not needed).

        Raises:
            LinkTimeout: no complete frame in it ("truncated"), or nothing left ("timeout").
            FrameError: the reply was corrupt.

        """
        self._spi()
        frame = extract(self.rx)
        if frame is None:
            raise LinkTimeout("truncated" if self.rx else "timeout")
        self.settled = not self.rx
        return frame

    def _spi(self) -> Any:
        if self.spi is None:
            raise TransportError(f"{self.device} is not open")
        return self.spi


class SpiSocketClient:
    """The ``spidev.SpiDev`` methods the transport uses, on a :class:`SpiSocketServer` socket.

    The test and demo stand-in for a real SPI device. Each transaction is sent as a 2-byte
    length and the bytes; the server answers with exactly as many bytes.
    """

    def __init__(self, path: str, timeout: float = 1.0) -> None:
        self.path = path
        self.max_speed_hz = 0
        self.mode = SPI_MODE
        self.sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise

    def xfer2(self, values: list[int]) -> list[int]:
        """One transaction: ``values`` out, the same number of bytes back.

        Raises:
            OSError: the socket failed or the server went away.

        """
        if self.sock is None:
            raise OSError("closed")
        data = bytes(values)
        self.sock.sendall(LENGTH.pack(len(data)) + data)
        return list(_recv_exact(self.sock, len(data)))

    def close(self) -> None:
        """Close the socket."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise ConnectionError("the SPI stand-in closed the connection")
        out += chunk
    return bytes(out)


class SpiSocketServer:
    """Serves a simulated SPI chip on a Unix socket (the test and demo stand-in for the bus).

    ``chip`` answers a transaction with ``transfer(bytes) -> bytes``; its ``packs`` (battery
    models) are advanced in time while it serves, as the pty server does for serial simulators,
    and their true values written to ``snapshot`` (JSON) twice a second when one is given.
    """

    def __init__(self, chip: Any, path: str, snapshot: str | None = None) -> None:
        self.chip = chip
        self.path = path
        self.snapshot_path = snapshot
        self.transactions = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # a socket left by a server that was killed
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)

    @property
    def device(self) -> str:
        """The ``device`` a port names to reach this chip."""
        return SIMULATED + self.path

    def start(self) -> SpiSocketServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve, name="spi-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and remove its path."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def serve(self) -> None:
        """Answer transactions until :meth:`stop` (blocking)."""
        clients: dict[socket.socket, bytearray] = {}
        last = last_snapshot = time.monotonic()
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self.listener, *clients], [], [], 0.05)
                now = time.monotonic()
                for model in self.chip.packs.values():
                    model.step(now - last)
                last = now
                if now - last_snapshot > 0.5:
                    self._write_snapshot()
                    last_snapshot = now
                for sock in ready:
                    if sock is self.listener:
                        conn, _ = self.listener.accept()
                        clients[conn] = bytearray()
                    elif not self._serve_one(sock, clients[sock]):
                        sock.close()
                        del clients[sock]
        finally:
            for sock in clients:
                sock.close()

    def _serve_one(self, sock: socket.socket, buf: bytearray) -> bool:
        """Read what a client sent and answer its complete transactions; False when it left."""
        try:
            data = sock.recv(4096)
        except OSError:
            return False
        if not data:
            return False
        buf += data
        while len(buf) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buf)
            if len(buf) < LENGTH.size + size:
                break
            mosi = bytes(buf[LENGTH.size : LENGTH.size + size])
            del buf[: LENGTH.size + size]
            miso = self.chip.transfer(mosi)
            self.transactions += 1
            try:
                sock.sendall(miso)
            except OSError:
                return False
        return True

    def _write_snapshot(self) -> None:
        if not self.snapshot_path:
            return
        data = {str(addr): model.snapshot() for addr, model in self.chip.packs.items()}
        tmp = f"{self.snapshot_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"time": time.time(), "packs": data}, fh)
        os.replace(tmp, self.snapshot_path)


__all__ = ["SpiSocketClient", "SpiSocketServer", "SpiTransport", "TransportError", "open_spi"]
