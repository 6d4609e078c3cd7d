"""Venus OS helpers for install-venus.sh: the serial-starter exclusion of the configured adapters.

Venus OS's serial-starter starts its own drivers (vedirect, gps, modbus, ...) on every new tty
and probes the port with them, which would fight our poller for the adapter. Venus keeps a tty
out of serial-starter with a udev rule that sets ``ENV{VE_SERVICE}="ignore"``; its own
``simcom.rules`` does exactly that for a modem, matched by ``ENV{ID_VENDOR_ID}`` and
``ENV{ID_MODEL_ID}`` (victronenergy/meta-victronenergy, meta-venus/recipes-core/udev/files/
simcom.rules). udev's usb_id builtin sets ID_VENDOR_ID, ID_MODEL_ID and ID_SERIAL_SHORT from the
USB device's sysfs attributes idVendor, idProduct and serial, and names the by-id link
``usb-<ID_SERIAL>-if<NN>[-port<N>]`` (udev's 60-serial.rules), which is how an adapter that is
not plugged in at install time can still be matched, by ID_SERIAL.

``python -m bmsbank.venus udev-rules CONFIG [--root DIR]`` prints the rules file for the
``[[ports]]`` of CONFIG; every path it reads (/dev, /sys) is taken under DIR (tests).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bmsbank import config as configuration
from bmsbank.errors import ConfigError

PROG = "bmsbank-venus"

#: a by-id link name: usb-<ID_SERIAL>-if<interface>[-port<n>]
_BY_ID = re.compile(r"^usb-(?P<serial>.+)-if[0-9a-fA-F]{2}(?:-port\d+)?$")
#: what udev keeps of a sysfs string (udev_replace_chars: alnum and these); the rest becomes "_"
_UDEV_SAFE = re.compile(r"[^A-Za-z0-9#+\-.:=@_]")
_HEX4 = re.compile(r"^[0-9a-f]{4}$")


@dataclass(frozen=True)
class Match:
    """The udev keys that pick out one adapter, and where they came from."""

    keys: tuple[tuple[str, str], ...]
    how: str

    def rule(self) -> str:
        """One udev rule line that keeps this adapter out of serial-starter."""
        parts = ['ACTION=="add"', 'SUBSYSTEM=="tty"', 'ENV{ID_BUS}=="usb"']
        parts += [f'ENV{{{k}}}=="{v}"' for k, v in self.keys]
        return ", ".join(parts + ['ENV{VE_SERVICE}="ignore"'])


def under(root: str, path: str) -> str:
    """``path`` (absolute, as on the GX) inside the tree ``root``."""
    return os.path.join(root, path.lstrip("/"))


def _follow(root: str, path: str) -> str:
    """Follow symbolic links of ``path`` (inside ``root``) to the file they end at."""
    for _ in range(16):
        if not os.path.islink(path):
            return path
        target = os.readlink(path)
        if os.path.isabs(target):
            path = under(root, target)
        else:
            path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return path


def udev_safe(text: str) -> str:
    """A sysfs string as udev stores it in ID_SERIAL_SHORT (whitespace and odd bytes as '_')."""
    return _UDEV_SAFE.sub("_", text.strip())


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def usb_device(root: str, tty: str) -> str | None:
    """The sysfs directory of the USB device behind ``tty`` (ttyUSB0, ttyACM0), if any."""
    sys_dir = under(root, "/sys")
    link = os.path.join(sys_dir, "class", "tty", tty, "device")
    if not os.path.exists(link):
        return None
    here = os.path.realpath(link)
    top = os.path.realpath(sys_dir)
    while here.startswith(top + os.sep):
        if os.path.isfile(os.path.join(here, "idVendor")):
            return here
        here = os.path.dirname(here)
    return None


def match(root: str, device: str) -> Match | str:
    """The udev keys of the adapter at ``device``, or why there are none.

    A present adapter is matched by vendor, product and (when it has one) serial number; an
    absent one named by its /dev/serial/by-id link by the ID_SERIAL that link carries.
    """
    path = _follow(root, under(root, device))
    tty = os.path.basename(path)
    usb = usb_device(root, tty) if os.path.exists(path) else None
    if usb is not None:
        vendor = (_read(os.path.join(usb, "idVendor")) or "").lower()
        product = (_read(os.path.join(usb, "idProduct")) or "").lower()
        if not (_HEX4.match(vendor) and _HEX4.match(product)):
            return f"{device}: unreadable USB ids in {usb}"
        keys = [("ID_VENDOR_ID", vendor), ("ID_MODEL_ID", product)]
        serial = udev_safe(_read(os.path.join(usb, "serial")) or "")
        if serial:
            keys.append(("ID_SERIAL_SHORT", serial))
            return Match(tuple(keys), f"{tty}, USB {vendor}:{product} serial {serial}")
        return Match(
            tuple(keys),
            f"{tty}, USB {vendor}:{product} (no serial number: every adapter of this type)",
        )
    by_id = _BY_ID.match(os.path.basename(device)) if "/serial/by-id/" in device else None
    if by_id:
        serial = udev_safe(by_id.group("serial"))
        return Match((("ID_SERIAL", serial),), f"not plugged in; by its by-id name, {serial}")
    if os.path.exists(path):
        return f"{device}: {tty} is not a USB adapter (serial-starter's machine.rules owns it)"
    return f"{device}: not present and not a /dev/serial/by-id/usb-... path: plug it in, re-run"


def rules(config: configuration.Config, root: str = "/") -> tuple[str, list[str]]:
    """The rules file for every serial port of ``config``, and warnings for ports left out."""
    lines = [
        "# Written by bmsbank's install-venus.sh: keep the adapters bmsbank polls out of",
        "# serial-starter (Venus's driver prober). Removed by install-venus.sh --uninstall.",
    ]
    warnings: list[str] = []
    seen: set[str] = set()
    for port in config.ports:
        device = port.device
        if configuration.ble_target(device) is not None or not device.startswith("/dev/"):
            continue  # BLE devices and pyserial URLs are no tty of serial-starter's
        found = match(root, device)
        if isinstance(found, str):
            warnings.append(f"port {port.name}: {found}")
            continue
        rule = found.rule()
        if rule not in seen:
            seen.add(rule)
            lines += [f"# port {port.name}: {device} ({found.how})", rule]
    return "\n".join(lines) + "\n", warnings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bmsbank.venus udev-rules CONFIG [--root DIR]``: print the rules file."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("udev-rules", help="udev rules keeping the configured adapters ignored")
    u.add_argument("config", help="the bmsbank config file")
    u.add_argument("--root", default="/", help="root of the tree /dev and /sys are read from")
    args = p.parse_args(argv)
    try:
        text, warnings = rules(configuration.load(args.config), args.root)
    except ConfigError as exc:
        return configuration.fail(PROG, exc)
    for warning in warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
