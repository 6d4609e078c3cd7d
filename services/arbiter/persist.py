"""Keep what the engine must not forget across restarts: days since full charge, counted SoC.

The file holds the engine's snapshot (ages in seconds, not clock readings, because the engine's
clock is the arbiter's monotonic clock, which restarts with the machine) and the wall time it was
written, so the time the arbiter was down is added on load. Writes are atomic (temporary file +
rename); a file that cannot be read or written is logged once and never stops the arbiter.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

MAX_DOWNTIME = 10 * 365 * 86400.0  # s; a larger gap means the wall clock was wrong


class StateFile:
    """One JSON file at ``path`` ("" = keep nothing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.warned = False

    def load(self) -> dict[str, Any] | None:
        """The saved snapshot with its ages advanced by the downtime, or None."""
        if not self.path or not os.path.exists(self.path):
            return None
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            snap = dict(data["engine"])
            down = time.time() - float(data["saved"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("state file %s unreadable, starting afresh: %s", self.path, exc)
            return None
        if not 0.0 <= down <= MAX_DOWNTIME:
            down = 0.0
        ages = snap.get("since_full") or []
        snap["since_full"] = [None if a is None else float(a) + down for a in ages]
        if snap.get("since_reset") is not None:
            snap["since_reset"] = float(snap["since_reset"]) + down
        return snap

    def save(self, snap: dict[str, Any]) -> None:
        """Write ``snap`` atomically; log (once) and carry on when it cannot."""
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"saved": time.time(), "engine": snap}, fh)
            os.replace(tmp, self.path)
            self.warned = False
        except OSError as exc:
            if not self.warned:
                log.warning("cannot write state file %s: %s", self.path, exc)
                self.warned = True
