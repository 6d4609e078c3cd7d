"""The requester's side of the control channel: ask for a change on one pack, get the result.

The publisher (D-Bus writes) and the CLI use it; the arbiter routes each request to the poller
that owns the pack, which writes to the BMS and reports whether the BMS acknowledged. Whether
the change took effect shows in the pack's next state message (``charge_fet``, ``discharge_fet``,
``balancing``, ``soc``)::

    async with ControlClient(config.control_endpoint) as client:
        result = await client.request("rs485:3", "charge", False)
        if not result["ok"]:
            log.warning("charge off on rs485:3 refused: %s", result["error"])

Actions (``bmsbank.schema.CONTROL_ACTIONS``): ``charge``, ``discharge``, ``balance`` take a bool
(true = allowed/enabled); ``reset_soc`` takes ``True`` (the BMS re-synchronises its SoC its own
way). Which actions a pack supports depends on its BMS family: :func:`supported_actions` with the
``bms`` field of the pack's state message.

Neither the client nor the helper raises for a failure on the far side: an unreachable arbiter, a
timeout, an unknown pack, an unsupported action or a BMS that does not acknowledge all come back
as a ``control_result`` with ``ok`` false and ``error`` saying why. Only a request that cannot be
valid (unknown action, wrong value type) raises ValueError.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from typing import Any

import zmq
import zmq.asyncio

from bmsbank.errors import MessageError
from bmsbank.schema import (
    CONTROL_ACTIONS,
    TOPIC_CONTROL,
    TOPIC_CONTROL_RESULT,
    control_request,
    control_result,
    pack,
    unpack,
    validate_control_result,
)

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = tuple(CONTROL_ACTIONS)
#: s a request waits by default: the arbiter gives the poller 5 s and answers before this
DEFAULT_TIMEOUT = 6.0
#: s to wait for the connection to the arbiter before calling it unreachable (at most)
CONNECT_WAIT = 1.0
_ids = itertools.count(1)


def supported_actions(bms: str) -> frozenset[str]:
    """Control actions the BMS family ``bms`` (a state's ``bms`` field) supports; empty if none.

    For example ``supported_actions("jbd")`` is charge, discharge, balance and reset_soc, and
    ``supported_actions("jkpb")`` is charge, discharge and balance.
    """
    from bmsbank.services.poller import plugins

    return plugins.controls(bms)


def _new_request(pack_id: str, action: str, value: Any, timeout: float) -> dict[str, Any]:
    request_id = f"{os.getpid():x}-{next(_ids)}-{time.monotonic_ns() & 0xFFFFFF:x}"
    try:
        return control_request(request_id, pack_id, action, value, timeout)
    except MessageError as exc:
        raise ValueError(str(exc)) from exc


def _failure(request: dict[str, Any], error: str) -> dict[str, Any]:
    return control_result(request, False, error)


def _connect(sock: zmq.Socket, endpoint: str) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue a request for an arbiter that is not there
    sock.connect(endpoint)


class ControlClient:
    """An asyncio requester: several requests may be outstanding at once on one connection."""

    def __init__(self, endpoint: str, context: zmq.asyncio.Context | None = None) -> None:
        self.endpoint = endpoint
        self.context = context or zmq.asyncio.Context.instance()
        self.socket: zmq.asyncio.Socket = self.context.socket(zmq.DEALER)
        _connect(self.socket, endpoint)
        self.rejected = 0  #: replies that did not validate (ignored)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self, pack_id: str, action: str, value: Any, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Ask for ``action`` = ``value`` on pack ``pack_id``; wait at most ``timeout`` seconds.

        Args:
            pack_id: "port:address", as in state messages.
            action: one of :data:`ACTIONS`.
            value: bool for charge/discharge/balance (true = allowed/enabled), True for
                reset_soc.
            timeout: seconds (0-60) until the answer is "no reply".

        Returns:
            The validated ``control_result``: ``ok`` and ``error`` (None when ok).

        Raises:
            ValueError: the request itself is invalid (unknown action, wrong value type).

        """
        request = _new_request(pack_id, action, value, timeout)
        deadline = time.monotonic() + timeout
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        wait_ms = int(min(CONNECT_WAIT, timeout) * 1000)
        if not await self.socket.poll(wait_ms, zmq.POLLOUT):  # type: ignore[call-arg]  # stub lacks flags
            return _failure(request, f"arbiter not reachable at {self.endpoint}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request["id"]] = future
        try:
            await self.socket.send_multipart([TOPIC_CONTROL, pack(request)], zmq.NOBLOCK)
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return _failure(request, f"no reply from the arbiter within {timeout:g} s")
        except zmq.ZMQError as exc:
            return _failure(request, f"arbiter not reachable at {self.endpoint} ({exc})")
        finally:
            self._pending.pop(request["id"], None)

    async def _read(self) -> None:
        while True:
            try:
                parts = await self.socket.recv_multipart()
            except (asyncio.CancelledError, zmq.ZMQError):
                return
            try:
                if len(parts) != 2 or parts[0] != TOPIC_CONTROL_RESULT:
                    raise MessageError(f"{len(parts)} frame(s), topic {parts[0][:20]!r}")
                result = validate_control_result(unpack(parts[1]))
            except MessageError as exc:
                self.rejected += 1
                log.warning("rejected control reply: %s", exc)
                continue
            future = self._pending.get(result["id"])
            if future is not None and not future.done():
                future.set_result(result)

    async def aclose(self) -> None:
        """Stop the reader and close the socket (outstanding requests end as timeouts)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.close()

    def close(self) -> None:
        """Close the socket without waiting (use :meth:`aclose` inside a running loop)."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self.socket.close(0)


def request(
    endpoint: str, pack_id: str, action: str, value: Any, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """Synchronous :meth:`ControlClient.request` on a socket of its own (the CLI's helper).

    Raises:
        ValueError: the request itself is invalid.

    """
    req = _new_request(pack_id, action, value, timeout)
    deadline = time.monotonic() + timeout
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    _connect(sock, endpoint)
    try:
        if not sock.poll(int(min(CONNECT_WAIT, timeout) * 1000), zmq.POLLOUT):
            return _failure(req, f"arbiter not reachable at {endpoint}")
        sock.send_multipart([TOPIC_CONTROL, pack(req)], zmq.NOBLOCK)
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(left * 1000))):
                break
            parts = sock.recv_multipart()
            try:
                if len(parts) != 2 or parts[0] != TOPIC_CONTROL_RESULT:
                    raise MessageError(f"{len(parts)} frame(s)")
                result = validate_control_result(unpack(parts[1]))
            except MessageError as exc:
                log.warning("rejected control reply: %s", exc)
                continue
            if result["id"] in (req["id"], ""):
                return result
        return _failure(req, f"no reply from the arbiter within {timeout:g} s")
    except zmq.ZMQError as exc:
        return _failure(req, f"arbiter not reachable at {endpoint} ({exc})")
    finally:
        sock.close(0)
