"""The frame codec in use: compiled :mod:`._frames`, or its twin when ``BMSBANK_PURE=1``.

A missing compiled module is an installation error, not a reason to run slowly in silence.
"""

from __future__ import annotations

import os

if os.environ.get("BMSBANK_PURE") == "1":
    from bmsbank.native._frames_py import (  # noqa: F401
        IMPLEMENTATION,
        FieldTable,
        Scanner,
        crc16_modbus,
        negsum16,
        sum8,
    )
else:
    try:
        from bmsbank.native._frames import (  # type: ignore[no-redef]  # noqa: F401
            IMPLEMENTATION,
            FieldTable,
            Scanner,
            crc16_modbus,
            negsum16,
            sum8,
        )
    except ImportError as exc:  # pragma: no cover - exercised by a broken install only
        raise ImportError(
            "bmsbank.native._frames is not compiled: run the README set-up "
            "(or set BMSBANK_PURE=1 to use the slow pure-Python twin)"
        ) from exc

from bmsbank.native.spec import BAD, FRAME, NONE, PARTIAL, REASONS  # noqa: E402,F401
