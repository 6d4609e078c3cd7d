"""Find which BMS answers on a serial port: ``bmsbank scan`` and ``bms = "auto"``.

Every serial family is asked its identification request (the first query of its poll cycle: a
read, never a write) at its own baud rate and parity, most common families first. A family that
answers at an address is then read one whole poll cycle for its cell count, serial number and
hardware text. Without an address range the scan stops at the first family that answers (one BMS
on a TTL cable: seconds); with one (``--addresses 1-16``) it sweeps every family that shares a bus
over every address not taken yet (an RS485 address holds one device) and reports them all.

A family counts as found only when its whole cycle makes a state that passes the schema and the
plausibility checks the poller applies: a Modbus device answers another Modbus family's read of
registers it lacks with zeros or an exception, which must not pass for that family.

A probe waits :data:`FIRST_BYTE` seconds for the reply to begin, then the family's own reply
timeout for the rest: a silent address costs a fraction of a reply timeout. Any Modbus device
answers a read at its address (data or an exception reply), so once one Modbus family met silence
at an address, speed and parity, the other Modbus families skip that address. Both are what make
a full sweep fit in seconds. A scan restricted to named families (``bmsbank scan --bms``) is
patient instead: each probe waits the family's whole reply timeout (EG4 LL's drivers allow
seconds).

The port's line settings (speed, parity) are put back as they were found, and a port a running
poller holds (pyserial's exclusive lock) is refused, never shared.
"""

from __future__ import annotations

import logging
import os
import termios
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import serial

from bmsbank.config import PortConfig
from bmsbank.errors import BmsBankError, FrameError, LinkTimeout, TransportError
from bmsbank.native.spec import ModbusRtu
from bmsbank.plausibility import default_bounds, implausible
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, run_query
from bmsbank.services.poller.transport import SerialTransport
from bmsbank.state import make_state

log = logging.getLogger(__name__)

#: seconds a probe waits for the first byte of a reply (a BMS answers within tens of ms; the
#: slowest, EG4 LL, within a few hundred ms: see its family). The rest gets the family's timeout.
FIRST_BYTE = 0.12
#: most common first (what users of the incumbent driver report most); the rest follow by name
COMMON_FIRST = ("jkbms", "jbd", "daly", "jkpb", "seplos", "seplosv3", "ant", "renogy", "eg4_ll",
                "eg4_lifepower", "pace", "daren_485", "heltecmodbus", "felicity")  # fmt: skip
#: seconds between two scans of an "auto" port while nothing answers
RETRY = 30.0
#: links a scan cannot reach through a serial port
NOT_SERIAL = ("SPI", "BLE", "CAN")


class PortBusy(BmsBankError):
    """The port is held by another process (a running poller): the scan does not share it."""


@dataclass(frozen=True)
class Found:
    """A BMS that answered.

    Attributes:
        family: the ``bms =`` name.
        address: the address it answered at.
        baudrate: the speed it answered at [bit/s].
        cells: its cell count (0 when its poll cycle could not be read whole).
        serial: the serial number or id string it reports ("" when none).
        hardware: its model / firmware text ("" when none).

    """

    family: str
    address: int
    baudrate: int
    cells: int = 0
    serial: str = ""
    hardware: str = ""


def parse_addresses(text: str) -> list[int]:
    """``"1-16"``, ``"1,3,0x30-0x3f"`` -> the addresses, in order, each once.

    Raises:
        ValueError: not a list of addresses 0-255 and ranges.

    """
    out: list[int] = []
    for item in text.replace(" ", "").split(","):
        low, dash, high = item.partition("-")
        try:
            first, last = int(low, 0), int(high if dash else low, 0)
        except ValueError:
            raise ValueError(f"addresses: {item!r} is not an address or a range (1-16)") from None
        if not 0 <= first <= last <= 255:
            raise ValueError(f"addresses: {item!r} is not within 0-255, low to high")
        out.extend(a for a in range(first, last + 1) if a not in out)
    return out


def serial_families() -> list[str]:
    """The families a serial port can reach, most common first."""
    names = [n for n, i in plugins.families().items()
             if not any(i.link.upper().startswith(x) for x in NOT_SERIAL)]  # fmt: skip
    rank = {n: k for k, n in enumerate(COMMON_FIRST)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


class ScanLink:
    """The families' ``Link`` over a port being scanned: a short wait for a reply to begin."""

    def __init__(self, transport: SerialTransport, timeout: float, patient: bool = False) -> None:
        self.transport = transport
        self.timeout = timeout  #: the family's reply timeout [s]
        self.first_byte = timeout if patient else min(FIRST_BYTE, timeout)

    def exchange(self, request: bytes, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """Send ``request``; give up after :data:`FIRST_BYTE` s of silence (see ``Link``)."""
        self.transport.drain()
        self.transport.send(request)
        try:
            return self.transport.receive(extract, self.first_byte)
        except LinkTimeout:
            if not self.transport.rx:  # silence: nobody at this address speaks this protocol
                raise
        return self.transport.receive(extract, self.timeout)  # a reply began: let it finish

    def receive(self, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """The next frame of a multi-frame reply, within the family's timeout."""
        return self.transport.receive(extract, self.timeout)


class Silent(Exception):
    """Nothing at all answered a probe (not even a wrong or corrupt reply)."""


def probe(plugin: Plugin, link: ScanLink, address: int) -> Found | None:
    """Ask ``plugin``'s identification request at ``address``; read a whole cycle if answered.

    Returns:
        What answered, or None when what came was not a plausible reading of this family.

    Raises:
        Silent: nothing came at all.

    """
    queries = plugin.queries(address)
    stats = LinkStats()
    parts: dict[str, Mapping[str, Any]] = {}
    first = next(q for q in queries if q.expects_reply)
    for q in queries[: queries.index(first)]:  # a wake-up burst the BMS needs first
        run_query(plugin, link, q, address, parts, stats)
    try:
        parts[first.part] = run_query(plugin, link, first, address, parts, stats)
    except LinkTimeout as exc:
        if str(exc) == "timeout" and not stats.noise_bytes:
            raise Silent from None
        return None
    except FrameError:
        return None
    for q in queries:  # the rest of one poll cycle, for cells and serial number
        if q.part in parts or not q.expects_reply:
            continue
        try:
            parts[q.part] = run_query(plugin, link, q, address, parts, stats)
        except (LinkTimeout, FrameError) as exc:
            log.debug("%s at %d: %s unread (%s)", plugin.name, address, q.part, exc)
    try:
        state = make_state("scan", address, plugin.name, 0, plugin.state(parts), stats.as_dict())
        validate_state(state)
        why = implausible(state, default_bounds())
    except (BmsBankError, KeyError, TypeError, ValueError) as exc:
        why = str(exc)
    if why is not None:
        log.debug("%s at %d: a reply, but not a reading of this family: %s", plugin.name,
                  address, why)  # fmt: skip
        return None
    return Found(plugin.name, address, link.transport.baudrate, len(state["cells"]),
                 state["serial"], state["hardware"])  # fmt: skip


def scan(
    device: str,
    addresses: Sequence[int] | None = None,
    families: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Found]:
    """Find the BMSs on ``device``.

    Args:
        device: the serial device (or pyserial URL).
        addresses: addresses to sweep for families that share a bus (None: each family's
            default address, and stop at the first family that answers).
        families: the families to try, in order (None: :func:`serial_families`, quickly; named
            families are probed patiently, each for its whole reply timeout).
        progress: called with a one-line description before each probe.

    Raises:
        PortBusy: another process holds the port.
        TransportError: the port cannot be opened.

    """
    names = list(families) if families is not None else serial_families()
    saved = _line_settings(device)  # before pyserial sets its own
    transport = SerialTransport(device, 9600, echo="auto")
    try:
        transport.open()
    except TransportError as exc:
        if "lock" in str(exc).lower():
            raise PortBusy(f"{device} is in use (a running poller holds it): stop its "
                           f"poller first (supervisorctl stop poller-<port>)") from exc  # fmt: skip
        raise
    found: list[Found] = []
    taken: set[int] = set()
    silent_modbus: set[tuple[int, str, int]] = set()  #: (speed, parity, address) nobody answered
    try:
        plan = [(name, a) for name in names for a in _addresses(plugins.info(name), addresses)]
        loaded: dict[str, Plugin] = {}
        for k, (name, address) in enumerate(plan, 1):
            info = plugins.info(name)
            modbus = (info.baudrate, info.parity, address)
            plugin = loaded.get(name) or loaded.setdefault(name, plugins.load(name))
            # (JBD UP-series frames, ModbusRtu long_functions, are no standard Modbus: a device
            # silent to a standard read may still speak them)
            is_modbus = isinstance(plugin.framing, ModbusRtu) and not plugin.framing.long_functions
            if address in taken or (addresses is None and found) or (
                    is_modbus and modbus in silent_modbus):  # fmt: skip
                continue
            if progress is not None:
                progress(f"[{k}/{len(plan)}] {name} at {info.baudrate} 8{info.parity}1, "
                         f"address {address}")  # fmt: skip
            _set_line(transport, info.baudrate, info.parity)
            try:
                link = ScanLink(transport, plugin.reply_timeout, patient=families is not None)
                hit = probe(plugin, link, address)
            except Silent:
                if is_modbus:
                    silent_modbus.add(modbus)
                continue
            if hit is not None:
                found.append(hit)
                taken.add(address)
    finally:
        _restore(transport, saved)
        transport.close()
    return found


def _set_line(transport: SerialTransport, baudrate: int, parity: str) -> None:
    """Put the open port at ``baudrate`` and ``parity``.

    A tty that refuses the parity keeps the one in force, logged: a Linux pty has no parity (it
    drops PARENB; the kernels here answer EINVAL when it is set on an open pty, which is where
    the scan tests run); a real adapter takes it. pyserial keeps a refused value as if set, so
    the one in force is put back, or every later change would be refused too.
    """
    port = transport.port
    assert port is not None
    before = port.parity
    port.baudrate = baudrate
    try:
        port.parity = parity
    except (serial.SerialException, termios.error, OSError, ValueError) as exc:
        port.parity = before
        log.debug("%s: parity %s refused (%s); probing at %s", transport.device, parity, exc,
                  before)  # fmt: skip
    transport.baudrate, transport.parity = baudrate, port.parity


def _addresses(info: plugins.FamilyInfo, wanted: Sequence[int] | None) -> list[int]:
    if wanted is None or not info.multidrop:
        return [info.default_address]
    return [a for a in wanted if a in info.addresses]


def _line_settings(device: str) -> list[Any] | None:
    """The device's termios settings as they are (None: a pyserial URL, or unreadable)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return termios.tcgetattr(fd)
    except termios.error:
        return None
    finally:
        os.close(fd)


def _restore(transport: SerialTransport, saved: list[Any] | None) -> None:
    """Put the line settings back as the scan found them (speed, parity, everything)."""
    if saved is None or transport.port is None:
        return
    try:
        termios.tcsetattr(transport.port.fileno(), termios.TCSANOW, saved)
    except (termios.error, OSError) as exc:
        log.warning("%s: line settings not restored: %s", transport.device, exc)


def ports_block(name: str, device: str, found: Sequence[Found]) -> str:
    """A ready ``[[ports]]`` block per family found (TOML), with what was found as comments."""
    blocks = []
    by_family: dict[str, list[Found]] = {}
    for f in found:
        by_family.setdefault(f.family, []).append(f)
    for k, (family, hits) in enumerate(by_family.items()):
        lines = [f"# {family} at address {f.address}: {f.cells} cells"
                 + (f", serial {f.serial!r}" if f.serial else "")
                 + (f", {f.hardware}" if f.hardware else "") for f in hits]  # fmt: skip
        port_name = name if len(by_family) == 1 else f"{name}_{k + 1}"
        lines += ["[[ports]]", f'name = "{port_name}"', f'device = "{device}"',
                  f'bms = "{family}"', f"addresses = {[f.address for f in hits]}"]  # fmt: skip
        if hits[0].baudrate != plugins.info(family).baudrate:
            lines.append(f"baudrate = {hits[0].baudrate}")
        if hits[0].cells and any(o.name == "cells" for o in plugins.info(family).options):
            lines.append(f"cells = {hits[0].cells}")  # a family told its cell count (ECS)
        blocks.append("\n".join(lines))
    if len(by_family) > 1:
        blocks.insert(0, "# several families share this bus: bmsbank polls one family per "
                         "port,\n# so give each family its own adapter")  # fmt: skip
    return "\n\n".join(blocks)


def resolve_auto(
    port: PortConfig, stop: Callable[[], bool], retry: float = RETRY
) -> PortConfig | None:
    """``bms = "auto"``: scan ``port`` until a BMS answers; the port as if configured for it.

    The port's addresses are swept for families that share a bus (the others answer at their
    own nominal address); the family found first is polled at the port's addresses. Scans again
    every ``retry`` seconds while nothing answers (the BMS may be off or asleep).

    Returns:
        The port with ``bms`` set to the family found, or None when ``stop()`` came first.

    """
    while not stop():
        try:
            found = scan(port.device, port.addresses)
        except TransportError as exc:
            log.warning("[%s] scan: %s; again in %.0f s", port.name, exc, retry)
            found = []
        if found:
            first = found[0]
            log.info("[%s] bms = auto: found %s", port.name, "; ".join(
                f"{f.family} at address {f.address} ({f.cells} cells"
                + (f", serial {f.serial}" if f.serial else "") + ")" for f in found))  # fmt: skip
            others = sorted({f.family for f in found} - {first.family})
            if others:
                log.warning("[%s] polling %s only: a port polls one family (%s also answered)",
                            port.name, first.family, ", ".join(others))  # fmt: skip
            return replace(port, bms=first.family, baudrate=port.baudrate or first.baudrate)
        log.warning("[%s] bms = auto: no BMS answered on %s at address(es) %s; again in %.0f s "
                    "(bmsbank scan %s --addresses 0-255 sweeps every address)", port.name,
                    port.device, port.addresses, retry, port.device)  # fmt: skip
        deadline = time.monotonic() + retry
        while time.monotonic() < deadline and not stop():
            time.sleep(0.2)
    return None
