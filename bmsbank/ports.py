"""``bmsbank ports``: the USB serial adapters present, and which configured port uses which.

Users with several adapters lose hours on which BMS is on which adapter, and on ``ttyUSB``
numbers that change at every boot or replug (the kernel numbers them in the order it finds
them). udev's ``/dev/serial/by-id/`` names carry the adapter's vendor, product and serial
number and do not move: this command shows them next to each ``ttyUSB``/``ttyACM`` device, with
the chip's driver (CH340/CH341, FTDI, CP210x, ...) and, given a config, the port using it; a
configured device path that can move is named with the by-id path to use instead.

Adapters come from pyserial's ``list_ports`` (the USB ones: those with a vendor id); the driver
from ``/sys/class/tty/<name>/device/driver``; by-id names from the symlinks in
``/dev/serial/by-id``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bmsbank.config import Config

BY_ID = "/dev/serial/by-id"
SYS_TTY = "/sys/class/tty"
#: device names the kernel hands out in discovery order (they can change between boots)
MOVABLE = re.compile(r"^/dev/tty(USB|ACM)[0-9]+$")
#: kernel driver -> the chip family users know
CHIPS = {
    "ch341-uart": "CH340/CH341", "ch341": "CH340/CH341", "ftdi_sio": "FTDI", "cp210x": "CP210x",
    "pl2303": "PL2303", "cdc_acm": "CDC ACM", "option": "GSM modem",
}  # fmt: skip


@dataclass(frozen=True)
class Adapter:
    """One USB serial adapter as the system sees it."""

    device: str  #: /dev/ttyUSB0
    by_id: str | None  #: its /dev/serial/by-id path, when udev made one
    vid: int | None
    pid: int | None
    manufacturer: str | None
    product: str | None
    serial_number: str | None
    driver: str | None  #: the kernel driver's name (ch341-uart, ftdi_sio, cp210x, ...)

    @property
    def chip(self) -> str:
        """The chip family (CH340/CH341, FTDI, CP210x, ...), or the driver's name."""
        return CHIPS.get(self.driver or "", self.driver or "?")


def by_id_names(directory: str = BY_ID) -> dict[str, str]:
    """Real device path -> its by-id path (empty when the directory does not exist)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return {}
    return {os.path.realpath(os.path.join(directory, n)): os.path.join(directory, n) for n in names}


def driver_of(name: str, sys_tty: str = SYS_TTY) -> str | None:
    """The kernel driver of tty ``name`` (e.g. "ttyUSB0"), from sysfs, or None."""
    link = os.path.join(sys_tty, name, "device", "driver")
    return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else None


def adapters(infos: Iterable | None = None, by_id: dict[str, str] | None = None,
             sys_tty: str = SYS_TTY) -> list[Adapter]:  # fmt: skip
    """The USB serial adapters present, sorted by device.

    ``infos``: pyserial ``ListPortInfo`` records (default: ``serial.tools.list_ports.comports()``);
    ``by_id``: real path -> by-id path (default: :func:`by_id_names`); ``sys_tty``: sysfs's tty
    class directory.
    """
    if infos is None:
        from serial.tools import list_ports

        infos = list_ports.comports()
    links = by_id_names() if by_id is None else by_id
    found = [
        Adapter(info.device, links.get(os.path.realpath(info.device)), info.vid, info.pid,
                info.manufacturer, info.product, info.serial_number,
                driver_of(os.path.basename(info.device), sys_tty))  # fmt: skip
        for info in infos
        if info.vid is not None  # USB only (no on-board UARTs)
    ]
    return sorted(found, key=lambda a: a.device)


def report(found: Sequence[Adapter], config: Config | None) -> tuple[list[str], list[str]]:
    """(one line per adapter, one warning per configured port that needs attention)."""
    users: dict[str, list[str]] = {}
    warnings = []
    by_device = {a.device: a for a in found}
    for port in config.ports if config else ():
        real = os.path.realpath(port.device)
        adapter = by_device.get(real)
        if adapter is not None:
            users.setdefault(adapter.device, []).append(port.name)
        elif "://" in port.device or port.device.startswith("ble:"):
            continue  # a pyserial URL (rfc2217://, socket://) or a BLE device: not an adapter
        else:
            warnings.append(f"port {port.name}: {port.device} is not present")
        if MOVABLE.match(port.device):
            stable = adapter.by_id if adapter and adapter.by_id else "its /dev/serial/by-id/ path"
            warnings.append(f"port {port.name}: {port.device} can change at the next boot or "
                            f"replug; use {stable}")  # fmt: skip
    lines = []
    for a in found:
        ids = f"{a.vid:04x}:{a.pid:04x}" if a.vid is not None and a.pid is not None else "?"
        what = " ".join(x for x in (a.manufacturer, a.product) if x) or "?"
        used = ", ".join(users.get(a.device, [])) or "no configured port"
        lines.append(f"{a.device}  {a.by_id or '(no by-id name)'}  {ids} {what}  "
                     f"serial {a.serial_number or '?'}  {a.chip}  used by: {used}")  # fmt: skip
    return lines, warnings
