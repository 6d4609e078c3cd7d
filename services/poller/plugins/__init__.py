"""BMS families, one folder each (``plugins/<family>/``), found automatically and loaded lazily.

A family folder holds ``__init__.py`` (``INFO``, metadata only), ``family.py`` (class ``Family``:
framing, queries, layouts, state mapping, writes) and ``simulator.py`` (class ``Simulator``).
Reading metadata imports nothing but the folders' ``__init__`` modules; a missing optional
dependency (say, a BLE library) breaks only its own family, never the others.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING, Any

from bmsbank.services.poller.plugins.info import FamilyInfo

if TYPE_CHECKING:
    from bmsbank.services.poller.plugins.base import Plugin


@cache
def families() -> dict[str, FamilyInfo]:
    """Every family folder's metadata, by name."""
    found = {}
    for mod in pkgutil.iter_modules(__path__):
        if not mod.ispkg:
            continue
        info = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "INFO", None)
        if isinstance(info, FamilyInfo):
            if info.name != mod.name:
                raise ImportError(f"family folder {mod.name!r} declares INFO.name {info.name!r}")
            found[info.name] = info
    return dict(sorted(found.items()))


def info(name: str) -> FamilyInfo:
    """The metadata of family ``name``.

    Raises:
        KeyError: no family of that name (the message lists the known ones).

    """
    try:
        return families()[name]
    except KeyError:
        raise KeyError(f"unknown BMS {name!r}; known: {', '.join(families())}") from None


def plugin_class(name: str) -> type[Plugin]:
    """The class of family ``name`` (imports its codec, builds nothing).

    Raises:
        KeyError: no family of that name (the message lists the known ones).

    """
    info(name)
    cls: type[Plugin] = importlib.import_module(f"{__name__}.{name}.family").Family
    return cls


def load(name: str, options: dict[str, Any] | None = None) -> Plugin:
    """Instantiate family ``name`` with its per-port ``options`` (defaults where absent).

    Raises:
        KeyError: no family of that name, or an option it does not declare.
        ValueError: an option value is invalid.

    """
    return plugin_class(name)(options or {})


def controls(name: str) -> frozenset[str]:
    """Control actions the BMS family ``name`` supports (empty for an unknown name).

    The publisher uses it with a state's ``bms`` field to decide which writable paths a pack gets.
    """
    found = families().get(name)
    return found.controls if found else frozenset()


def simulator_class(name: str) -> Any:
    """The simulator class of family ``name`` (it takes ``packs: dict[address, BatteryModel]``)."""
    info(name)
    return importlib.import_module(f"{__name__}.{name}.simulator").Simulator
