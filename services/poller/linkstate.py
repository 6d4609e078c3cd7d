"""A poller's view of its port and of each pack's link, for the arbiter's reasons.

:class:`LinkReport` keeps the port's state (missing since when, or open) and each pack's link
state (:data:`bmsbank.status_schema.LINK_STATES`) with its counters, and builds the ``link``
message (:mod:`bmsbank.status_schema`). It marks itself ``changed`` only when a state changes,
so the poller sends on a change plus a slow heartbeat, never per poll. A pack turns silent or
noisy only after :data:`FAIL_POLLS` failed polls in a row: one lost reply is no news.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from bmsbank.errors import FRAME_KINDS
from bmsbank.services.poller.plugins.base import LinkStats
from bmsbank.status_schema import MAX_DETAIL, STATUS_VERSION

FAIL_POLLS = 3  #: failed polls in a row before a pack counts as silent or noisy
#: counters of replies that came but were wrong (bytes heard, no valid reply)
_BAD = attrgetter(*sorted(FRAME_KINDS))
#: a link message lists every pack of a bus: its details are cut so it stays within 64 KiB
DETAIL_CUT = 160


def bad_replies(stats: LinkStats) -> int:
    """Replies that came but were no valid reply (checksum, truncated, malformed...)."""
    return sum(_BAD(stats))


@dataclass
class PackReport:
    """One pack's link state."""

    address: int
    stats: LinkStats
    state: str = "waiting"
    since: float = 0.0  #: unix [s]
    detail: str = ""
    fails: int = 0  #: failed polls in a row


class LinkReport:
    """The port's and its packs' link states, and whether they changed since the last send."""

    def __init__(self, port: str, device: str, packs: dict[int, LinkStats]) -> None:
        now = time.time()
        self.port = port
        self.device = device
        self.state, self.since, self.detail = "open", now, ""
        self.packs = {a: PackReport(a, stats, since=now) for a, stats in packs.items()}
        self.changed = True  #: a state changed since :meth:`message` was last called

    def port_state(self, state: str, detail: str = "") -> None:
        """The port is "missing" (could not be opened, or was lost) or "open"."""
        self.detail = detail[:MAX_DETAIL]
        if state != self.state:
            self.state, self.since, self.changed = state, time.time(), True

    def _set(self, pack: PackReport, state: str, detail: str) -> None:
        pack.detail = detail[:DETAIL_CUT]
        if state != pack.state:
            pack.state, pack.since, self.changed = state, time.time(), True

    def answered(self, address: int) -> None:
        """The pack's poll gave a state."""
        pack = self.packs[address]
        pack.fails = 0
        if pack.state != "answering":
            self._set(pack, "answering", "")

    def failed(self, address: int, noisy: bool, detail: str) -> None:
        """The pack's poll got no valid reply: ``noisy`` when bytes came, else silence."""
        pack = self.packs[address]
        pack.fails += 1
        if pack.fails < FAIL_POLLS:
            return
        if noisy:
            self._set(pack, "noise", detail)
        else:
            since = time.strftime("%H:%M", time.localtime(time.time()))
            silent_since = pack.detail if pack.state == "silent" else f"since {since}"
            self._set(pack, "silent", silent_since)

    def refused(self, address: int, state: str, detail: str) -> None:
        """The pack answered, but its state was refused ("incomplete" or "implausible")."""
        pack = self.packs[address]
        pack.fails = 0
        self._set(pack, state, detail)

    def message(self) -> dict[str, Any]:
        """The ``link`` message as of now (clears :attr:`changed`)."""
        self.changed = False
        packs = []
        for p in self.packs.values():
            detail = p.detail
            if p.state == "silent":
                detail = f"no reply from address {p.address} {p.detail} ({FAIL_POLLS}+ polls)"
            packs.append({
                "address": p.address, "state": p.state, "since": p.since,
                "ok": p.stats.ok, "bad": bad_replies(p.stats), "timeouts": p.stats.timeout,
                "detail": detail[:MAX_DETAIL],
            })  # fmt: skip
        return {"v": STATUS_VERSION, "kind": "link", "port": self.port,
                "device": self.device[:MAX_DETAIL], "state": self.state, "since": self.since,
                "detail": self.detail, "packs": packs}  # fmt: skip
