"""The poller's end of the control channel: announce itself, carry out requests, reply.

The poller connects a DEALER to the arbiter's control ROUTER (``control_endpoint``) and

- says hello (``[b"hello", {port, bms, packs}]``) at once and every ``hello_interval`` seconds,
  so a restarted arbiter relearns who owns which pack within one interval;
- reports its port's and packs' link states (``[b"link", ...]``, see
  :mod:`bmsbank.status_schema`) when one changes and every :data:`LINK_HEARTBEAT` seconds;
- takes control requests only between two exchanges of its poll cycle (:meth:`between`, called
  from the poller's ``between`` hook, asks at most every 0.2 s) or while it waits for the next
  cycle (:meth:`wait`);
- validates each request, refuses one that expired while queued, lets the poller carry it out
  (:meth:`bmsbank.services.poller.service.Poller.control`) and replies with a
  ``control_result`` carrying the request's id.

A malformed request is counted and logged (and answered when it has an id); nothing on this
socket can stop the poll loop.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from typing import Any

import zmq

from bmsbank.errors import MessageError
from bmsbank.schema import (
    MAX_CONTROL_BYTES,
    SCHEMA_VERSION,
    TOPIC_CONTROL,
    TOPIC_CONTROL_RESULT,
    TOPIC_HELLO,
    TOPIC_LINK,
    control_result,
    pack,
    unpack,
    validate_control,
)
from bmsbank.services.poller.linkstate import LinkReport

log = logging.getLogger(__name__)

HELLO_INTERVAL = 5.0  #: s between hellos
LINK_HEARTBEAT = 10.0  #: s between link messages while nothing changes
POLLIN = int(zmq.POLLIN)  # a plain int: zmq's enums cost a call each time they are combined
DRAIN = 20  #: requests carried out per call at most, so polling goes on under a flood
WAIT_SLICE = 1.0  #: s; the longest :meth:`PollerControl.wait` blocks before checking ``stop``
#: s; between two exchanges the socket is asked at most this often (each ask is a syscall; a
#: request waits at most this long more, or until the cycle ends, whichever comes first)
BETWEEN_EVERY = 0.2

#: carries out ``(pack id, action, value)``; returns None when acknowledged, else why not
Execute = Callable[[str, str, Any], "str | None"]


class PollerControl:
    """The DEALER socket, the hello schedule and the request handling of one poller."""

    def __init__(
        self,
        endpoint: str,
        port: str,
        bms: str,
        packs: list[str],
        context: zmq.Context,
        hello_interval: float = HELLO_INTERVAL,
    ) -> None:
        self.port = port
        self.hello = pack({"v": SCHEMA_VERSION, "kind": "hello", "port": port, "bms": bms,
                           "packs": list(packs)})  # fmt: skip
        self.hello_interval = hello_interval
        self.next_hello = 0.0
        self.next_link = 0.0  #: monotonic time the next link heartbeat is due [s]
        self.rejected = 0  #: malformed messages received
        self.expired = 0  #: requests that arrived after their expiry
        self.done = 0  #: requests carried out (ok or not)
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 10)  # while the arbiter is away, only a few hellos wait
        self.socket.setsockopt(zmq.MAXMSGSIZE, 65536)
        self.socket.connect(endpoint)
        #: the socket's notification descriptor, waited on with one select.poll set made once
        #: (zmq.Poller's poll costs a zmq_poll plus a list of sockets per call). It only says the
        #: socket's state may have changed, and stays readable until the socket is asked: so
        #: :meth:`wait` asks EVENTS after every wake, and :meth:`service` remembers when it
        #: left requests queued (``backlog``), which no later wake would announce.
        self.poll_set = select.poll()
        self.poll_set.register(self.socket.get(zmq.FD), select.POLLIN)
        self.next_between = 0.0  #: monotonic time before which :meth:`between` does not ask
        self.backlog = False  #: the last ask stopped at DRAIN requests: more may be queued

    def service(self, execute: Execute) -> int:
        """Say hello when due and carry out what is queued; return how many requests."""
        now = time.monotonic()
        if now >= self.next_hello:
            self._send([TOPIC_HELLO, self.hello])
            self.next_hello = now + self.hello_interval
        self.next_between = now + BETWEEN_EVERY
        handled = 0
        # Ask the socket instead of catching zmq.Again: nothing queued is the usual case here.
        while handled < DRAIN and self.socket.get(zmq.EVENTS) & POLLIN:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            self.handle(parts, execute)
        # Asking consumed the descriptor's signal: what is left would wake nobody.
        self.backlog = handled >= DRAIN
        return handled

    def report_link(self, report: LinkReport) -> bool:
        """Send the port's link states when they changed or a heartbeat is due; True if sent.

        Called once per poll cycle (a flag and a clock read when there is nothing to send).
        """
        now = time.monotonic()
        if not report.changed and now < self.next_link:
            return False
        self._send([TOPIC_LINK, pack(report.message())])
        self.next_link = now + LINK_HEARTBEAT
        return True

    def between(self, execute: Execute) -> int:
        """:meth:`service`, at most every ``BETWEEN_EVERY`` seconds (between two exchanges)."""
        if time.monotonic() < self.next_between:
            return 0
        return self.service(execute)

    def wait(self, seconds: float, execute: Execute, stop: Callable[[], bool]) -> None:
        """Wait ``seconds`` (the gap to the next poll cycle), serving requests as they come.

        The socket is asked only when its descriptor says something changed, a hello is due, or
        the last ask left requests queued (its descriptor stays readable until someone asks, so
        a request that came during the cycle wakes the first poll at once).
        """
        deadline = time.monotonic() + seconds
        ready = self.backlog
        while not stop():
            now = time.monotonic()
            if ready or now >= self.next_hello:
                self.service(execute)
                if self.backlog:
                    continue
            if now >= deadline:
                return
            slice_s = min(deadline, self.next_hello, now + WAIT_SLICE) - now
            ready = bool(self.poll_set.poll(max(1, int(slice_s * 1000))))

    def handle(self, parts: list[bytes], execute: Execute) -> None:
        """Carry out one message ``[b"control", body]`` from the arbiter and reply."""
        if len(parts) != 2 or parts[0] != TOPIC_CONTROL or len(parts[1]) > MAX_CONTROL_BYTES:
            self.rejected += 1
            log.warning("[%s] rejected control-channel message of %d frame(s)", self.port,
                        len(parts))  # fmt: skip
            return
        raw: Any = {}
        try:
            raw = unpack(parts[1])
            request = validate_control(raw)
        except MessageError as exc:
            self.rejected += 1
            log.warning("[%s] rejected control request: %s", self.port, exc)
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                self._reply(raw, f"malformed request: {exc}")
            return
        expires = request.get("expires")
        if expires is not None and time.time() > expires:
            self.expired += 1
            self._reply(request, "request expired before the poller could carry it out")
            return
        pid, action, value = request["pack"], request["action"], request["value"]
        log.info("[%s] control %s %s=%r", self.port, pid, action, value)
        try:
            error = execute(pid, action, value)
        except Exception as exc:  # a defect in one plugin's write must not stop the polling
            log.exception("[%s] control %s %s: unexpected error", self.port, pid, action)
            error = f"internal error in the poller: {type(exc).__name__}: {exc}"
        self.done += 1
        if error:
            log.warning("[%s] control %s %s failed: %s", self.port, pid, action, error)
        self._reply(request, error)

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(0)

    def _reply(self, request: dict, error: str | None) -> None:
        self._send([TOPIC_CONTROL_RESULT, pack(control_result(request, error is None, error))])

    def _send(self, parts: list[bytes]) -> None:
        try:
            self.socket.send_multipart(parts, zmq.NOBLOCK)
        except zmq.Again:
            log.debug("[%s] control channel full or arbiter away; message dropped", self.port)
