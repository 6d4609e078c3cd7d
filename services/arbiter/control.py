"""Control routing: the one path backwards, from a requester to the poller that owns a pack.

The arbiter binds a ROUTER at ``control_endpoint``. Requesters (the publisher, the CLI) connect a
DEALER and send ``[b"control", msgpack(request)]``; each poller connects a DEALER and sends
``[b"hello", ...]`` every few seconds (port, BMS, the pack ids it owns) and
``[b"control_result", ...]`` for each request it carried out; pollers also send ``[b"link",
...]`` and the publisher ``[b"health", ...]`` (on a change and as a slow heartbeat), which go to
the :class:`~bmsbank.services.arbiter.why.WhyBook`. The router

- validates every request (a malformed one is counted and answered ok=false when it can be),
- checks that the pack is configured and that a live poller has announced it,
- forwards it to that poller under a key of its own (two requesters may pick the same id) with an
  ``expires`` time after which the poller must not carry it out,
- routes the poller's result back to the requester's identity with the requester's id, and
- answers ok=false "no reply from poller P within N s" when the poller stays silent.

Every answer to a requester is a valid ``control_result``; nothing a peer sends can stop the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import zmq

from bmsbank.errors import MessageError
from bmsbank.schema import (
    MAX_CONTROL_BYTES,
    TOPIC_CONTROL,
    TOPIC_CONTROL_RESULT,
    TOPIC_HEALTH,
    TOPIC_HELLO,
    TOPIC_LINK,
    control_result,
    pack,
    unpack,
    validate_control,
    validate_control_result,
    validate_hello,
)
from bmsbank.services.arbiter.why import WhyBook
from bmsbank.sockets import bind_private

log = logging.getLogger(__name__)

CONTROL_TIMEOUT = 5.0  #: s a poller has to answer, unless the requester allows less
TIMEOUT_MARGIN = 0.5  #: s the arbiter answers before the requester gives up
LIVE_AFTER = 15.0  #: s after its last hello a poller counts as gone (it says hello every 5 s)
MAX_PENDING = 256  #: requests waiting for pollers at once
MAX_MESSAGE = 65536  #: B; a peer sending more is disconnected by ZeroMQ (memory guard)
DRAIN = 200  #: messages handled per call, so the bank tick is never starved


@dataclass
class ControlCounters:
    """What the router has done; published in every bank message under ``counters.control``."""

    requests: int = 0  #: control requests received
    forwarded: int = 0  #: requests handed to a poller
    ok: int = 0  #: results with ok=true routed back
    failed: int = 0  #: results with ok=false routed back (from pollers)
    rejected: int = 0  #: malformed messages (requests, results, hellos, unknown topics)
    refused: int = 0  #: valid requests answered at once: unknown pack, no live poller, busy
    timeouts: int = 0  #: requests the owning poller did not answer in time
    late: int = 0  #: results that arrived after their timeout (or for no request)
    undeliverable: int = 0  #: answers whose requester had gone
    hellos: int = 0  #: valid hellos

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (shallow: dataclasses.asdict deep-copies plain ints)."""
        return dict(vars(self))


@dataclass
class PollerEntry:
    """A poller that has announced itself."""

    port: str
    identity: bytes
    bms: str
    packs: frozenset[str]
    seen: float  #: arbiter monotonic time of the last hello [s]


@dataclass
class Pending:
    """A forwarded request waiting for its poller."""

    requester: bytes
    request: dict[str, Any]
    port: str
    poller: bytes
    deadline: float  #: arbiter monotonic time [s]
    timeout: float  #: s given to the poller


class ControlRouter:
    """The arbiter's control ROUTER and its routing table."""

    def __init__(
        self,
        endpoint: str,
        packs: Iterable[str],
        context: zmq.Context,
        timeout: float = CONTROL_TIMEOUT,
        live_after: float = LIVE_AFTER,
        why: WhyBook | None = None,
    ) -> None:
        self.packs = frozenset(packs)  #: configured pack ids
        #: takes the pollers' link and the publisher's health messages (None: refused as
        #: unknown topics)
        self.why = why
        self.timeout = timeout
        self.live_after = live_after
        self.counters = ControlCounters()
        self.pollers: dict[str, PollerEntry] = {}
        self.pending: dict[str, Pending] = {}
        self._seq = 0
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a gone peer raises, never vanishes
        self.socket.setsockopt(zmq.SNDHWM, 1000)
        self.socket.setsockopt(zmq.RCVHWM, 1000)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        bind_private(self.socket, endpoint)  # only the service user can switch a FET

    # -- the loop's entry points -------------------------------------------------------------
    def receive(self, now: float) -> int:
        """Handle what is queued (at most ``DRAIN`` messages); return how many were handled."""
        handled = 0
        while handled < DRAIN:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            try:
                self.handle(parts, now)
            except Exception:  # whatever a peer sends, the arbiter keeps serving the bank
                self.counters.rejected += 1
                log.exception("control-channel message could not be handled")
        return handled

    def handle(self, parts: list[bytes], now: float) -> None:
        """Dispatch one message ``[identity, topic, body]`` by topic."""
        identity, frames = parts[0], parts[1:]
        # a link message lists every pack of a bus: it may take up to what the socket admits
        most = MAX_MESSAGE if frames[:1] == [TOPIC_LINK] else MAX_CONTROL_BYTES
        if len(frames) != 2 or len(frames[1]) > most:
            self._reject(identity, frames, f"{len(frames)} frame(s) of {sum(map(len, frames))} B")
            return
        topic, body = frames
        if topic == TOPIC_CONTROL:
            self._request(identity, body, now)
        elif topic == TOPIC_HELLO:
            self._hello(identity, body, now)
        elif topic == TOPIC_CONTROL_RESULT:
            self._result(identity, body)
        elif topic == TOPIC_LINK and self.why is not None:
            if not self.why.take_link(body, now):
                self.counters.rejected += 1
        elif topic == TOPIC_HEALTH and self.why is not None:
            if not self.why.take_health(body, now):
                self.counters.rejected += 1
        else:
            self._reject(identity, frames, f"unknown topic {topic[:20]!r}")

    def expire(self, now: float) -> None:
        """Answer every request whose poller did not reply in time."""
        for key in [k for k, p in self.pending.items() if p.deadline <= now]:
            waiting = self.pending.pop(key)
            self.counters.timeouts += 1
            error = f"no reply from poller {waiting.port} within {waiting.timeout:g} s"
            log.warning("control %s: %s", _describe(waiting.request), error)
            self._answer(waiting.requester, waiting.request, False, error)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a pending request (monotonic [s]), or None."""
        return min((p.deadline for p in self.pending.values()), default=None)

    def close(self) -> None:
        """Close the socket (pending requesters get no answer; their own timeout applies)."""
        self.socket.close(0)

    # -- requests ----------------------------------------------------------------------------
    def _request(self, requester: bytes, body: bytes, now: float) -> None:
        self.counters.requests += 1
        raw: Any = {}
        try:
            raw = unpack(body)
            request = validate_control(raw)
        except MessageError as exc:
            self.counters.rejected += 1
            log.warning("rejected control request: %s", exc)
            echo = raw if isinstance(raw, dict) else {}
            self._answer(requester, echo, False, f"malformed request: {exc}")
            return
        refusal = self._refusal(request, now)
        if refusal is not None:
            self.counters.refused += 1
            log.warning("control %s refused: %s", _describe(request), refusal)
            self._answer(requester, request, False, refusal)
            return
        self._forward(requester, request, now)

    def _refusal(self, request: dict[str, Any], now: float) -> str | None:
        """Why ``request`` cannot be forwarded now, or None."""
        pid = request["pack"]
        port = pid.rsplit(":", 1)[0]
        if pid not in self.packs:
            known = sorted(self.packs)
            shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
            return f"pack {pid} is not configured (configured: {shown or 'none'})"
        poller = self.pollers.get(port)
        if poller is None:
            return f"no poller for port {port} has announced itself"
        if now - poller.seen > self.live_after:
            return f"poller {port} has been silent for {now - poller.seen:.0f} s"
        if pid not in poller.packs:
            return f"poller {port} does not poll pack {pid}"
        if len(self.pending) >= MAX_PENDING:
            return f"arbiter busy: {len(self.pending)} control requests pending"
        return None

    def _forward(self, requester: bytes, request: dict[str, Any], now: float) -> None:
        port = request["pack"].rsplit(":", 1)[0]
        poller = self.pollers[port]
        wait = self.timeout
        if request.get("timeout") is not None:
            wait = max(0.1, min(wait, request["timeout"] - TIMEOUT_MARGIN))
        self._seq += 1
        key = f"a{self._seq}"
        body = {k: v for k, v in request.items() if k != "timeout"}
        body.update(id=key, expires=time.time() + wait)
        try:
            self.socket.send_multipart([poller.identity, TOPIC_CONTROL, pack(body)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            del self.pollers[port]  # its connection is gone; its next hello brings it back
            self.counters.refused += 1
            log.warning("control %s: poller %s unreachable (%s)", _describe(request), port, exc)
            self._answer(requester, request, False, f"poller {port} is not connected")
            return
        self.counters.forwarded += 1
        self.pending[key] = Pending(requester, request, port, poller.identity, now + wait, wait)
        log.info("control %s forwarded to poller %s", _describe(request), port)

    # -- from pollers ------------------------------------------------------------------------
    def _result(self, identity: bytes, body: bytes) -> None:
        try:
            result = validate_control_result(unpack(body))
        except MessageError as exc:
            self.counters.rejected += 1
            log.warning("rejected control result: %s", exc)
            return
        waiting = self.pending.get(result["id"])
        if waiting is None or waiting.poller != identity:
            self.counters.late += 1
            log.warning("control result %s arrived late or for no request", result["id"][:16])
            return
        del self.pending[result["id"]]
        ok, error = result["ok"], result["error"]
        if ok:
            self.counters.ok += 1
            log.info("control %s: ok", _describe(waiting.request))
        else:
            self.counters.failed += 1
            log.warning("control %s failed: %s", _describe(waiting.request), error)
        self._answer(waiting.requester, waiting.request, ok, error)

    def _hello(self, identity: bytes, body: bytes, now: float) -> None:
        try:
            hello = validate_hello(unpack(body))
        except MessageError as exc:
            self.counters.rejected += 1
            log.warning("rejected hello: %s", exc)
            return
        self.counters.hellos += 1
        port = hello["port"]
        known = self.pollers.get(port)
        if known is None or known.identity != identity:
            log.info("poller %s (%s) connected, packs %s", port, hello["bms"], hello["packs"])
            strangers = [p for p in hello["packs"] if p not in self.packs]
            if strangers:
                log.warning("poller %s polls packs that are not in the bank: %s", port, strangers)
        packs = frozenset(hello["packs"])
        self.pollers[port] = PollerEntry(port, identity, hello["bms"], packs, now)

    # -- answers -----------------------------------------------------------------------------
    def _answer(self, requester: bytes, request: dict, ok: bool, error: str | None) -> None:
        body = pack(control_result(request, ok, error))
        try:
            self.socket.send_multipart([requester, TOPIC_CONTROL_RESULT, body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.counters.undeliverable += 1
            log.info("control answer undeliverable (%s)", exc)

    def _reject(self, identity: bytes, frames: list[bytes], why: str) -> None:
        self.counters.rejected += 1
        log.warning("rejected control-channel message: %s", why)
        if frames and frames[0] == TOPIC_CONTROL:
            self._answer(identity, {}, False, f"malformed request: {why}")


def _describe(request: dict[str, Any]) -> str:
    return f"{request.get('pack')} {request.get('action')}={request.get('value')!r}"
