"""What a BMS family that speaks CAN is: frames in, pack states out (the CAN input's families).

A CAN bus is not a request/reply link: some BMSs broadcast their readings on their own (JK CAN,
a battery speaking the Victron CAN-bus BMS protocol), others answer requests (Daly CAN), and the
frames of several packs interleave on one bus. So a CAN family is not a serial
:class:`~bmsbank.services.poller.plugins.base.Plugin`; it is data plus a few named hooks too:

- ``info``: its :class:`~bmsbank.services.poller.plugins.info.FamilyInfo` (``link`` "CAN",
  ``baudrate`` the bus bit rate, ``addresses`` the pack addresses it can tell apart);
- :meth:`CanFamily.requests`: what to send for one pack in one poll cycle (nothing for a family
  that broadcasts);
- :meth:`CanFamily.address_of`: which pack a received frame comes from (None: not this
  family's frame at all);
- :meth:`CanFamily.accept`: decode one frame into the pack's reply parts;
- :meth:`CanFamily.state`: the state fields from the parts, as ``Plugin.state`` does (derived
  values are :func:`bmsbank.state.derive`'s, never the family's);
- ``transient``: the parts the input drops after building a state from them (event frames
  whose absence means "nothing to report", such as JK CAN's alarm frame).

``name``, ``title``, ``baudrate``, ``addresses`` ... are class attributes set from ``info`` when a
subclass is defined, as :class:`~bmsbank.services.poller.plugins.base.Plugin` does, so the
registry can read them from the class.

Its simulator (:class:`CanSimulator`) answers requests and broadcasts from
:class:`~bmsbank.services.poller.simulators.battery.BatteryModel` packs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bmsbank.services.poller.plugins.info import FromInfo
from bmsbank.services.poller.simulators.battery import BatteryModel


@dataclass(frozen=True, slots=True)
class CanFrame:
    """One CAN frame as the families see it (python-can's Message without the bus details).

    Attributes:
        id: the arbitration id (11 or 29 bits).
        data: 0-8 data bytes (``len(data)`` is the DLC).
        extended: a 29-bit id.

    """

    id: int
    data: bytes
    extended: bool = False


class CanFamily(FromInfo):
    """Base class of a CAN BMS family. Subclasses set ``info`` and implement the hooks.

    Name, title, bus bit rate [bit/s] and addresses come from ``info`` (:class:`FromInfo`).
    """

    #: how long the input waits for a polled pack's replies after its requests [s]
    reply_timeout: ClassVar[float] = 0.5
    #: parts the input drops once it has built a state from them: frames the BMS sends only
    #: while something holds (an alarm frame that stops when the alarm clears), so that a part
    #: left over from an earlier state does not outlive what it reported
    transient: ClassVar[frozenset[str]] = frozenset()


    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        #: per-input options, validated, every declared one present
        self.options = self.info.option_values(options or {})

    def requests(self, address: int, cycle: int) -> Sequence[CanFrame]:
        """The frames to send in poll cycle ``cycle`` (0 first) for the pack at ``address``.

        The default sends nothing: the BMS broadcasts.
        """
        return ()

    def address_of(self, frame: CanFrame) -> int | None:
        """The address of the pack ``frame`` comes from, or None when it is not this family's."""
        raise NotImplementedError

    def accept(self, frame: CanFrame, parts: dict[str, dict[str, Any]]) -> None:
        """Decode ``frame`` (of a pack :meth:`address_of` named) into that pack's ``parts``.

        Raises:
            FrameError: a short DLC ("truncated"), an id the family does not decode
                ("unexpected"), or content it rejects ("malformed").

        """
        raise NotImplementedError

    def state(self, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The state fields from a pack's parts (the same fields as ``Plugin.state``).

        Raises:
            FrameError(kind="truncated"): a part the state needs has not arrived yet.

        """
        raise NotImplementedError


class CanSimulator:
    """A simulated CAN bus of one family's packs at the addresses of ``packs``."""

    #: the family this simulator speaks for
    family: ClassVar[type[CanFamily]]

    def __init__(self, packs: dict[int, BatteryModel]) -> None:
        self.packs = packs

    def answer(self, frame: CanFrame) -> list[CanFrame]:
        """The frames the packs send in reply to ``frame`` (none for a frame nobody answers)."""
        return []

    def broadcast(self) -> list[CanFrame]:
        """The frames the packs send on their own in one broadcast period (none when polled)."""
        return []
