"""Serve a simulated BMS bus on a pseudo-terminal.

The server owns a pty pair and a symlink to its slave side (a stable path, like a by-id device).
Whatever the poller writes reaches :meth:`BusSimulator.feed`; replies go back after the time they
would take on a real wire at the protocol's baud rate (a pty itself ignores baud rate), in pieces
of at most :data:`USB_PACKET` bytes as a USB serial adapter delivers them: a long reply begins to
arrive before it has ended, as on a real port.
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
import tty
from typing import Protocol

from bmsbank.services.poller.simulators.battery import BatteryModel

log = logging.getLogger(__name__)


class BusSimulator(Protocol):
    """What a protocol simulator provides."""

    baudrate: int
    packs: dict[int, BatteryModel]

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes written by the poller; return the replies to send, in order."""
        ...


#: bytes a USB full-speed serial adapter hands over at a time (FTDI: 64-byte packets, 2 of status)
USB_PACKET = 62


def wire_time(nbytes: int, baudrate: int) -> float:
    """Seconds ``nbytes`` take on a UART at ``baudrate`` (8N1: 10 bits per byte)."""
    return nbytes * 10.0 / baudrate


class PtyServer:
    """Runs one :class:`BusSimulator` on a pseudo-terminal.

    Fault switches for tests (set them at any time): ``silent`` (answer nothing), ``corrupt``
    (number of next replies sent with a flipped payload byte), ``truncate`` (number of next replies
    cut in half), ``noise`` (bytes sent before the next reply).
    """

    def __init__(
        self,
        sim: BusSimulator,
        link: str | None = None,
        latency: float = 0.002,
        model_wire: bool = True,
        snapshot: str | None = None,
    ) -> None:
        self.sim = sim
        self.link = link
        self.latency = latency
        self.model_wire = model_wire
        self.snapshot_path = snapshot
        self.silent = False
        self.corrupt = 0
        self.truncate = 0
        self.noise = b""
        self.requests = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        if link:
            tmp = f"{link}.tmp{os.getpid()}"
            os.symlink(self.path, tmp)
            os.replace(tmp, link)

    @property
    def device(self) -> str:
        """The path a poller opens: the symlink when one was asked for."""
        return self.link or self.path

    def start(self) -> PtyServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve, name="pty-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the pty."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link and os.path.islink(self.link) and os.readlink(self.link) == self.path:
            os.unlink(self.link)

    def serve(self) -> None:
        """Answer requests until :meth:`stop` (blocking)."""
        last = time.monotonic()
        last_snapshot = 0.0
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            now = time.monotonic()
            for model in self.sim.packs.values():
                model.step(now - last)
            last = now
            if now - last_snapshot > 0.5:
                self._write_snapshot()
                last_snapshot = now
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                continue
            self.requests += 1
            replies = self.sim.feed(data)
            if self.silent or not replies:
                continue
            if self.model_wire:
                time.sleep(wire_time(len(data), self.sim.baudrate) + self.latency)
            for reply in replies:
                self._send(self._faulted(reply))

    def _faulted(self, reply: bytes) -> bytes:
        if self.corrupt > 0:
            self.corrupt -= 1
            mid = len(reply) // 2  # a payload byte: the check value no longer matches
            reply = reply[:mid] + bytes([reply[mid] ^ 0x5A]) + reply[mid + 1 :]
        if self.truncate > 0:
            self.truncate -= 1
            reply = reply[: len(reply) // 2]
        if self.noise:
            reply, self.noise = self.noise + reply, b""
        return reply

    def _send(self, reply: bytes) -> None:
        pieces = [reply] if not self.model_wire else [
            reply[k : k + USB_PACKET] for k in range(0, len(reply), USB_PACKET)]  # fmt: skip
        for piece in pieces:
            if self.model_wire:
                time.sleep(wire_time(len(piece), self.sim.baudrate))
            try:
                os.write(self.master, piece)
            except OSError as exc:
                log.debug("pty write failed: %s", exc)
                return

    def _write_snapshot(self) -> None:
        if not self.snapshot_path:
            return
        data = {str(addr): model.snapshot() for addr, model in self.sim.packs.items()}
        tmp = f"{self.snapshot_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"time": time.time(), "packs": data}, fh)
        os.replace(tmp, self.snapshot_path)
