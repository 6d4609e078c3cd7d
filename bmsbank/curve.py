"""Remote pollers over TCP, with CURVE keys and an allow-list (issue 11, point 5).

A poller on another machine (a Pi next to a second battery rack) pushes its states to this
arbiter over TCP. TCP is never plain: the arbiter binds ``[zmq] remote_states`` as a CURVE
server with its secret key (``curve_secret_key``) and a ZAP handler that admits only the public
keys found in ``curve_clients`` (a directory of ``*.key`` files); a peer with another key fails
the handshake and is counted, its messages never reach the arbiter. The remote poller's own
config names the arbiter's public key (``curve_server_key``) and its secret key.

Keys are ZeroMQ certificate files (``NAME.key`` public, ``NAME.key_secret`` secret, readable by
their owner only), made by ``bmsbank keys DIR NAME``.
"""

from __future__ import annotations

import os

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from bmsbank.config import ZmqConfig

#: handshake failures a remote listener counts as refused peers
REFUSED_EVENTS = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


def make_keys(directory: str, name: str) -> tuple[str, str]:
    """Write a key pair ``NAME.key`` / ``NAME.key_secret`` into ``directory``; return their paths.

    The secret file is made readable by its owner only.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return public, secret


class RemoteListener:
    """The arbiter's CURVE-only PULL socket for remote pollers, with its allow-list.

    Args:
        zc: the ``[zmq]`` config (``remote_states``, ``curve_secret_key``, ``curve_clients``).
        context: the arbiter's ZeroMQ context.
        hwm: messages queued per remote poller.
        max_bytes: largest message accepted (a peer sending more is disconnected).

    """

    def __init__(self, zc: ZmqConfig, context: zmq.Context, hwm: int, max_bytes: int) -> None:
        self.refused = 0  #: peers that failed the CURVE handshake (wrong or unknown key)
        self.auth = ThreadAuthenticator(context)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=zc.curve_clients)
        public, secret = zmq.auth.load_certificate(zc.curve_secret_key)
        if secret is None:
            raise ValueError(f"{zc.curve_secret_key} holds no secret key")
        self.socket = context.socket(zmq.PULL)
        self.socket.curve_server = True
        self.socket.curve_publickey = public
        self.socket.curve_secretkey = secret
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.monitor = self.socket.get_monitor_socket(REFUSED_EVENTS)
        self.socket.bind(zc.remote_states)

    def count_refused(self) -> int:
        """Take the handshake failures reported since the last call; return the total."""
        while self.monitor.poll(0):
            event = parse_monitor_message(self.monitor.recv_multipart())
            if event["event"] & REFUSED_EVENTS:
                self.refused += 1
        return self.refused

    def close(self) -> None:
        """Stop the authenticator and close the sockets."""
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)
        self.auth.stop()


def client_keys(zc: ZmqConfig, sock: zmq.Socket) -> None:
    """Make ``sock`` a CURVE client of the arbiter when ``curve_server_key`` is set."""
    if not zc.curve_server_key:
        return
    server_public, _ = zmq.auth.load_certificate(zc.curve_server_key)
    public, secret = zmq.auth.load_certificate(zc.curve_secret_key)
    if secret is None:
        raise ValueError(f"{zc.curve_secret_key} holds no secret key")
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
