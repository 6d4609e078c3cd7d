"""Why each pack is where it is, and how the outputs are: the causes in force, in words.

The arbiter learns a pack's link from its poller's ``link`` messages and the outputs' health
from the publisher's ``health`` messages (both on the control channel, validated here; see
:mod:`bmsbank.status_schema`), and its own rejections from the registry. :class:`WhyBook` keeps
the latest of each and turns them into a pack's ``reason`` and ``link`` and the bank's
``outputs``. A reason names only a cause in force: a port missing now, a link silent or noisy
now (as of the poller's latest message, which is dropped when the poller stops sending), a
rejection of the pack's latest state (a later good state clears it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bmsbank.errors import MessageError
from bmsbank.schema import unpack
from bmsbank.services.arbiter.registry import PackEntry
from bmsbank.status_schema import OUTPUT_NAMES, validate_health, validate_link

log = logging.getLogger(__name__)

#: s after which a poller's link message no longer counts (it sends one every LINK_HEARTBEAT)
LINK_STALE = 30.0
#: s after which the publisher's health message no longer counts: outputs become "unknown"
HEALTH_STALE = 15.0
MAX_PORTS = 256  #: ports remembered at most (a link message for one more is refused)


def clock(unix: float) -> str:
    """A unix time as local "HH:MM" (a reason's "since")."""
    return time.strftime("%H:%M", time.localtime(unix))


@dataclass
class WhyCounters:
    """What the book has taken; published under the bank's ``counters.why``."""

    links: int = 0  #: valid link messages
    health: int = 0  #: valid health messages
    rejected: int = 0  #: malformed link or health messages (dropped)

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return dict(vars(self))


@dataclass
class WhyBook:
    """The latest link per port and the latest output health, with when they came."""

    started: float  #: arbiter monotonic start [s]
    grace: float  #: s after the start during which a silent pack is "waiting for first state"
    mono: Callable[[], float] = time.monotonic
    links: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    health: tuple[dict[str, Any], float] | None = None
    health_stale: float = HEALTH_STALE  #: s after which the health report counts as unknown
    counters: WhyCounters = field(default_factory=WhyCounters)

    # -- taking messages ---------------------------------------------------------------------
    def take_link(self, body: bytes, now: float) -> bool:
        """Validate and keep a poller's link message; count and drop a malformed one."""
        try:
            msg = validate_link(unpack(body))
        except MessageError as exc:
            return self._reject("link", exc)
        if msg["port"] not in self.links and len(self.links) >= MAX_PORTS:
            return self._reject("link", MessageError(f"more than {MAX_PORTS} ports"))
        msg["by_address"] = {p["address"]: p for p in msg["packs"]}
        self.links[msg["port"]] = (msg, now)
        self.counters.links += 1
        return True

    def take_health(self, body: bytes, now: float) -> bool:
        """Validate and keep the publisher's health message; count and drop a malformed one."""
        try:
            msg = validate_health(unpack(body))
        except MessageError as exc:
            return self._reject("health", exc)
        self.health = (msg, now)
        self.counters.health += 1
        return True

    def _reject(self, kind: str, exc: MessageError) -> bool:
        self.counters.rejected += 1
        log.warning("rejected %s message: %s", kind, exc)
        return False

    # -- reading -----------------------------------------------------------------------------
    def port_link(self, port: str, now: float) -> dict[str, Any] | None:
        """The latest link message of ``port`` when it is fresh, else None."""
        got = self.links.get(port)
        if got is None or now - got[1] > LINK_STALE:
            return None
        return got[0]

    def pack(self, entry: PackEntry, online: bool, now: float) -> tuple[str | None, dict | None]:
        """(``reason``, ``link``) of one pack for its bank summary.

        Args:
            entry: the registry's entry of the pack.
            online: the engine counts it online.
            now: arbiter monotonic time [s].

        """
        port, _, address = entry.pack.rpartition(":")
        port_msg = self.port_link(port, now)
        plink = None if port_msg is None else port_msg["by_address"].get(int(address))
        link = None
        if port_msg is not None and plink is not None:
            missing = port_msg["state"] == "missing"
            link = {
                "state": "missing" if missing else plink["state"],
                "since": port_msg["since"] if missing else plink["since"],
                "ok": plink["ok"], "bad": plink["bad"], "timeouts": plink["timeouts"],
            }  # fmt: skip
        if online:
            held = entry.held_why if entry.held is not None else ""
            return (f"a state waits for confirmation: it would cut {held}" if held else None), link
        return self._offline_reason(entry, port_msg, plink, now), link

    def _offline_reason(
        self, entry: PackEntry, port_msg: dict | None, plink: dict | None, now: float
    ) -> str:
        if port_msg is not None and port_msg["state"] == "missing":
            return f"port {port_msg['device']} missing since {clock(port_msg['since'])}"
        if plink is not None and plink["state"] not in ("answering", "waiting"):
            return plink["detail"] or plink["state"]
        if entry.rejection_current and entry.last_rejection:
            return entry.last_rejection
        if entry.seen is None:
            if now - self.started <= self.grace:
                return "waiting for first state"
            if port_msg is None:
                port = entry.pack.rpartition(":")[0]
                return f"no state received; no news from the poller of port {port}"
            return "no state received yet"
        return f"no state for {now - entry.seen:.0f} s"

    def outputs(self, now: float) -> dict[str, dict[str, Any]]:
        """The bank's ``outputs``: each output's health with its age, "unknown" when stale."""
        if self.health is None:
            return {name: {"ok": None, "detail": "unknown: no health report from the publisher",
                           "age": None} for name in OUTPUT_NAMES}  # fmt: skip
        msg, when = self.health
        age = max(0.0, now - when)
        out = {}
        for name in OUTPUT_NAMES:
            got = msg["outputs"].get(name)
            if age > self.health_stale:
                out[name] = {
                    "ok": None,
                    "age": age,
                    "detail": f"unknown: the publisher's last report is {age:.0f} s old",
                }
            elif got is None:
                out[name] = {"ok": None, "detail": "not reported", "age": age}
            else:
                out[name] = {"ok": got["ok"], "detail": got["detail"], "age": age}
        return out
