"""Protocol plugins, one module per BMS family, loaded lazily by name.

A missing optional dependency (say, a BLE library) breaks only its own plugin, never the others.
"""

from __future__ import annotations

import importlib

from bmsbank.services.poller.plugins.base import Plugin

#: plugin name -> "module:Class"
REGISTRY: dict[str, str] = {
    "jbd": "bmsbank.services.poller.plugins.jbd:JbdPlugin",
    "jkpb": "bmsbank.services.poller.plugins.jkpb:JkPbPlugin",
}


def plugin_class(name: str) -> type[Plugin]:
    """The class of the plugin registered as ``name`` (imports its module, builds nothing).

    Raises:
        KeyError: no plugin of that name (the message lists the known ones).

    """
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown BMS {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, class_name = target.split(":")
    cls: type[Plugin] = getattr(importlib.import_module(module_name), class_name)
    return cls


def load(name: str) -> Plugin:
    """Instantiate the plugin registered as ``name``.

    Raises:
        KeyError: no plugin of that name (the message lists the known ones).

    """
    return plugin_class(name)()


def controls(name: str) -> frozenset[str]:
    """Control actions the BMS family ``name`` supports (empty for an unknown name).

    The publisher uses it with a state's ``bms`` field to decide which writable paths a pack gets.
    """
    try:
        return plugin_class(name).controls
    except KeyError:
        return frozenset()
