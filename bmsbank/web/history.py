"""The web view's history: bank points downsampled into a small sqlite3 file of bounded size.

Two tiers: 10 s points kept 24 h and 1 min points kept 7 days (V, A, SoC, CVL, CCL, DCL and each
pack's cell spread), plus an event log of limit changes with their reasons. The file never grows
past ``max_bytes``: sqlite's ``auto_vacuum = FULL`` gives freed pages back to the file system at
each commit (https://www.sqlite.org/pragma.html#pragma_auto_vacuum), and when the file still
reaches the bound the oldest rows go first.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

#: tier name -> (seconds per point, seconds kept)
TIERS = {"24h": (10.0, 86400.0), "7d": (60.0, 7 * 86400.0)}
FIELDS = ("voltage", "current", "soc", "cvl", "ccl", "dcl")
MAX_EVENTS = 2000
COMMIT_PERIOD = 60.0  #: [s] between writes to the file
#: a limit change worth a line in the event log (a slow CVL ramp is not news)
EVENT_STEP = {"cvl": 0.05, "ccl": 1.0, "dcl": 1.0}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (tier TEXT, t REAL, data TEXT);
CREATE INDEX IF NOT EXISTS points_t ON points (tier, t);
CREATE TABLE IF NOT EXISTS events (t REAL, text TEXT);
"""


class _Bucket:
    """The bank messages of one point: means of V, A, SoC; last limits; widest spread per pack."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.sums = dict.fromkeys(("voltage", "current", "soc"), 0.0)
        self.counts = dict.fromkeys(("voltage", "current", "soc"), 0)
        self.last: dict[str, Any] = {}
        self.spread: dict[str, float] = {}

    def add(self, bank: Mapping[str, Any]) -> None:
        for k in self.sums:
            x = bank.get(k)
            if x is not None:
                self.sums[k] += x
                self.counts[k] += 1
        for k in ("cvl", "ccl", "dcl"):
            self.last[k] = bank.get(k)
        for p in bank.get("packs") or ():
            lo, hi = p.get("min_cell_voltage"), p.get("max_cell_voltage")
            if p.get("online") and lo is not None and hi is not None:
                mv = round((hi - lo) * 1000.0, 1)
                self.spread[p["id"]] = max(mv, self.spread.get(p["id"], 0.0))

    def point(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: (round(self.sums[k] / self.counts[k], 3) if self.counts[k] else None)
            for k in self.sums
        }
        out.update(self.last)
        out["spread"] = self.spread
        return out


class History:
    """The on-disk store (``path`` = "" keeps points in memory only: no history dir configured)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path or ":memory:"
        self.max_bytes = max_bytes
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA auto_vacuum = FULL")  # only takes effect on a new file
        self.db.executescript(_SCHEMA)
        self.buckets: dict[str, _Bucket] = {}
        self.limits: dict[str, tuple[float, str]] = {}
        self.pending: list[tuple[str, float, str]] = []  #: points not yet written
        self.pending_events: list[tuple[float, str]] = []
        self.last_commit = time.monotonic()
        self.written = 0  #: points written
        self.trimmed = 0  #: times the oldest rows went to keep the bound

    def add(self, bank: Mapping[str, Any]) -> None:
        """Take one validated bank message (its ``time`` is unix seconds)."""
        now = float(bank["time"])
        for tier, (step, _) in TIERS.items():
            b = self.buckets.get(tier)
            start = now - now % step
            if b is not None and b.start != start:
                self._write(tier, b)
                b = None
            if b is None:
                b = self.buckets[tier] = _Bucket(start)
            b.add(bank)
        self._events(bank, now)
        if time.monotonic() - self.last_commit >= COMMIT_PERIOD or len(self.pending) >= 64:
            self.last_commit = time.monotonic()
            self._commit()

    def _write(self, tier: str, b: _Bucket) -> None:
        self.pending.append((tier, b.start, json.dumps(b.point(), separators=(",", ":"))))

    def _commit(self) -> None:
        """Write the pending points in one transaction (flash: a write a minute, not each 10 s)."""
        if not self.pending and not self.pending_events:
            return
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO points VALUES (?, ?, ?)", self.pending)
        for tier, (_, keep) in TIERS.items():
            newest = max((t for k, t, _ in self.pending if k == tier), default=None)
            if newest is not None:
                self.db.execute(
                    "DELETE FROM points WHERE tier = ? AND t < ?", (tier, newest - keep)
                )
        self.db.executemany("INSERT INTO events VALUES (?, ?)", self.pending_events)
        self.db.execute(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY t DESC "
            "LIMIT -1 OFFSET ?)",
            (MAX_EVENTS,),
        )
        self.db.execute("COMMIT")
        self.written += len(self.pending)
        self.pending.clear()
        self.pending_events.clear()
        if self.size() > self.max_bytes:
            self._trim()

    def size(self) -> int:
        """The file's size [bytes] as sqlite counts it (pages in use by the database)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        return int(pages * self.db.execute("PRAGMA page_size").fetchone()[0])

    def _trim(self) -> None:
        """Drop the oldest tenth of each tier and of the events until under the bound."""
        while self.size() > self.max_bytes * 0.9:
            before = self.db.total_changes
            self.db.execute("BEGIN")
            for tier in TIERS:
                (n,) = self.db.execute(
                    "SELECT count(*) FROM points WHERE tier = ?", (tier,)
                ).fetchone()
                self.db.execute(
                    "DELETE FROM points WHERE rowid IN (SELECT rowid FROM points WHERE tier = ? "
                    "ORDER BY t LIMIT ?)",
                    (tier, max(1, n // 10)),
                )
            self.db.execute(
                "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY t LIMIT "
                "(SELECT count(*) / 10 + 1 FROM events))"
            )
            self.db.execute("COMMIT")
            self.trimmed += 1
            if self.db.total_changes == before:
                break  # nothing left to drop: the empty file is what it is

    def _events(self, bank: Mapping[str, Any], now: float) -> None:
        """A line when a limit steps or its reason changes: "CCL 250→0 A: <reason>"."""
        reasons = bank.get("reasons") or {}
        for k, step in EVENT_STEP.items():
            value, reason = bank[k], str(reasons.get(k, ""))
            before = self.limits.get(k)
            self.limits[k] = (value, reason)
            if before is None or (abs(value - before[0]) < step and reason == before[1]):
                continue
            unit = "V" if k == "cvl" else "A"
            fmt = ".2f" if k == "cvl" else ".0f"
            text = f"{k.upper()} {before[0]:{fmt}}→{value:{fmt}} {unit}: {reason}"
            self.pending_events.append((now, text))

    def points(self, tier: str, since: float | None = None) -> list[dict[str, Any]]:
        """The stored points of ``tier`` ("24h" or "7d"), oldest first, each with its ``t``."""
        since = time.time() - TIERS[tier][1] if since is None else since
        rows = self.db.execute(
            "SELECT t, data FROM points WHERE tier = ? AND t >= ? ORDER BY t", (tier, since)
        )
        out = [{"t": t, **json.loads(data)} for t, data in rows]
        out += [{"t": t, **json.loads(d)} for k, t, d in self.pending if k == tier and t >= since]
        return out

    def events(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first: {t (unix s), text}."""
        rows = self.db.execute("SELECT t, text FROM events ORDER BY t DESC LIMIT ?", (limit,))
        fresh = [{"t": t, "text": text} for t, text in reversed(self.pending_events)]
        return (fresh + [{"t": t, "text": text} for t, text in rows])[:limit]

    def flush(self) -> None:
        """Write the partial points (on stop: a restart keeps what was seen)."""
        for tier, b in self.buckets.items():
            if b.last:
                self._write(tier, b)
        self.buckets.clear()
        self._commit()

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self.db.close()


def csv_text(points: list[dict[str, Any]]) -> str:
    """History points as CSV: time (ISO, UTC), unix time, V, A, SoC, limits, spread per pack."""
    packs = sorted({p for pt in points for p in pt.get("spread", {})})
    head = ["time_utc", "t", *FIELDS, *(f"spread_mv_{p}" for p in packs)]
    lines = [",".join(head)]
    for pt in points:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pt["t"]))
        row = [stamp, f"{pt['t']:.0f}"]
        row += ["" if pt.get(k) is None else f"{pt[k]:g}" for k in FIELDS]
        row += ["" if p not in pt["spread"] else f"{pt['spread'][p]:g}" for p in packs]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"
