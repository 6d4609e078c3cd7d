"""A Venus OS "BusItem" service on dbus-fast (asyncio, one message handler for every path).

Venus reads a device through the ``com.victronenergy.BusItem`` interface on one object path per
value (``/Dc/0/Voltage``, ``/Soc``, ...). Exporting one dbus-fast ``ServiceInterface`` per path
costs an object and an introspection tree per value; this module instead registers a single
low-level message handler that answers every path from one dict.

Conventions followed (velib_python's ``vedbus.py``, the reference implementation):
    * ``GetValue`` on a leaf returns the value as a variant; on ``/`` or an intermediate node it
      returns a variant ``a{sv}`` of the subtree, keyed by path relative to the node
      (``/`` -> ``{"Dc/0/Voltage": 53.2, ...}``).
    * ``GetText`` on a leaf returns a string (``---`` when invalid); on a node, like velib, a
      variant ``a{sv}`` of texts.
    * ``GetItems`` on ``/`` returns ``a{sa{sv}}``: ``{path: {"Value": v, "Text": s}}``.
    * ``SetValue(v)`` returns int32 0 on success, 1 for a read-only path, 2 for a rejected value
      (wrong type or too long); a rejected write changes nothing and emits nothing.
    * An invalid value is an empty int32 array (``ai``, ``[]``). Ints are int32 (``i``), floats
      double (``d``), strings ``s``, bools become ints.
    * Unknown paths get ``org.freedesktop.DBus.Error.UnknownObject``; unknown methods on a known
      path get ``org.freedesktop.DBus.Error.UnknownMethod``. ``Introspect`` is answered for every
      known path so dbus-send, busctl and d-feet can browse the service.

Signals (design choice): :meth:`VeService.update` applies a whole bank update and emits ONE
``ItemsChanged`` signal on ``/`` (``a{sa{sv}}``) holding only the paths whose value changed, and
nothing when nothing changed -- what velib's batched ``VeDbusService`` does. ``PropertiesChanged``
(``a{sv}`` on the item's own path) is emitted only for a single change outside a batch: a local
:meth:`VeService.set_value` or a client's ``SetValue``. That keeps the publisher at no more than
one D-Bus signal per service per bank update. Signals carry NO_REPLY_EXPECTED, as velib's do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbus_fast import (
    BusType,
    Message,
    MessageFlag,
    MessageType,
    NameFlag,
    RequestNameReply,
    Variant,
)
from dbus_fast import introspection as intr
from dbus_fast.aio import MessageBus
from dbus_fast.constants import ArgDirection

log = logging.getLogger(__name__)

IFACE = "com.victronenergy.BusItem"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
INVALID_TEXT = "---"
SET_OK, SET_READ_ONLY, SET_REJECTED = 0, 1, 2
_INT32 = (-(2**31), 2**31 - 1)


def normalise(value: Any) -> Any:
    """Return the value as stored: bool -> int, NaN/inf -> None (invalid).

    Raises:
        TypeError: for a type the BusItem convention has no encoding for here.

    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"cannot publish {type(value).__name__} on D-Bus")


def variant(value: Any) -> Variant:
    """Wrap a stored value in a D-Bus variant; invalid (None) is ``ai []`` (Venus)."""
    if value is None:
        return Variant("ai", [])
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("i" if _INT32[0] <= value <= _INT32[1] else "x", value)


def _same(a: Any, b: Any) -> bool:
    # 1 == 1.0 == True in Python, but their D-Bus types differ: a type change is a change.
    return type(a) is type(b) and a == b


@dataclass
class _Item:
    value: Any
    writable: bool = False
    validator: Callable[[Any], bool] | None = None
    fmt: str | None = None
    on_set: Callable[[str, Any], None] | None = None

    def text(self) -> str:
        if self.value is None:
            return INVALID_TEXT
        if self.fmt is not None and not isinstance(self.value, str):
            return self.fmt.format(self.value)
        return str(self.value)

    def entry(self) -> dict[str, Variant]:
        return {"Value": variant(self.value), "Text": Variant("s", self.text())}


class VeService:
    """One Venus D-Bus service: a name on the bus and a tree of BusItem paths.

    Add paths with :meth:`add_path` before :meth:`connect`, so the name appears on the bus with
    every path already answering (Venus reads all paths once the name shows up).
    """

    def __init__(self, bus_address: str | None, service_name: str) -> None:
        self.bus_address = bus_address
        self.service_name = service_name
        self.signals = 0  #: D-Bus signals emitted (ItemsChanged + PropertiesChanged)
        self._items: dict[str, _Item] = {}
        self._children: dict[str, set[str]] = {"/": set()}  #: node path -> child names
        self._bus: MessageBus | None = None

    # ---- local API -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the service holds its name on a connected bus."""
        return self._bus is not None and self._bus.connected

    @property
    def bus(self) -> MessageBus | None:
        """The connection while connected (to call other services on it), else None."""
        return self._bus if self.connected else None

    def paths(self) -> list[str]:
        """Every leaf path, in the order they were added."""
        return list(self._items)

    def get(self, path: str) -> Any:
        """Return the value of a leaf path (None = invalid); KeyError for an unknown path."""
        return self._items[path].value

    def add_path(
        self,
        path: str,
        value: Any = None,
        *,
        writable: bool = False,
        validator: Callable[[Any], bool] | None = None,
        fmt: str | None = None,
        on_set: Callable[[str, Any], None] | None = None,
    ) -> None:
        """Create (or redefine) a leaf path without emitting a signal.

        Args:
            path: object path, for example ``/Dc/0/Voltage``.
            value: initial value (None = invalid).
            writable: whether D-Bus clients may SetValue it.
            validator: for writable paths, accepts or rejects a new value (default: same type).
            fmt: text format for GetText, for example ``"{:.2f}V"``.
            on_set: called with (path, new value) after a client's SetValue changed the value
                (persist it, forward it); it must not block.

        """
        if not path.startswith("/") or path == "/" or path.endswith("/"):
            raise ValueError(f"not a leaf object path: {path!r}")
        if path in self._children:
            raise ValueError(f"{path} is already a node")
        parts = path.strip("/").split("/")
        nodes = ["/" + "/".join(parts[:depth]) for depth in range(len(parts))]
        if any(node in self._items for node in nodes):
            raise ValueError(f"{path} would be below a leaf path")
        self._items[path] = _Item(normalise(value), writable, validator, fmt, on_set)
        for node, name in zip(nodes, parts, strict=True):
            self._children.setdefault(node, set()).add(name)

    async def connect(self, prepare: Callable[[MessageBus], Awaitable[None]] | None = None) -> None:
        """Connect to the bus and take the service name.

        The address is ``bus_address``, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else the system bus.

        Args:
            prepare: awaited with the connected bus before the name is taken, to fill in values
                that must be right from the first read (the DeviceInstance claimed from the
                settings service).

        Raises:
            ConnectionError: the name is owned by another process.
            OSError or a dbus_fast error: the bus is not reachable.

        """
        await self.close()
        address = self.bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        if address:
            bus = MessageBus(bus_address=address)
        else:
            bus = MessageBus(bus_type=BusType.SYSTEM)
        await bus.connect()
        if prepare is not None:
            try:
                await prepare(bus)
            except BaseException:
                bus.disconnect()
                raise
        bus.add_message_handler(self._handle)
        reply = await bus.request_name(self.service_name, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            bus.disconnect()
            raise ConnectionError(f"{self.service_name} is owned by another process ({reply})")
        self._bus = bus
        log.info("registered %s with %d paths", self.service_name, len(self._items))

    async def wait_disconnected(self) -> None:
        """Return when the connection ends (at once when there is none); never raises.

        Lets a keeper sleep while the service is on the bus instead of checking every second.
        """
        bus = self._bus
        if bus is None or not bus.connected:
            return
        try:
            await bus.wait_for_disconnect()
        except Exception as exc:  # the connection broke: over all the same
            log.debug("%s: connection ended: %s", self.service_name, exc)

    async def close(self) -> None:
        """Release the name and disconnect (the paths and values are kept for a reconnect)."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        if bus.connected:
            try:
                await asyncio.wait_for(bus.release_name(self.service_name), 2.0)
            except Exception as exc:  # the bus may be going away: closing must not fail
                log.debug("release_name failed: %s", exc)
            bus.disconnect()

    async def update(self, values: Mapping[str, Any]) -> int:
        """Set many paths at once; emit ONE ItemsChanged with only the changed paths.

        Unknown paths are added (and reported as changed). Nothing is emitted when nothing
        changed or while disconnected.

        Returns:
            The number of paths whose value changed.

        """
        changes: dict[str, dict[str, Variant]] = {}
        items = self._items
        for path, value in values.items():
            item = items.get(path)
            # Fast path (most paths do not change): same type and value as stored. Stored values
            # are normalised, so a bool or a NaN never matches here and takes the full path.
            if item is not None and type(value) is type(item.value) and value == item.value:
                continue
            new = normalise(value)
            if item is None:
                self.add_path(path, new)
                item = self._items[path]
            elif _same(item.value, new):
                continue
            item.value = new
            changes[path] = item.entry()
        if changes:
            self._emit("/", "ItemsChanged", "a{sa{sv}}", changes)
        return len(changes)

    async def set_value(self, path: str, value: Any) -> bool:
        """Change one path locally and emit PropertiesChanged on it when the value changed."""
        return self._set(path, normalise(value))

    # ---- internals ---------------------------------------------------------------------------

    def _set(self, path: str, value: Any) -> bool:
        item = self._items[path]
        if _same(item.value, value):
            return False
        item.value = value
        self._emit(path, "PropertiesChanged", "a{sv}", item.entry())
        return True

    def _emit(self, path: str, member: str, signature: str, body: Any) -> None:
        if not self.connected:
            return
        assert self._bus is not None
        msg = Message(
            message_type=MessageType.SIGNAL, path=path, interface=IFACE, member=member,
            signature=signature, body=[body], flags=MessageFlag.NO_REPLY_EXPECTED,
        )  # fmt: skip
        self._bus.send(msg).add_done_callback(_log_send_error)
        self.signals += 1

    def _subtree(self, node: str, texts: bool) -> dict[str, Variant]:
        prefix = node if node.endswith("/") else node + "/"
        return {
            p[len(prefix) :]: Variant("s", it.text()) if texts else variant(it.value)
            for p, it in self._items.items()
            if p.startswith(prefix)
        }

    def _handle(self, msg: Message) -> Message | bool | None:
        """Handle one bus message: answer BusItem and Introspect calls for our paths."""
        if msg.message_type is not MessageType.METHOD_CALL or msg.path is None:
            return None
        reply: Message | None
        if msg.interface == INTROSPECTABLE and msg.member == "Introspect":
            reply = self._introspect(msg)
        elif msg.interface in (IFACE, None):
            reply = self._busitem(msg)
        else:
            return None  # Peer, Properties, ...: dbus-fast's defaults answer them
        if reply is None:
            return None
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return reply

    def _busitem(self, msg: Message) -> Message | None:
        path, member = msg.path, msg.member
        assert path is not None
        item = self._items.get(path)
        is_node = path in self._children
        if item is None and not is_node:
            if msg.interface is None:
                return None
            return Message.new_error(msg, UNKNOWN_OBJECT, f"no object at {path}")
        if item is not None:
            if member == "GetValue" and msg.signature == "":
                return Message.new_method_return(msg, "v", [variant(item.value)])
            if member == "GetText" and msg.signature == "":
                return Message.new_method_return(msg, "s", [item.text()])
            if member == "SetValue" and msg.signature == "v":
                return Message.new_method_return(msg, "i", [self._remote_set(path, msg.body[0])])
        else:
            if member in ("GetValue", "GetText") and msg.signature == "":
                tree = self._subtree(path, texts=member == "GetText")
                return Message.new_method_return(msg, "v", [Variant("a{sv}", tree)])
            if member == "GetItems" and msg.signature == "" and path == "/":
                items = {p: it.entry() for p, it in self._items.items()}
                return Message.new_method_return(msg, "a{sa{sv}}", [items])
            if member == "SetValue" and msg.signature == "v":
                return Message.new_method_return(msg, "i", [SET_READ_ONLY])
        if msg.interface is None:
            return None
        return Message.new_error(
            msg, UNKNOWN_METHOD, f"{IFACE}.{member}({msg.signature}) is not available on {path}"
        )

    def _remote_set(self, path: str, value: Variant) -> int:
        item = self._items[path]
        if not item.writable:
            log.info("refused SetValue on read-only %s", path)
            return SET_READ_ONLY
        new = value.value
        ok = item.validator(new) if item.validator is not None else type(new) is type(item.value)
        if not ok:
            log.info("refused SetValue %r on %s", new, path)
            return SET_REJECTED
        if self._set(path, normalise(new)):
            log.info("%s set to %r over D-Bus", path, new)
            if item.on_set is not None:
                item.on_set(path, item.value)
        return SET_OK

    def _introspect(self, msg: Message) -> Message:
        path = msg.path
        assert path is not None
        if path not in self._items and path not in self._children:
            return Message.new_error(msg, UNKNOWN_OBJECT, f"no object at {path}")
        node = intr.Node(path)
        node.interfaces.append(_busitem_interface(leaf=path in self._items, root=path == "/"))
        node.interfaces.append(_INTROSPECTABLE_IFACE)
        for child in sorted(self._children.get(path, ())):
            node.nodes.append(intr.Node(child, is_root=False))
        return Message.new_method_return(msg, "s", [node.tostring()])


def _arg(signature: str, direction: ArgDirection, name: str | None = None) -> intr.Arg:
    return intr.Arg(signature, direction, name)


def _busitem_interface(leaf: bool, root: bool) -> intr.Interface:
    out, inp = ArgDirection.OUT, ArgDirection.IN
    methods = [
        intr.Method("GetValue", [], [_arg("v", out, "value")]),
        intr.Method("GetText", [], [_arg("s" if leaf else "v", out, "text")]),
        intr.Method("SetValue", [_arg("v", inp, "value")], [_arg("i", out, "result")]),
    ]
    signals = [intr.Signal("PropertiesChanged", [_arg("a{sv}", out, "changes")])] if leaf else []
    if root:
        methods.append(intr.Method("GetItems", [], [_arg("a{sa{sv}}", out, "items")]))
        signals.append(intr.Signal("ItemsChanged", [_arg("a{sa{sv}}", out, "changes")]))
    return intr.Interface(IFACE, methods, signals)


_INTROSPECTABLE_IFACE = intr.Interface(
    INTROSPECTABLE, [intr.Method("Introspect", [], [_arg("s", ArgDirection.OUT, "xml")])]
)


def _log_send_error(fut: asyncio.Future) -> None:
    # Retrieve the result so a failed write is logged once, not reported as "never retrieved".
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("D-Bus send failed: %s", fut.exception())
