"""Binding the services' ZeroMQ sockets so that only their own user can reach them.

An ipc:// socket is a file: a peer must be able to write it to connect. The arbiter's sockets
(states, tap, control) are bound with a umask of 077, whatever umask the service inherited, so
group and others have no access to the socket files (and their directory, when created here, is
0700): only the service user (and root) can push states, read the tap or switch a FET over the
control channel. Plain TCP is for loopback only (tests).
"""

from __future__ import annotations

import os
import threading

import zmq

_umask_lock = threading.Lock()  # the umask is per process: one bind at a time changes it


def bind_private(sock: zmq.Socket, endpoint: str) -> None:
    """Bind ``sock`` at ``endpoint``; an ipc:// socket file is for this user only.

    Raises:
        zmq.ZMQError: the endpoint cannot be bound (in use, no such directory, ...).

    """
    if not endpoint.startswith("ipc://"):
        sock.bind(endpoint)
        return
    directory = os.path.dirname(endpoint[len("ipc://") :]) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    with _umask_lock:
        old = os.umask(0o077)
        try:
            sock.bind(endpoint)
        finally:
            os.umask(old)
