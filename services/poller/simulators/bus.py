"""Several families' simulators on one RS485 bus (one pty), as a mixed bus in the field.

Every simulator hears what is sent, but a UART only understands bytes sent at its own speed:
bytes at another speed are framing errors and garbage to it. The line speed is the one the
poller set on the pty (a Linux pty keeps the speed of its termios, though it ignores it), read
through ``speed``; each simulator answers only requests for its own addresses.
"""

from __future__ import annotations

import termios
from collections.abc import Callable, Sequence
from typing import Any

from bmsbank.services.poller.simulators.battery import BatteryModel

#: termios speed constant -> bit/s, for the speeds the families use
_SPEEDS = {getattr(termios, f"B{b}"): b for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600,
                                                  115200, 230400)}  # fmt: skip


def line_speed(fd: int) -> int:
    """The speed [bit/s] set on the tty ``fd`` (0 when unknown)."""
    return _SPEEDS.get(termios.tcgetattr(fd)[5], 0)


class SharedBus:
    """A :class:`~bmsbank.services.poller.simulators.ptyserver.BusSimulator` of several."""

    def __init__(self, sims: Sequence[Any], speed: Callable[[], int] | None = None) -> None:
        """Put ``sims`` on one bus; ``speed`` says the line speed (None: all hear everything)."""
        self.sims = list(sims)
        self.speed = speed
        self.packs: dict[int, BatteryModel] = {}
        for sim in self.sims:
            self.packs.update(sim.packs)

    def attach(self, slave_fd: int) -> None:
        """Read the line speed from the server's pty slave from now on."""
        self.speed = lambda: line_speed(slave_fd)

    @property
    def baudrate(self) -> int:
        """The line's speed (the server models wire time with it)."""
        speed = self.speed() if self.speed is not None else 0
        return speed or self.sims[0].baudrate

    def feed(self, data: bytes) -> list[bytes]:
        """Hand ``data`` to every simulator listening at the line's speed; their replies."""
        speed = self.speed() if self.speed is not None else 0
        replies: list[bytes] = []
        for sim in self.sims:
            if not speed or sim.baudrate == speed:
                replies.extend(sim.feed(data))
        return replies
