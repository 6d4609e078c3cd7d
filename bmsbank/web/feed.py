"""The web view's feed: bank and state messages from the tap, validated, to the browsers.

Bank messages go to the history and, as they come (about 1 Hz), to every connected browser.
Per-cell data comes from the ``state`` topic, subscribed only while a browser is connected (the
tap carries every state) and sent at most once a second: the latest state of each pack.
A message that is not msgpack or does not validate is counted per topic, logged and skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import zmq
import zmq.asyncio

from bmsbank.errors import MessageError
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, unpack, validate_bank, validate_state
from bmsbank.web.history import History

log = logging.getLogger(__name__)

#: fields of a state message the pack cards show (the rest stays off the wire)
STATE_FIELDS = (
    "pack", "bms", "time", "voltage", "current", "soc", "soh", "cycles", "cells", "balancing",
    "temperatures", "mosfet_temperature", "charge_fet", "discharge_fet", "cell_delta",
    "min_cell_voltage", "max_cell_voltage", "link",
)  # fmt: skip
CLIENT_QUEUE = 16  #: events waiting for one browser; a browser that falls behind is dropped
STATE_PERIOD = 1.0  #: [s] between state updates to the browsers


def json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""
    return (
        f"event: {event}\ndata: {json.dumps(json_safe(data), separators=(',', ':'))}\n\n".encode()
    )


class Feed:
    """Reads the tap, keeps the latest bank and states, fans them out to browser queues."""

    def __init__(self, endpoint: str, history: History) -> None:
        self.endpoint = endpoint
        self.history = history
        self.bank: dict[str, Any] | None = None
        self.states: dict[str, dict[str, Any]] = {}
        self.changed: set[str] = set()
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.bad = {"bank": 0, "state": 0, "other": 0}
        self.ctx = zmq.asyncio.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 1000)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
        self.sock.connect(endpoint)
        self.with_states = False

    def _states_wanted(self, wanted: bool) -> None:
        """Subscribe to states only while someone looks (no work per state otherwise)."""
        if wanted != self.with_states:
            opt = zmq.SUBSCRIBE if wanted else zmq.UNSUBSCRIBE
            self.sock.setsockopt(opt, TOPIC_STATE)
            self.with_states = wanted
            if not wanted:
                self.states.clear()

    def add_client(self) -> asyncio.Queue[bytes | None]:
        """A queue of SSE bytes for a new browser, primed with the current bank and states."""
        q: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        if self.bank is not None:
            q.put_nowait(sse("bank", self.snapshot()))
        if self.states:
            q.put_nowait(sse("states", self.states))
        self.clients.add(q)
        self._states_wanted(True)
        return q

    def remove_client(self, q: asyncio.Queue[bytes | None]) -> None:
        """Forget a browser that left."""
        self.clients.discard(q)
        self._states_wanted(bool(self.clients))

    def snapshot(self) -> dict[str, Any]:
        """The latest bank with the feed's own counters."""
        return {**(self.bank or {}), "web": {"bad": self.bad, "received": time.time()}}

    def _broadcast(self, data: bytes) -> None:
        for q in list(self.clients):
            try:
                q.put_nowait(data)
            except asyncio.QueueFull:
                log.warning("a browser fell behind; closing its event stream")
                self._end(q)
        self._states_wanted(bool(self.clients))

    def _end(self, q: asyncio.Queue[bytes | None]) -> None:
        self.clients.discard(q)
        if q.full():
            q.get_nowait()
        q.put_nowait(None)  # tells its writer to stop

    def end_streams(self) -> None:
        """Tell every browser's writer to end its stream (the service stops)."""
        for q in list(self.clients):
            self._end(q)

    def take(self, topic: bytes, body: bytes) -> None:
        """Handle one tap message (bad ones are counted and skipped)."""
        kind = "bank" if topic == TOPIC_BANK else "state" if topic == TOPIC_STATE else "other"
        try:
            if kind == "other":
                raise MessageError(f"unexpected topic {topic[:32]!r}")
            msg = unpack(body)
            (validate_bank if kind == "bank" else validate_state)(msg)
        except MessageError as exc:
            self.bad[kind] += 1
            if self.bad[kind] in (1, 10, 100) or self.bad[kind] % 1000 == 0:
                log.warning("bad %s message skipped (%d so far): %s", kind, self.bad[kind], exc)
            return
        if kind == "bank":
            self.bank = msg
            self.history.add(msg)
            if self.clients:
                self._broadcast(sse("bank", self.snapshot()))
        else:
            self.states[msg["pack"]] = {k: msg.get(k) for k in STATE_FIELDS}
            self.changed.add(msg["pack"])

    async def run(self) -> None:
        """Receive until cancelled; send changed states at most every STATE_PERIOD."""
        next_states = time.monotonic() + STATE_PERIOD
        while True:
            wait = max(0.0, next_states - time.monotonic())
            if await self.sock.poll(int(wait * 1000) + 1):
                topic, *rest = await self.sock.recv_multipart()
                self.take(topic, rest[0] if rest else b"")
            if time.monotonic() >= next_states:
                next_states = time.monotonic() + STATE_PERIOD
                if self.changed and self.clients:
                    self._broadcast(sse("states", {p: self.states[p] for p in self.changed}))
                self.changed.clear()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
