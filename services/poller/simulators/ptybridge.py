"""Join pseudo-terminals like a wire: bytes written on one reach every other.

The demo uses it as the CAN cable between the publisher's slcan port and a reader's slcan port
(ENVIRONMENT.md: slcan over a pty pair is lossless between processes). Run it as
``python -m bmsbank.services.poller.simulators.ptybridge LINK LINK [LINK...]``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import sys
import tty

from bmsbank import runtime

log = logging.getLogger(__name__)


class PtyBridge:
    """Several ptys, each reachable at a symlink; what one slave writes, the others read."""

    def __init__(self, links: list[str]) -> None:
        self.links = links
        self.masters: list[int] = []
        self.slaves: list[int] = []  # held open so a reader going away never gives EIO
        for link in links:
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            tmp = f"{link}.tmp{os.getpid()}"
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, link)
            self.masters.append(master)
            self.slaves.append(slave)
        self.dropped = 0

    def pump(self, timeout: float = 0.5) -> None:
        """Forward whatever is readable now (waits up to ``timeout`` seconds)."""
        ready, _, _ = select.select(self.masters, [], [], timeout)
        for src in ready:
            try:
                data = os.read(src, 65536)
            except OSError:
                continue
            for dst in self.masters:
                if dst == src:
                    continue
                try:
                    os.write(dst, data)
                except OSError as exc:
                    # Nobody reads that side and its buffer is full: a real wire loses it too.
                    if exc.errno not in (errno.EAGAIN, errno.EIO):
                        raise
                    self.dropped += len(data)

    def close(self) -> None:
        """Close every pty and remove the links."""
        for fd in self.masters + self.slaves:
            os.close(fd)
        for link in self.links:
            if os.path.islink(link):
                os.unlink(link)


def main(argv: list[str] | None = None) -> int:
    """Entry point: bridge the given links until SIGTERM."""
    p = argparse.ArgumentParser(prog="bmsbank-ptybridge", description=__doc__.splitlines()[0])
    p.add_argument("links", nargs="+", help="symlink paths to create, one per pty")
    args = p.parse_args(argv)
    if len(args.links) < 2:
        return runtime.fail("bmsbank-ptybridge", "at least two links are needed")
    logging.basicConfig(level=logging.INFO)
    runtime.exit_on_sigterm()
    bridge = PtyBridge(args.links)
    log.info("bridging %s", ", ".join(args.links))
    try:
        while True:
            bridge.pump()
    except KeyboardInterrupt:
        pass
    finally:
        bridge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
