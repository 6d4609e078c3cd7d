"""``bmsbank scan --ble``: the BMSs advertising nearby, and a ready ``[[ble]]`` block for them.

One passive look (a BlueZ discovery of a few seconds, through bleak) at what the adapter hears:
each device's advertised name, MAC address and RSSI, and the family it matches. A family is
matched by its advertised-name prefixes first (``FamilyInfo.ble.names``: the most specific
sign), then by its GATT service UUID when the device advertises it and no other family uses the
same service (several cheap BLE modules share 0xFFE0/0xFFF0, so a service alone only decides
when it is unambiguous). Nothing is connected to and nothing is written.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bmsbank.services.poller import plugins
from bmsbank.services.poller.plugins.info import Ble

SCAN_SECONDS = 5.0  #: default discovery time [s]: BMSs advertise every 0.1-1 s


@dataclass(frozen=True)
class Seen:
    """One advertising device.

    Attributes:
        address: its MAC address, upper case.
        name: the advertised local name ("" when it sends none).
        rssi: received signal strength [dBm].
        family: the family it matches (None: no BMS family recognised).

    """

    address: str
    name: str
    rssi: int
    family: str | None


def ble_families() -> dict[str, Ble]:
    """Every family that speaks BLE, by name, with its GATT facts."""
    return {n: i.ble for n, i in plugins.families().items() if i.ble is not None}


def match(
    name: str, services: Iterable[str], families: Mapping[str, Ble] | None = None
) -> str | None:
    """The family a device's advertisement names, or None.

    Args:
        name: the advertised local name.
        services: the advertised service UUIDs (any case).
        families: name -> GATT facts (default: every BLE family).

    """
    families = ble_families() if families is None else families
    by_name = [f for f, ble in families.items() if any(name.startswith(p) for p in ble.names)]
    if by_name:
        # the longest prefix is the most specific ("JK_" over "JK")
        return max(by_name, key=lambda f: max(len(p) for p in families[f].names
                                              if name.startswith(p)))  # fmt: skip
    advertised = {s.lower() for s in services}
    # a service several families use is in ``owners`` once per family: it decides nothing
    owners = [f for f, ble in families.items() if ble.service.lower() in advertised]
    return owners[0] if len(owners) == 1 else None


async def _discover(adapter: str, seconds: float) -> list[Seen]:
    from bleak import BleakScanner  # imported here: only a BLE scan needs bleak

    found = await BleakScanner.discover(timeout=seconds, return_adv=True,
                                        bluez={"adapter": adapter})  # fmt: skip
    families = ble_families()
    out = []
    for device, adv in found.values():
        name = adv.local_name or device.name or ""
        out.append(Seen(device.address.upper(), name, int(adv.rssi),
                        match(name, adv.service_uuids, families)))  # fmt: skip
    # BMSs first, then the strongest signal: the user's pack is usually the nearest
    return sorted(out, key=lambda s: (s.family is None, -s.rssi, s.address))


def discover(adapter: str = "hci0", seconds: float = SCAN_SECONDS) -> list[Seen]:
    """Listen for ``seconds`` on ``adapter``; every device heard, BMSs first.

    Raises:
        TransportError: the adapter is missing or BlueZ is not running.

    """
    from bmsbank.errors import TransportError

    try:
        return asyncio.run(_discover(adapter, seconds))
    except Exception as exc:  # bleak raises BleakError, D-Bus and OS errors alike
        raise TransportError(f"BLE scan on {adapter}: {exc}") from exc


def table(seen: Sequence[Seen]) -> list[str]:
    """One line per device: MAC, RSSI, family, name."""
    return [f"{s.address}  {s.rssi:4d} dBm  {s.family or '-':<12} {s.name}" for s in seen]


def ble_block(adapter: str, seen: Sequence[Seen]) -> str:
    """A ready ``[[ble]]`` block with one ``[[ble.devices]]`` table per recognised BMS."""
    lines = ["[[ble]]", f'adapter = "{adapter}"']
    used: set[str] = set()
    for s in seen:
        if s.family is None:
            continue
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", s.name)[:24] or s.family
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        lines += ["", "[[ble.devices]]", f'name = "{name}"', f'address = "{s.address}"',
                  f'bms = "{s.family}"']  # fmt: skip
    return "\n".join(lines)
