"""A simulated CAN bus on slcan pseudo-terminals: any CAN family's simulator as a bus peer.

``python -m bmsbank.services.poller.simulators.can_peer --family NAME --link PATH
[--addresses 1,2] [--period 1.0]``

The peer is a small byte hub: each node (a CAN input, a monitoring tool) gets a pseudo-terminal
whose slave side it opens as a python-can ``slcan`` channel (through a symlink, a stable path
like a real adapter's). Frame lines one node writes (``t``/``T`` + id + DLC + data, ``CR``;
python-can's slcan set-up commands are dropped) reach every other node and the simulator
(:class:`~bmsbank.services.poller.can_family.CanSimulator`), whose replies and, every
``period``, whose broadcasts reach every node. One thread waits in ``poll`` for bytes or the next
broadcast: idle between them.

Test switches: :meth:`CanPeer.send` puts any frame on the bus (a short DLC, a foreign id);
:meth:`CanPeer.vanish` closes every pty and removes the links (an unplugged adapter),
:meth:`CanPeer.restore` brings them back; ``silent`` stops broadcasts and answers.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import threading
import time
import tty

from bmsbank import runtime
from bmsbank.services.poller import plugins
from bmsbank.services.poller.can_family import CanFrame, CanSimulator
from bmsbank.services.poller.simulators.battery import BatteryModel

log = logging.getLogger(__name__)

MAX_LINE = 64  #: bytes of one slcan line at most (a longer run without CR is dropped)


def slcan_line(frame: CanFrame) -> bytes:
    """``frame`` as an slcan line: ``t``/``T``, the id in hex, the DLC, the data, ``CR``."""
    head = f"T{frame.id:08X}" if frame.extended else f"t{frame.id:03X}"
    return f"{head}{len(frame.data)}{frame.data.hex().upper()}\r".encode("ascii")


def parse_line(line: bytes) -> CanFrame | None:
    """The data frame of one slcan line (without its CR), None for anything else."""
    try:
        text = line.decode("ascii")
        if text[:1] == "t":
            can_id, dlc, at, extended = int(text[1:4], 16), int(text[4]), 5, False
        elif text[:1] == "T":
            can_id, dlc, at, extended = int(text[1:9], 16), int(text[9]), 10, True
        else:
            return None
        data = bytes.fromhex(text[at : at + 2 * dlc])
    except (UnicodeDecodeError, ValueError, IndexError):
        return None
    return CanFrame(can_id, data, extended) if len(data) == dlc <= 8 else None


class _Node:
    """One pseudo-terminal of the hub: its master, its slave kept open, its link."""

    def __init__(self, link: str | None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR -> LF before the node opens it
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.link = link
        self.buffer = bytearray()
        if link:
            tmp = f"{link}.tmp{os.getpid()}"
            os.symlink(self.path, tmp)
            os.replace(tmp, link)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            pass  # nobody reads this node: a CAN frame nobody takes is lost, as on a bus

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass


class CanPeer:
    """The hub and the simulated packs behind it."""

    def __init__(self, sim: CanSimulator, links: list[str | None], period: float = 1.0) -> None:
        self.sim = sim
        self.links = list(links)
        self.period = period
        self.silent = False
        self.frames_in = 0  #: frames nodes wrote
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self.nodes = [_Node(link) for link in self.links]
        self._thread: threading.Thread | None = None

    @property
    def paths(self) -> list[str]:
        """The slave paths of the nodes (the links point to them)."""
        return [n.path for n in self.nodes]

    def start(self) -> CanPeer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve, name="can-peer", daemon=True)
        self._thread.start()
        return self

    def send(self, frame: CanFrame) -> None:
        """Put ``frame`` on the bus (every node gets it)."""
        line = slcan_line(frame)
        with self._lock:
            for node in self.nodes:
                node.write(line)

    def vanish(self) -> None:
        """Close every node and remove its link (the adapter is unplugged)."""
        with self._lock:
            for node in self.nodes:
                node.close()
            self.nodes = []
        os.write(self._wake_w, b"x")

    def restore(self) -> None:
        """New nodes at the same links (the adapter is back)."""
        with self._lock:
            self.nodes = [_Node(link) for link in self.links]
        os.write(self._wake_w, b"x")

    def serve(self) -> None:
        """Relay frames and broadcast every ``period`` until :meth:`stop`."""
        next_broadcast = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_broadcast:
                next_broadcast = now + self.period
                if not self.silent:
                    for frame in self.sim.broadcast():
                        self.send(frame)
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            with self._lock:
                nodes = {n.master: n for n in self.nodes}
            for fd in nodes:
                poller.register(fd, select.POLLIN)
            wait_ms = max(1, int((next_broadcast - time.monotonic()) * 1000))
            for fd, _event in poller.poll(wait_ms):
                if fd == self._wake_r:
                    os.read(self._wake_r, 64)
                elif fd in nodes:
                    self._read(nodes[fd])

    def _read(self, node: _Node) -> None:
        try:
            data = os.read(node.master, 4096)
        except (BlockingIOError, OSError):
            return
        node.buffer += data
        while b"\r" in node.buffer:
            line, _, rest = bytes(node.buffer).partition(b"\r")
            node.buffer[:] = rest
            frame = parse_line(line)
            if frame is None:
                continue  # set-up commands (S6, O, C, ...) are the node's adapter's business
            self.frames_in += 1
            raw = line + b"\r"
            with self._lock:
                for other in self.nodes:
                    if other is not node:
                        other.write(raw)
            if not self.silent:
                for reply in self.sim.answer(frame):
                    self.send(reply)
        if len(node.buffer) > MAX_LINE:
            node.buffer.clear()

    def stop(self) -> None:
        """Stop serving and close every node."""
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(2.0)
        self.vanish()
        os.close(self._wake_r)
        os.close(self._wake_w)


def main(argv: list[str] | None = None) -> int:
    """Run one family's simulated packs as a CAN peer until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(prog="bmsbank-can-peer", description=__doc__.splitlines()[0])
    p.add_argument("--family", required=True, help="a CAN family (victron_can, ...)")
    link = "symlink to a node's slcan pty (repeatable: one per CAN input or tool)"
    p.add_argument("--link", action="append", required=True, help=link)
    p.add_argument("--addresses", default="", help="comma-separated pack addresses")
    p.add_argument("--period", type=float, default=1.0, help="s between broadcasts")
    p.add_argument("--cells", type=int, default=16)
    p.add_argument("--soc", type=float, default=60.0, help="%% of every pack")
    p.add_argument("--current", type=float, default=0.0, help="A (+ = charge) of every pack")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s can-peer %(levelname)s %(message)s")
    info = plugins.info(args.family)
    if info.link.upper() != "CAN":
        p.error(f"{args.family} is not a CAN family")
    addresses = [int(a) for a in args.addresses.split(",") if a.strip()] or [info.default_address]
    packs = {a: BatteryModel(cells=args.cells, soc=args.soc, current=args.current,
                             temperatures=[24.0 + i, 25.5 + i])
             for i, a in enumerate(addresses)}  # fmt: skip
    peer = CanPeer(plugins.simulator_class(args.family)(packs), args.link, args.period)
    runtime.exit_on_stop_signals()
    log.info("%s on %s, addresses %s", args.family, ", ".join(args.link), addresses)
    try:
        peer.serve()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
