"""Helpers for tests that use real ZeroMQ sockets on loopback."""

from __future__ import annotations

import socket


def free_tcp() -> str:
    """A tcp:// endpoint on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"
