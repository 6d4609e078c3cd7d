"""Simulated BMS boards that answer real requests byte-exactly on a pseudo-terminal.

Each family's simulator lives in its folder (``plugins/<family>/simulator.py``) and builds on
:class:`~bmsbank.services.poller.simulators.base.Simulator`; this package holds the battery model,
the pty server and the command line that runs them.
"""

from __future__ import annotations

from typing import Any

from bmsbank.services.poller.simulators.battery import BatteryModel


def create(name: str, packs: dict[int, BatteryModel], **options: Any) -> Any:
    """Instantiate the simulator for the BMS family ``name`` with ``packs`` behind it.

    Raises:
        KeyError: no family of that name.

    """
    from bmsbank.services.poller import plugins

    return plugins.simulator_class(name)(packs, **options)
