"""Writable switches on a pack's D-Bus service, carried out over the control channel.

Paths (the names dbus-serialbattery made familiar; the Venus GUI shows a switch for each valid one):

    /Io/ForceChargingOff     0/1   1 -> control "charge" = false (the BMS opens its charge FET)
    /Io/ForceDischargingOff  0/1   1 -> control "discharge" = false
    /Io/TurnBalancingOff     0/1   1 -> control "balance" = false
    /Settings/ResetSoc       1     -> control "reset_soc"; reads 0 again once answered
    /Control/LastResult      text  what the last write came to ("charge off: done",
                                   "reset SoC: failed: jkpb does not support reset_soc")

A switch the pack's BMS family cannot do is invalid (the GUI hides it) and read-only: SetValue
answers 1 and nothing is sent. A valid write is accepted at once (SetValue answers 0, the value
shows) and the request goes publisher -> arbiter -> the poller owning the pack -> the BMS in the
background; when the BMS does not confirm, the switch goes back to what it was and
/Control/LastResult says why. The effect itself shows with the pack's next state
(/Io/AllowToCharge, /Io/AllowToDischarge, /Balances/CellN, /Soc) and in the bank's limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bmsbank.control import supported_actions

from .dbus_service import VeService

log = logging.getLogger(__name__)

#: writable path -> control action
CONTROLS = {
    "/Io/ForceChargingOff": "charge",
    "/Io/ForceDischargingOff": "discharge",
    "/Io/TurnBalancingOff": "balance",
    "/Settings/ResetSoc": "reset_soc",
}
RESULT = "/Control/LastResult"
_LABELS = {"charge": "charge", "discharge": "discharge", "balance": "balancing"}

Requester = Callable[[str, str, Any], Awaitable[dict[str, Any]]]


def switch_ok(value: Any) -> bool:
    """A switch takes 0 or 1 (an int or a bool; nothing else)."""
    return type(value) in (int, bool) and value in (0, 1)


def reset_ok(value: Any) -> bool:
    """/Settings/ResetSoc takes 1 (write it to ask for a reset)."""
    return type(value) in (int, bool) and value == 1


class PackControls:
    """The switches of one pack's service; see the module docstring."""

    def __init__(self, pack: str, bms: str, ve: VeService, requester: Requester) -> None:
        self.pack = pack
        self.ve = ve
        self.requester = requester
        self.supported = supported_actions(bms)
        self._tasks: set[asyncio.Task] = set()

    def add_paths(self) -> None:
        """Add every control path to the service (before it connects)."""
        for path, action in CONTROLS.items():
            if action in self.supported:
                check = reset_ok if action == "reset_soc" else switch_ok
                self.ve.add_path(path, 0, writable=True, validator=check, on_set=self._written)
            else:
                self.ve.add_path(path, None)  # invalid: not offered for this BMS family
        self.ve.add_path(RESULT, "")

    def _written(self, path: str, value: Any) -> None:
        task = asyncio.get_running_loop().create_task(self.carry_out(path, int(value)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def carry_out(self, path: str, value: int) -> dict[str, Any]:
        """Send the control for a written ``path`` and show the outcome; returns the result."""
        action = CONTROLS[path]
        if action == "reset_soc":
            want, label = True, "reset SoC"
        else:
            want, label = not value, f"{_LABELS[action]} {'off' if value else 'on'}"
        result = await self.requester(self.pack, action, want)
        if action == "reset_soc":
            await self.ve.set_value(path, 0)  # ready for the next request
        elif not result["ok"]:
            await self.ve.set_value(path, 1 - value)  # the BMS did not take it: show what holds
        if result["ok"]:
            text = f"{label}: done"
            log.info("%s: %s over D-Bus: done", self.pack, label)
        else:
            text = f"{label}: failed: {result['error']}"
            log.warning("%s: %s over D-Bus failed: %s", self.pack, label, result["error"])
        await self.ve.set_value(RESULT, text)
        return result
