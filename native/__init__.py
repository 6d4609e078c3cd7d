"""Hot paths in Cython, each beside a complete pure-Python twin with the same public API.

Import the implementations through :mod:`bmsbank.native.frames` and :mod:`bmsbank.native.limits`;
they load the compiled module unless ``BMSBANK_PURE=1`` forces the twins.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
from types import ModuleType

PURE_ENV = "BMSBANK_PURE"

#: why the twins run instead of the compiled modules; None while every module is compiled
_pure_reason: str | None = "BMSBANK_PURE=1" if os.environ.get(PURE_ENV) == "1" else None


def select(compiled: str, twin: ModuleType | str) -> ModuleType:
    """The compiled module ``compiled``, or ``twin`` when it cannot or must not be used.

    ``twin`` may be given by name: it is then imported only when chosen (a poller running the
    compiled codec does not carry the twin's code in memory).

    The twins are complete and tested against the compiled modules, so an install without a
    compiled wheel for its machine (an unusual CPU or Python) runs on them, slower: said once
    per process, as a warning at start, and by ``bmsbank --version``. ``BMSBANK_PURE=1``
    chooses them on purpose (the test suite's second run).
    """
    global _pure_reason
    if os.environ.get(PURE_ENV) == "1":
        return importlib.import_module(twin) if isinstance(twin, str) else twin
    try:
        return importlib.import_module(compiled)
    except ImportError as exc:
        if _pure_reason is None:
            _pure_reason = f"no compiled modules for this machine ({exc})"
            logging.getLogger(__name__).warning(
                "bmsbank: %s; using the pure-Python twins (complete, slower: see README)",
                _pure_reason,
            )
        return importlib.import_module(twin) if isinstance(twin, str) else twin


def implementation() -> str:
    """Which implementation of the hot paths runs, for ``bmsbank --version``.

    "compiled (CPython 3.11, x86_64)", or "pure-Python twins (<why>)".
    """
    from bmsbank.native import frames, limits, messages  # noqa: F401 (their choice is made here)

    machine = f"CPython {sys.version_info[0]}.{sys.version_info[1]}, {platform.machine()}"
    if _pure_reason is None:
        return f"compiled ({machine})"
    return f"pure-Python twins ({_pure_reason}; {machine})"
