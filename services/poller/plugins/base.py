"""The small base every BMS protocol plugin builds on.

A plugin is data plus a few hooks: framing constants, request bytes per query, field tables that
``bmsbank.native.frames`` compiles once, and the mapping from decoded parts to state fields. It is
transport-independent (the same plugin serves UART, RS485 and, later, BLE) and never computes
derived values (power, min/max cell, delta): :func:`bmsbank.state.derive` does, for every BMS.

Writes (the control channel) are declared as data too: ``controls`` names the actions of
:data:`bmsbank.schema.CONTROL_ACTIONS` the family supports, and :meth:`Plugin.control` builds the
write frame(s), exchanges them over a :class:`ControlLink` the poller provides and checks the
BMS's acknowledgement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bmsbank.errors import ControlError, FrameError
from bmsbank.native.frames import BAD, FRAME, REASONS, FieldTable, Scanner
from bmsbank.native.spec import Field, Framing
from bmsbank.schema import ALARM


@dataclass(frozen=True)
class Query:
    """One request of a poll cycle.

    Attributes:
        part: name of the reply part this request asks for (matches what :meth:`Plugin.parse`
            returns for the reply).
        request: the bytes to send.
        every: send on every n-th cycle; 0 means once, until it has succeeded.
        required: the state cannot be built without this part.
        expects_reply: False for a request nobody answers (a wake-up burst); the poller sends
            it, waits the command gap and moves on.

    """

    part: str
    request: bytes
    every: int = 1
    required: bool = True
    expects_reply: bool = True


@dataclass(frozen=True)
class Layout:
    """Where the fields of one reply part sit in its frame.

    Attributes:
        fields: the field table (offsets relative to ``start``).
        start: first byte of the decoded region.
        end: end of the region: negative counts back from the frame's end (before a check value
            and trailer), positive is an absolute offset, None is the frame's end.
    """

    fields: tuple[Field, ...]
    start: int = 0
    end: int | None = None

    def region(self, frame: bytes) -> tuple[int, int]:
        """``(start, end)`` of the region in ``frame``."""
        n = len(frame)
        if self.end is None:
            return self.start, n
        return self.start, (n + self.end if self.end < 0 else min(self.end, n))


@dataclass
class LinkStats:
    """Error counters of one link (see ``bmsbank.schema.LINK_COUNTERS``)."""

    ok: int = 0
    timeout: int = 0
    truncated: int = 0
    checksum: int = 0
    malformed: int = 0
    address: int = 0
    unexpected: int = 0
    noise_bytes: int = 0
    port_errors: int = 0

    def count(self, kind: str) -> None:
        """Count one event of ``kind`` (unknown kinds count as malformed)."""
        name = kind if kind in self.__dataclass_fields__ else "malformed"
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict for the state message."""
        return dict(self.__dict__)


class ControlLink(Protocol):
    """The serial link as a plugin sees it while carrying out a control request."""

    #: seconds the link waits for an acknowledgement
    timeout: float

    def exchange(self, request: bytes, extract: Callable[[bytearray], bytes | None]) -> bytes:
        """Send ``request`` and return the reply ``extract`` takes out of the received bytes.

        Raises:
            LinkTimeout: nothing (or only part of a reply) arrived within ``timeout``.
            FrameError: ``extract`` found a corrupt reply.
            TransportError: the port failed.

        """
        ...


class Plugin:
    """Base class of a BMS protocol plugin. Subclasses set the class attributes and hooks."""

    #: registry key used in config files and on the command line
    name: ClassVar[str] = ""
    #: human name (the seed table's spelling)
    title: ClassVar[str] = ""
    #: default serial speed [baud]
    baudrate: ClassVar[int] = 9600
    #: several packs may share one bus, told apart by address
    multidrop: ClassVar[bool] = False
    #: addresses a pack may have on this protocol
    addresses: ClassVar[range] = range(0, 256)
    #: address used when the config names none
    default_address: ClassVar[int] = 1
    #: silence the bus needs between the end of a reply and the next request [s]
    command_gap: ClassVar[float] = 0.0
    #: how long to wait for a complete reply [s]
    reply_timeout: ClassVar[float] = 0.5
    #: how replies are delimited and checked
    framing: ClassVar[Framing]
    #: reply part -> where its fields are; compiled once into ``self.tables``
    layouts: ClassVar[Mapping[str, Layout]] = {}
    #: control actions (keys of ``bmsbank.schema.CONTROL_ACTIONS``) this family carries out
    controls: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.scanner = Scanner(self.framing)
        self.tables = {part: FieldTable(layout.fields) for part, layout in self.layouts.items()}

    def decode_part(self, part: str, frame: bytes) -> dict[str, Any]:
        """Decode the fields of ``part`` from ``frame`` with its compiled table.

        Raises:
            FrameError: a field lies outside the frame.
        """
        start, end = self.layouts[part].region(frame)
        return self.tables[part].decode(frame, start, end)

    # -- requests ---------------------------------------------------------------------------
    def queries(self, address: int) -> Sequence[Query]:
        """The requests of one poll cycle for the pack at ``address``, in order."""
        raise NotImplementedError

    # -- replies ----------------------------------------------------------------------------
    def extract(self, buf: bytearray, address: int | None, stats: LinkStats) -> bytes | None:
        """Take the first complete reply out of ``buf``.

        Consumed bytes are deleted from ``buf``; skipped noise is counted in ``stats``.

        Args:
            buf: bytes received so far.
            address: the address asked, or None to accept any (offline decoding).
            stats: counters to update.

        Returns:
            The reply frame, or None when more bytes are needed.

        Raises:
            FrameError: the bytes at the head of ``buf`` form a corrupt frame (already removed).

        """
        while True:
            status, begin, end, reason = self.scanner.scan(buf)
            if begin:
                stats.noise_bytes += begin
                del buf[:begin]
                end -= begin
            if status == FRAME:
                frame = bytes(buf[:end])
                del buf[:end]
                self.check_address(frame, address)
                return frame
            if status == BAD:
                raw = bytes(buf[: max(1, end)])
                del buf[:1]
                kind = REASONS[reason]
                raise FrameError(
                    f"{self.name}: bad {kind}",
                    raw,
                    kind="checksum" if kind == "checksum" else "malformed",
                )
            return None

    def check_address(self, frame: bytes, address: int | None) -> None:
        """Raise FrameError(kind="address") when ``frame`` comes from another address."""

    def parse(self, frame: bytes) -> tuple[str, dict[str, Any]]:
        """Decode one reply frame into ``(part, fields)``; raises FrameError on bad content."""
        raise NotImplementedError

    # -- writes ---------------------------------------------------------------------------
    def control(
        self,
        link: ControlLink,
        address: int,
        action: str,
        value: Any,
        parts: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Carry out ``action`` with ``value`` on the pack at ``address`` and check the ack.

        Args:
            link: the serial link (the poller's, between two requests of its poll cycle).
            address: the pack's address.
            action: an action of ``controls``.
            value: the request's value (see ``bmsbank.schema.CONTROL_ACTIONS``).
            parts: the pack's latest decoded reply parts (read-modify-write context).

        Raises:
            ControlError: the action is not supported or the BMS refused it.
            LinkTimeout, FrameError, TransportError: from the link.

        """
        raise ControlError(f"{self.name} does not support {action}")

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Build the plugin's state fields from the decoded parts of one poll cycle.

        Returns the fields of the state message that come from the BMS (voltage, current, soc,
        soh, capacity, remaining, cycles, cells, balancing, temperatures, mosfet_temperature,
        charge_fet, discharge_fet, bms_ccl, bms_dcl, bms_cvl, alarms, hardware); everything else
        (ids, counters, derived values) is added by the poller.
        """
        raise NotImplementedError


def bits(value: int, count: int) -> list[int]:
    """The lowest ``count`` bits of ``value`` as a list of 0/1, bit 0 first."""
    return [(value >> i) & 1 for i in range(count)]


def alarms_from_bits(value: int, table: Mapping[int, str], level: int = ALARM) -> dict[str, int]:
    """Map protection/alarm bits to alarm levels.

    Args:
        value: the BMS's bit field.
        table: bit number -> alarm name (several bits may map to one name).
        level: level to give an alarm whose bit is set.

    Returns:
        {alarm name: level} with every name of the table present (0 when no bit is set), so a
        receiver can tell "supported and OK" from "not supported".

    """
    out = dict.fromkeys(table.values(), 0)
    for bit, name in table.items():
        if (value >> bit) & 1:
            out[name] = level
    return out


def require(parts: Mapping[str, Mapping[str, Any]], *names: str) -> None:
    """Raise FrameError when a part the state needs is missing."""
    missing = [n for n in names if n not in parts]
    if missing:
        raise FrameError(f"missing reply part(s): {', '.join(missing)}", kind="truncated")


def plugin_names() -> Iterable[str]:
    """Names of all registered plugins (see ``bmsbank.services.poller.plugins``)."""
    from bmsbank.services.poller.plugins import REGISTRY

    return REGISTRY.keys()
