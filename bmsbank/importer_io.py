"""Ports, Bluetooth devices and CAN inputs of an imported config, and the TOML text.

For :mod:`bmsbank.importer`. dbus-serialbattery is started by Venus's serial-starter once per USB
serial port and tries BMS_TYPE's classes on it (all of them when empty), each at its default
address or at every BATTERY_ADDRESSES byte (dbus-serialbattery.py, release v2.0.20250729);
BLUETOOTH_BMS lists "Class MAC" pairs and CAN_PORT the CAN interfaces. bmsbank needs one family
and one device per port: one [[ports]] table per serial family, with a placeholder device.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import TYPE_CHECKING, Any

from bmsbank import serialbattery as sb
from bmsbank.errors import one_line

if TYPE_CHECKING:
    from bmsbank.importer import Conversion

Entry = list[tuple[str, Any, str]]  #: (key, value, comment) of one table
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
PLACEHOLDER = "placeholder: serial-starter chose the port; put /dev/serial/by-id/... here"
TYPES = {**sb.SERIAL_TYPES, **sb.CAN_TYPES, **sb.BLE_TYPES, **dict.fromkeys(sb.NO_FAMILY, "")}
#: keys only some BMS classes read (family options in bmsbank) -> those classes
OPTION_KEYS = {
    "INVERT_CURRENT_MEASUREMENT": "Daly and Daly_Can",  # bms/daly.py, bms/daly_can.py
    "BATTERY_CAPACITY": "Daly and Felicity",  # the key's comment in config.default.ini
    "GREENMETER_ADDRESS": "Ecs",  # bms/ecs.py
    "LIPRO_START_ADDRESS": "Ecs",
    "LIPRO_END_ADDRESS": "Ecs",
    "LIPRO_CELL_COUNT": "Ecs",
}


class Ports:
    """The [[ports]], [[ble.devices]] and [[can_inputs]] tables of one conversion."""

    def __init__(self, c: Conversion) -> None:
        self.c = c
        self.serial: list[Entry] = []
        self.ble: list[Entry] = []
        self.can: list[Entry] = []
        self.address_notes: list[str] = []
        self.used_addresses = False

    def apply(self) -> None:
        """Every table, then the notes on BMS_TYPE, the addresses and the family options."""
        c = self.c
        names = [self._type(n) for n in c.words("BMS_TYPE")]
        serial = [sb.SERIAL_TYPES[n] for n in names if n in sb.SERIAL_TYPES]
        can = [sb.CAN_TYPES[n] for n in names if n in sb.CAN_TYPES]
        self.interval = c.number("POLL_INTERVAL", 0.0)
        if self.raw_interval() and self.interval < 0.1:
            raise c.fail("POLL_INTERVAL", "seconds >= 0.1 (bmsbank's shortest interval)")
        raw = self._raw_addresses()
        for i, family in enumerate(serial if serial else [] if names else ["auto"]):
            self.serial.append(self._port(i, family, raw))
        self._ble()
        self._can(can)
        self._notes(names, raw)

    def raw_interval(self) -> bool:
        """Whether POLL_INTERVAL is set."""
        return self.c.raw("POLL_INTERVAL") != ""

    def _type(self, name: str) -> str:
        """A BMS_TYPE name as the incumbent spells it (matched without case)."""
        for known in TYPES:
            if known.lower() == name.lower():
                return known
        close = difflib.get_close_matches(name, list(TYPES), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise self.c.fail("BMS_TYPE", f"{hint}BMS class names of dbus-serialbattery {sb.RELEASE}")

    def _raw_addresses(self) -> list[int]:
        """BATTERY_ADDRESSES: hex bytes, "0x01" or "01" (the incumbent's bytes.fromhex)."""
        out = []
        for word in self.c.words("BATTERY_ADDRESSES"):
            try:
                value = int(word.lower().removeprefix("0x"), 16)
            except ValueError:
                raise self.c.fail("BATTERY_ADDRESSES", "hex bytes such as 0x01, 0x02") from None
            if not 0 <= value <= 0xFF:
                raise self.c.fail("BATTERY_ADDRESSES", "hex bytes 0x00-0xFF")
            out.append(value)
        return out

    def _addresses(self, family: str, raw: list[int]) -> list[int]:
        """``raw`` as the family's pack addresses; what does not fit goes to the notes."""
        from bmsbank.services.poller import plugins

        if not raw or family == "auto":
            if raw:
                self.address_notes.append("bms = auto scans each family at its default address")
            return []
        info = plugins.info(family)
        if not info.multidrop:
            self.address_notes.append(f"{family} takes one pack per port: no addresses")
            return []
        if family == "daly":  # the request byte is 0x3F + board number (0x80: the UART host)
            out = [a - sb.DALY_HOST for a in raw if sb.DALY_HOST < a <= sb.DALY_HOST + 16]
        else:
            out = [a for a in raw if a in info.addresses]
        left = [f"0x{a:02X}" for a in raw if (a - sb.DALY_HOST if family == "daly" else a)
                not in out]  # fmt: skip
        if left:
            self.address_notes.append(f"{', '.join(left)} not a {family} address")
        self.used_addresses = self.used_addresses or bool(out)
        return out

    def _port(self, i: int, family: str, raw: list[int]) -> Entry:
        """One [[ports]] table for ``family`` on a placeholder device."""
        c = self.c
        device = "/dev/spidev0.0" if family == "mnb" else f"/dev/ttyUSB{i}"
        how = "BMS_TYPE" if family != "auto" else "BMS_TYPE empty: scan at start, as the incumbent"
        entry: Entry = [("name", f"ttyUSB{i}" if family != "mnb" else "spi0", ""),
                        ("device", device, PLACEHOLDER), ("bms", family, how)]  # fmt: skip
        addresses = self._addresses(family, raw)
        if family == "ecs":  # the GreenMeter's address; its LiPro modules follow (bms/ecs.py)
            addresses = [int(c.number("GREENMETER_ADDRESS"))]
            entry.append(("lipro_start", int(c.number("LIPRO_START_ADDRESS")),
                          "LIPRO_START_ADDRESS"))  # fmt: skip
            entry.append(("cells", int(c.number("LIPRO_CELL_COUNT")), "LIPRO_CELL_COUNT"))
            for key, what in (("GREENMETER_ADDRESS", "addresses"), ("LIPRO_START_ADDRESS",
                              "lipro_start"), ("LIPRO_CELL_COUNT", "cells")):  # fmt: skip
                c.convert(key, f"ports[{i}].{what}")
            c.drop("LIPRO_END_ADDRESS", "bmsbank reads `cells` modules from lipro_start on")
        if addresses:
            entry.append(("addresses", addresses, "BATTERY_ADDRESSES"))
            c.convert("BATTERY_ADDRESSES", f"ports[{i}].addresses")
        self._interval(entry, f"ports[{i}]")
        self._options(entry, family, f"ports[{i}]")
        return entry

    def _interval(self, entry: Entry, where: str) -> None:
        if self.raw_interval():
            entry.append(("interval", self.interval, "POLL_INTERVAL"))
            self.c.convert("POLL_INTERVAL", f"{where}.interval")

    def _options(self, entry: Entry, family: str, where: str) -> None:
        """Family options the incumbent keeps as global keys."""
        c = self.c
        if family in ("daly", "daly_can"):
            sign = c.raw("INVERT_CURRENT_MEASUREMENT")
            if sign not in ("1", "-1"):
                raise c.fail("INVERT_CURRENT_MEASUREMENT", "1 or -1 (inverted)")
            if sign == "-1":
                entry.append(("invert_current", True, "INVERT_CURRENT_MEASUREMENT = -1"))
            c.convert("INVERT_CURRENT_MEASUREMENT", f"{where}.invert_current")
            c.drop("BATTERY_CAPACITY", "bmsbank's Daly families read the rated capacity from "
                   "the BMS")  # fmt: skip
        if family == "felicity":  # "Some BMS do not support reading the battery capacity"
            entry.append(("capacity", c.number("BATTERY_CAPACITY"), "BATTERY_CAPACITY"))
            c.convert("BATTERY_CAPACITY", f"{where}.capacity")

    def _ble(self) -> None:
        """BLUETOOTH_BMS: "Class MAC" pairs, one [[ble.devices]] table each on hci0."""
        c = self.c
        lost = []
        for item in c.words("BLUETOOTH_BMS"):
            parts = item.split()
            if len(parts) != 2 or not MAC_RE.match(parts[1]):
                raise c.fail("BLUETOOTH_BMS", 'pairs "Jkbms_Ble C8:47:8C:00:00:00" separated by '
                             "commas")  # fmt: skip
            name = self._type(parts[0])
            if name not in sb.BLE_TYPES:
                lost.append(f"{item} (no bmsbank family speaks it over BLE)")
                continue
            entry: Entry = [("name", f"ble{len(self.ble) + 1}", ""),
                            ("address", parts[1].upper(), "BLUETOOTH_BMS"),
                            ("bms", sb.BLE_TYPES[name], "BLUETOOTH_BMS")]  # fmt: skip
            self._interval(entry, f"ble.devices[{len(self.ble)}]")
            self.ble.append(entry)
            c.convert("BLUETOOTH_BMS", f"ble.devices[{len(self.ble) - 1}]")
        if lost and self.ble:
            c.convert("BLUETOOTH_BMS", "not carried over: " + "; ".join(lost))
        elif lost:
            c.drop("BLUETOOTH_BMS", "; ".join(lost))
        elif not c.words("BLUETOOTH_BMS"):
            c.drop("BLUETOOTH_BMS", "empty: no Bluetooth BMS, nothing lost")

    def _can(self, can: list[str]) -> None:
        """CAN_PORT: one [[can_inputs]] table per interface when BMS_TYPE names one CAN family."""
        c = self.c
        channels = c.words("CAN_PORT")
        if not channels:
            c.drop("CAN_PORT", "empty: no CAN BMS, nothing lost")
            return
        if len(set(can)) != 1:
            many = "no" if not can else "more than one"
            c.drop("CAN_PORT", f"BMS_TYPE names {many} CAN BMS bmsbank has: add "
                   "[[can_inputs]] with the family by hand")  # fmt: skip
            return
        for i, channel in enumerate(channels):
            name = channel if NAME_RE.match(channel) else f"can{i}"
            entry: Entry = [("name", name, ""), ("interface", "socketcan", ""),
                            ("channel", channel, "CAN_PORT"),
                            ("bms", can[0], "BMS_TYPE")]  # fmt: skip
            self._interval(entry, f"can_inputs[{i}]")
            self._options(entry, can[0], f"can_inputs[{i}]")
            self.can.append(entry)
            c.convert("CAN_PORT", f"can_inputs[{i}]")

    def _notes(self, names: list[str], raw: list[int]) -> None:
        """BMS_TYPE, the addresses, the poll interval and the family options left unused."""
        c = self.c
        none = [n for n in names if n in sb.NO_FAMILY]
        tail = f"; no bmsbank family for {', '.join(none)}" if none else ""
        if self.serial or self.can or self.ble:
            c.convert("BMS_TYPE", "the bms of each table" + tail)
        else:
            c.drop("BMS_TYPE", "nothing bmsbank can poll" + tail)
        notes = "; ".join(self.address_notes)
        if self.used_addresses and notes:
            c.convert("BATTERY_ADDRESSES", notes)
        elif not self.used_addresses:
            c.drop("BATTERY_ADDRESSES", notes or "empty: every BMS at its default address")
        if not self.raw_interval():
            c.convert("POLL_INTERVAL", "empty: bmsbank's interval (1 s)")
        elif self.interval > 4.0:  # a pack must not go stale between two polls (docs/CONFIG.md)
            c.set("stale_after", 2 * (self.interval + 1.0), "POLL_INTERVAL",
                  note="2 x (interval + 1 s reply time)")  # fmt: skip
        for key, users in OPTION_KEYS.items():
            c.drop(key, f"only {users} read it, and none is configured here")


def toml_value(v: Any) -> str:
    """``v`` (bool, number, string or list of them) as TOML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def _lines(entry: Entry) -> list[str]:
    out = []
    for key, value, comment in entry:
        text = f"{key} = {toml_value(value)}"
        comment = one_line(comment)
        if comment and len(text) + len(comment) + 4 <= 100:
            text += f"  # {comment}"
        elif comment:
            out.append(f"# {comment}")
        out.append(text)
    return out


def render(c: Conversion, ports: Ports, path: str) -> str:
    """The whole TOML text: the tables, then the converted and the not carried keys."""
    base = c.ini.where.get("LOGGING", "").rsplit(":", 1)[0]
    defaults = f"dbus-serialbattery {sb.RELEASE}" if "default of" in base else one_line(base)
    out = ["# bmsbank config converted from dbus-serialbattery's config.ini by",
           f"# `bmsbank import-serialbattery`: {one_line(path)}",
           f"# over the defaults of {defaults}.",
           "# The [[ports]] devices are placeholders. Read the notes at the end, then run",
           "# `bmsbank check FILE`. Each converted key names its source in a comment.",
           ""]  # fmt: skip
    out += _lines(c.top)
    out += ["", "[bank]", *_lines(c.bank)]
    for entry in ports.serial:
        out += ["", "[[ports]]", *_lines(entry)]
    if ports.ble:
        out += ["", "[[ble]]", 'adapter = "hci0"  # BLUETOOTH_BMS (BLUETOOTH_USE_USB: hci1?)']
    for entry in ports.ble:
        out += ["", "[[ble.devices]]", *_lines(entry)]
    for entry in ports.can:
        out += ["", "[[can_inputs]]", *_lines(entry)]
    out += ["", f"# Converted ({len(c.converted)} keys):"]
    out += [one_line(f"#   {k} -> {what}") for k, what in c.converted.items()]
    out += ["", f"# Not carried over ({len(c.dropped)} keys):"]
    for key, why in c.dropped.items():
        value = c.ini.values.get(key)
        shown = f" = {value}" if value else ""
        out.append(one_line(f"#   {key}{shown}: {why}"))
    return "\n".join(out) + "\n"
