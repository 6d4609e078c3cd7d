"""Helpers for tests that use real ZeroMQ sockets on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import zmq

from bmsbank.config import parse
from bmsbank.services.arbiter.service import Arbiter

_HANDED_OUT: set[int] = set()  #: ports given to this process's tests (the kernel may reuse one)


def free_tcp() -> str:
    """A tcp:// endpoint on a free loopback port, never one handed out before in this process.

    The kernel may hand the same free port to two binds in a row (the first socket is closed
    before the second asks): two endpoints of one config must differ, or it is refused.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return f"tcp://127.0.0.1:{port}"


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
