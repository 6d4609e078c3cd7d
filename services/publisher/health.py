"""The publisher's outputs' health, reported to the arbiter for the bank message.

The publisher alone knows whether its D-Bus name is owned, whether the CAN bus takes frames and
whether a GX's keep-alive (0x305/0x307, see :mod:`.can_sender`) is heard. Data flows one way,
arbiter -> publisher; the one path backwards is the control channel (docs/DESIGN: "a small,
validated control channel"), so the publisher sends a small ``health`` message there
(:mod:`bmsbank.status_schema`) which the arbiter validates, keeps with its arrival time and
shows as the bank's ``outputs`` (and "unknown" once it is older than the arbiter's limit). It is
sent when an output's ok changes and every :data:`HEALTH_HEARTBEAT` seconds, never per bank;
building it is a few attribute reads, done once per bank.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq

from bmsbank.schema import TOPIC_HEALTH, pack
from bmsbank.status_schema import MAX_DETAIL, STATUS_VERSION

log = logging.getLogger(__name__)

HEALTH_HEARTBEAT = 5.0  #: s between health messages while nothing changes


def outputs(ve: Any, service: str, can_bus: Any, can_name: str) -> dict[str, dict[str, Any]]:
    """{dbus, can, gx: {ok, detail}} of the publisher's outputs as of now.

    Args:
        ve: the D-Bus service (None: the D-Bus output is off).
        service: its bus name.
        can_bus: the :class:`~.can_sender.CanSender` (None: the CAN output is off).
        can_name: "interface channel" of the CAN output, for the texts.

    """
    dbus: dict[str, Any]
    can: dict[str, Any]
    gx: dict[str, Any]
    if ve is None:
        dbus = {"ok": None, "detail": "D-Bus output off"}
    elif ve.connected:
        dbus = {"ok": True, "detail": f"{service} owned"}
    else:
        dbus = {"ok": False, "detail": f"{service} not owned: not on the bus (yet)"}
    if can_bus is None:
        off: dict[str, Any] = {"ok": None, "detail": "CAN output off"}
        return {"dbus": dbus, "can": off, "gx": dict(off)}
    counts = f"{can_bus.sent} frames sent, {can_bus.errors} errors"
    if can_bus.up is None:
        can = {"ok": None, "detail": f"{can_name} not opened yet"}
    elif can_bus.up:
        can = {"ok": True, "detail": f"{can_name} up: {counts}"}
    else:
        can = {"ok": False, "detail": f"{can_name} down: {can_bus.last_error or '?'}; {counts}"}
    if can_bus.listening:
        gx = {"ok": True, "detail": "GX keep-alive (0x305/0x307) heard"}
    elif can_bus.last_keepalive is None:
        gx = {"ok": False, "detail": "no GX keep-alive (0x305) heard yet: GX on this bus/bitrate?"}
    else:
        gx = {"ok": False, "detail": "GX keep-alive (0x305) no longer heard"}
    for out in (dbus, can, gx):
        out["detail"] = out["detail"][:MAX_DETAIL]
    return {"dbus": dbus, "can": can, "gx": gx}


class HealthReporter:
    """A DEALER on the arbiter's control channel sending the health message when due."""

    def __init__(self, endpoint: str, context: zmq.Context) -> None:
        self.socket = zmq.Socket(context, zmq.DEALER)  # plain sends, also on an asyncio context
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 4)  # while the arbiter is away, a few at most wait
        self.socket.connect(endpoint)
        self.next_at = 0.0  #: monotonic time the next heartbeat is due [s]
        self.last: tuple = ()  #: the ok values last sent
        self.sent = 0

    def report(self, health: dict[str, dict[str, Any]], now: float) -> bool:
        """Send ``health`` when an ok changed or the heartbeat is due; True when sent."""
        oks = tuple(out["ok"] for out in health.values())
        if oks == self.last and now < self.next_at:
            return False
        msg = {"v": STATUS_VERSION, "kind": "health", "outputs": health}
        try:
            self.socket.send_multipart([TOPIC_HEALTH, pack(msg)], zmq.NOBLOCK)
        except zmq.Again:
            log.debug("control channel full or arbiter away; health report dropped")
            return False
        self.last, self.next_at = oks, now + HEALTH_HEARTBEAT
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(0)
