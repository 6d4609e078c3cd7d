"""Hot paths in Cython, each beside a complete pure-Python twin with the same public API.

Import the implementations through :mod:`bmsbank.native.frames` and :mod:`bmsbank.native.limits`;
they load the compiled module unless ``BMSBANK_PURE=1`` forces the twins.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_ENV = "BMSBANK_PURE"


def select(compiled: str, twin: ModuleType | str) -> ModuleType:
    """The compiled module ``compiled``, or ``twin`` when ``BMSBANK_PURE=1``.

    ``twin`` may be given by name: it is then imported only when chosen (a poller running the
    compiled codec does not carry the twin's code in memory).

    A missing compiled module is an installation error, not a reason to run slowly in silence.
    """
    if os.environ.get(PURE_ENV) == "1":
        return importlib.import_module(twin) if isinstance(twin, str) else twin
    try:
        return importlib.import_module(compiled)
    except ImportError as exc:  # pragma: no cover - exercised by a broken install only
        raise ImportError(
            f"{compiled} is not compiled: run the README set-up "
            f"(or set {PURE_ENV}=1 to use the slow pure-Python twin)"
        ) from exc
