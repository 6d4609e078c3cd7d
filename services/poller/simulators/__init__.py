"""Simulated BMS boards that answer real requests byte-exactly on a pseudo-terminal.

One simulator per BMS family, registered by the plugin name it answers for.
"""

from __future__ import annotations

import importlib

from bmsbank.services.poller.simulators.battery import BatteryModel

#: plugin name -> "module:Class"; the class takes ``packs: dict[address, BatteryModel]``
REGISTRY: dict[str, str] = {
    "jbd": "bmsbank.services.poller.simulators.jbd:JbdSimulator",
    "jkpb": "bmsbank.services.poller.simulators.jkpb:JkPbSimulator",
}


def create(name: str, packs: dict[int, BatteryModel]):  # noqa: ANN201 - returns a BusSimulator
    """Instantiate the simulator for the BMS family ``name`` with ``packs`` behind it."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"no simulator for {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(packs)
