"""Keep what the engine must not forget across restarts: days since full charge, counted SoC.

The file holds the engine's snapshot (ages in seconds, not clock readings, because the engine's
clock is the arbiter's monotonic clock, which restarts with the machine) and the wall time it was
written, so the time the arbiter was down is added on load. Writes are atomic (temporary file +
rename). Loading checks every field (``bmsbank.persisted`` for the file, the engines' shared
``check_snapshot`` for the snapshot: types, ranges, one age per pack); a file that fails any
check, or cannot be read or written, is logged once and the arbiter carries on as with no file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from bmsbank.native._limits_py import check_snapshot
from bmsbank.persisted import CorruptFile, number, read_json, table
from bmsbank.services.arbiter import cell_keep
from bmsbank.services.arbiter.cell_health import CellHealth

log = logging.getLogger(__name__)

MAX_DOWNTIME = 10 * 365 * 86400.0  # s; a larger gap means the wall clock was wrong
MAX_WALL = 1e11  # s since 1970 (year 5138); a larger "saved" is not a time


class StateFile:
    """One JSON file at ``path`` ("" = keep nothing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.warned = False

    def load(self, packs: int) -> dict[str, Any] | None:
        """The saved snapshot of a bank of ``packs`` with its ages advanced by the downtime.

        Returns:
            The snapshot (see ``check_snapshot``), or None when there is no file or it is unusable
            (logged once as a warning).
        """
        try:
            data = read_json(self.path)
            if data is None:
                return None
            saved = number(data.get("saved"), "saved", 0.0, MAX_WALL)
            snap = check_snapshot(table(data.get("engine"), "engine"), packs)
        except ValueError as exc:  # CorruptFile included
            log.warning("state file %s unusable, starting as without one: %s", self.path, exc)
            return None
        down = time.time() - saved
        if not 0.0 <= down <= MAX_DOWNTIME:
            down = 0.0
        snap["since_full"] = [None if a is None else a + down for a in snap["since_full"]]
        if snap["since_reset"] is not None:
            snap["since_reset"] += down
        return snap

    def save(self, snap: dict[str, Any]) -> None:
        """Write ``snap`` atomically; log (once) and carry on when it cannot."""
        self._write({"saved": time.time(), "engine": snap})

    def _write(self, data: dict[str, Any]) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
            os.replace(tmp, self.path)
            self.warned = False
        except OSError as exc:
            if not self.warned:
                log.warning("cannot write %s: %s", self.path, exc)
                self.warned = True


class CellsFile(StateFile):
    """What cell health learnt (:mod:`bmsbank.services.arbiter.cell_health`), beside the state file.

    ``state.json`` keeps ``state.cells.json`` beside it; "" keeps nothing. Its samples are weeks
    of work, so it is written only when something was learnt (see the arbiter) and read back
    whole or not at all.
    """

    MAX_BYTES = 4 * 1024 * 1024  #: 256 packs of 64 cells, every sample kept

    def __init__(self, state_file: str) -> None:
        root, _ext = os.path.splitext(state_file)
        super().__init__(f"{root}.cells.json" if state_file else "")

    def load_cells(self, cells: CellHealth) -> None:
        """Give ``cells`` what the file kept; a file it refuses is logged once and left."""
        try:
            data = read_json(self.path, self.MAX_BYTES)
            if data is None:
                return
            taken = cell_keep.restore(cells, table(data.get("packs"), "packs"))
        except ValueError as exc:  # CorruptFile included
            log.warning("cell health file %s unusable, starting afresh: %s", self.path, exc)
            return
        if taken:
            log.info("cell health of %s restored from %s", ", ".join(taken), self.path)

    def save_cells(self, cells: CellHealth) -> None:
        """Write what ``cells`` learnt, atomically."""
        self._write({"saved": time.time(), "packs": cell_keep.snapshot(cells)})


__all__ = ["CellsFile", "CorruptFile", "StateFile"]
