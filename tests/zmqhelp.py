"""Helpers for tests that use real ZeroMQ sockets on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import zmq

from bmsbank.config import parse
from bmsbank.services.arbiter.service import Arbiter


def free_tcp() -> str:
    """A tcp:// endpoint on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def running_arbiter(
    zmq_extra: dict[str, str] | None = None, **bank: object
) -> Iterator[tuple[Arbiter, zmq.Context, str, str]]:
    """An arbiter in a thread on loopback tcp: yields (arbiter, context, states, tap).

    Its control endpoint (also loopback tcp) is ``arbiter.config.control_endpoint``;
    ``zmq_extra``: more ``[zmq]`` keys (remote pollers).
    """
    states, tap, control = free_tcp(), free_tcp(), free_tcp()
    bank = {"interval": 0.2, "state_file": "", **bank}
    zc = {"states": states, "tap": tap, "control": control, **(zmq_extra or {})}
    cfg = parse({"bank": bank, "zmq": zc}, "test")
    ctx = zmq.Context()
    arbiter = Arbiter(cfg, ctx)
    stop = threading.Event()
    thread = threading.Thread(target=arbiter.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        yield arbiter, ctx, states, tap
    finally:
        stop.set()
        thread.join(2)
        arbiter.close()
        ctx.term()
