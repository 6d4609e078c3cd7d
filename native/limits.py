"""The bank kernels in use: compiled :mod:`._limits`, or its twin when ``BMSBANK_PURE=1``."""

from __future__ import annotations

import os

if os.environ.get("BMSBANK_PURE") == "1":
    from bmsbank.native._limits_py import IMPLEMENTATION, aggregate, step_factor  # noqa: F401
else:
    try:
        from bmsbank.native._limits import (  # type: ignore[no-redef]  # noqa: F401
            IMPLEMENTATION,
            aggregate,
            step_factor,
        )
    except ImportError as exc:  # pragma: no cover - exercised by a broken install only
        raise ImportError(
            "bmsbank.native._limits is not compiled: run the README set-up "
            "(or set BMSBANK_PURE=1 to use the slow pure-Python twin)"
        ) from exc
