"""Whose frames are these? A cheap guess at the family behind bytes that are no valid reply.

When a port hears bytes but never a valid frame of its configured family, the usual cause is
another family's BMS on the port (or the wrong family in the config). Each family declares its
framing (:mod:`bmsbank.native.spec`); the binary ones start every frame with a header of two or
more bytes (JK-PB ``55 AA EB 90``, JK RS485 ``4E 57``, ANT ``AA 55 AA FF``), and the ASCII-hex ones
(Pylontech-style, as Daren and KS48100 speak) with ``~`` and hex digits. :func:`guess` looks for
those in a short sample of what the port heard; a one-byte header (JBD ``DD``, Daly ``A5``) or a
Modbus reply is too likely by chance to name a family.

The table is built on the first call only (it imports every family's codec): a port that is
noisy pays it once, a healthy port never.
"""

from __future__ import annotations

import re
from functools import cache

from bmsbank.native.spec import AsciiHex, Binary, FrameThenAck
from bmsbank.services.poller import plugins

#: a Pylontech-style ASCII-hex frame: "~", then the version, address, CID1 and CID2 as hex
ASCII_HEX = re.compile(rb"~[0-9A-F]{8}")
MIN_HEADER = 2  # bytes; a shorter header matches noise too often to name a family


@cache
def headers() -> tuple[tuple[bytes, str], ...]:
    """(frame header, family name) of every serial family with a header of 2+ bytes.

    Families that speak only BLE are left out (a serial port cannot hear them); where two
    families share a header, the first by name wins.
    """
    found: dict[bytes, str] = {}
    for name, info in plugins.families().items():
        if info.link.upper() == "BLE":
            continue
        try:
            framing = getattr(plugins.plugin_class(name), "framing", None)
        except ImportError:  # a family whose optional dependency is not installed
            continue
        if isinstance(framing, FrameThenAck):
            framing = framing.frame
        if isinstance(framing, Binary) and len(framing.header) >= MIN_HEADER:
            found.setdefault(bytes(framing.header), name)
    return tuple(found.items())


@cache
def ascii_families() -> tuple[str, ...]:
    """The serial families whose frames are ASCII-hex (a "~", hex digits, a carriage return)."""
    return tuple(
        name
        for name, info in plugins.families().items()
        if info.link.upper() != "BLE"
        and isinstance(getattr(plugins.plugin_class(name), "framing", None), AsciiHex)
    )


def guess(sample: bytes, own: str) -> str | None:
    """The family (or "ascii-hex") whose frames ``sample`` holds, other than ``own``; or None."""
    for header, name in headers():
        if name != own and header in sample:
            return name
    if own not in ascii_families() and ASCII_HEX.search(sample):
        return "ascii-hex (Pylontech-style)"
    return None


def noise_text(sample: bytes, own: str) -> str:
    """The reason for a port that hears bytes but no valid ``own`` reply, for a human."""
    other = guess(sample, own)
    if other is not None:
        return f"no valid reply: {other} frames on a {own} port?"
    return f"no valid reply: bytes, but no valid {own} frame (baud rate, wiring or family?)"
