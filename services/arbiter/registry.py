"""Latest validated state per pack, and whether each pack is online.

A pack is online from its first good state until ``stale_after`` seconds pass without one; it comes
back online with its next good state. Configured packs that never reported count as offline. States
from packs outside the bank, and states whose cell count differs from the configured one, are
counted and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bmsbank.errors import MessageError
from bmsbank.schema import validate_state

log = logging.getLogger(__name__)


@dataclass
class PackEntry:
    """What the arbiter knows about one pack."""

    pack: str
    state: dict[str, Any] | None = None
    seen: float | None = None  #: arbiter monotonic time of the last good state [s]
    online: bool = False


@dataclass
class Counters:
    """Message counters, published in every bank message."""

    states: int = 0  #: good state messages
    rejected: int = 0  #: state messages that failed validation
    lost: int = 0  #: sequence gaps (states the arbiter never got)
    unknown_packs: int = 0  #: good states from packs that are not configured
    reasons: dict[str, int] = field(default_factory=dict)  #: rejections by first failing field


class PackRegistry:
    """Tracks every configured pack (and any other that reports)."""

    def __init__(
        self, pack_ids: list[str], stale_after: float, cells: dict[str, int] | None = None
    ) -> None:
        self.stale_after = stale_after
        self.packs: dict[str, PackEntry] = {pid: PackEntry(pid) for pid in pack_ids}
        self.cells = cells or {}  #: configured cells per pack; a state with another count is bad
        self.last_rejection = ""  #: why the latest rejected state was rejected
        self.counters = Counters()
        self._last_seq: dict[str, int] = {}

    def accept(self, msg: Any, now: float) -> PackEntry | None:
        """Validate a decoded state message and store it; count and drop it when invalid."""
        try:
            state = validate_state(msg)
        except MessageError as exc:
            self._reject(str(exc))
            return None
        pid = state["pack"]
        entry = self.packs.get(pid)
        if entry is None:
            self.counters.unknown_packs += 1
            log.warning("[%s] state from a pack that is not in the bank; ignored", pid)
            return None
        expected = self.cells.get(pid, 0)
        if expected and len(state["cells"]) != expected:
            self._reject(f"cells: {len(state['cells'])} reported, {expected} configured for {pid}")
            return None
        self._count_gap(state)
        self.counters.states += 1
        if not entry.online:
            log.info("[%s] online", pid)
        entry.state, entry.seen, entry.online = state, now, True
        return entry

    def _reject(self, why: str) -> None:
        self.counters.rejected += 1
        self.last_rejection = why
        key = why.split(":", 1)[0]
        self.counters.reasons[key] = self.counters.reasons.get(key, 0) + 1
        log.warning("rejected state message: %s", why)

    def _count_gap(self, state: dict[str, Any]) -> None:
        # Sequence numbers are per poller process (per port); a restart starts again at 0.
        port, seq = state["port"], state["seq"]
        last = self._last_seq.get(port)
        if last is not None and seq > last + 1:
            self.counters.lost += seq - last - 1
        self._last_seq[port] = seq

    def refresh(self, now: float) -> list[str]:
        """Mark packs silent for over ``stale_after`` offline; return the ids that just went."""
        went = []
        for entry in self.packs.values():
            if entry.online and entry.seen is not None and now - entry.seen > self.stale_after:
                entry.online = False
                went.append(entry.pack)
                log.warning("[%s] offline: no state for %.1f s", entry.pack, now - entry.seen)
        return went

    def online(self) -> list[PackEntry]:
        """Online packs, in registry order."""
        return [e for e in self.packs.values() if e.online]
