"""A stand-in for Venus's settings service (localsettings) on a private dbus-daemon.

It answers what devices use at start-up, as localsettings documents it:
    * ``AddSettings(aa{sv}) -> aa{sv}`` on ``/`` or any node (interface
      ``com.victronenergy.Settings``): each entry {path, default[, min, max, silent]} creates the
      setting unless it exists and returns {path, error, value}. A ``.../ClassAndVrmInstance``
      setting with default ``"<class>:<n>"`` gets n when no other device of that class holds it,
      else the next free instance.
    * ``GetValue`` / ``SetValue`` (``com.victronenergy.BusItem``) on a setting; SetValue returns 0.

``values`` holds every setting (absolute path -> value) for tests to read or pre-load; ``fail``
makes AddSettings answer with a D-Bus error (a broken settings service).
"""

from __future__ import annotations

from typing import Any

from dbus_fast import Message, MessageType, NameFlag, Variant
from dbus_fast.aio import MessageBus

NAME = "com.victronenergy.settings"
SETTINGS_IFACE = "com.victronenergy.Settings"
BUSITEM = "com.victronenergy.BusItem"


def _variant(value: Any) -> Variant:
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("i", value)


class SettingsStandIn:
    """See the module docstring."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.values: dict[str, Any] = {}
        self.calls: list[list[str]] = []  #: paths of each AddSettings call
        self.fail = False
        self.bus: MessageBus | None = None

    async def start(self) -> SettingsStandIn:
        self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.add_message_handler(self._handle)
        await self.bus.request_name(NAME, NameFlag.DO_NOT_QUEUE)
        return self

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None

    def _free_instance(self, path: str, default: str) -> str:
        cls, _, wanted = default.partition(":")
        taken = {
            int(v.partition(":")[2]) for p, v in self.values.items()
            if p.endswith("/ClassAndVrmInstance") and p != path and v.partition(":")[0] == cls
        }  # fmt: skip
        n = int(wanted)
        while n in taken:
            n += 1
        return f"{cls}:{n}"

    def _add(self, base: str, entries: list[dict[str, Variant]]) -> list[dict[str, Variant]]:
        out = []
        for entry in entries:
            rel = entry["path"].value
            path = rel if rel.startswith("/Settings") else base.rstrip("/") + "/" + rel.lstrip("/")
            default = entry["default"].value
            if path not in self.values:
                if path.endswith("/ClassAndVrmInstance"):
                    default = self._free_instance(path, default)
                self.values[path] = default
            out.append({"path": Variant("s", rel), "error": Variant("i", 0),
                        "value": _variant(self.values[path])})  # fmt: skip
        return out

    def _handle(self, msg: Message) -> Message | None:
        if msg.message_type is not MessageType.METHOD_CALL or msg.path is None:
            return None
        if msg.interface == SETTINGS_IFACE and msg.member == "AddSettings":
            self.calls.append([e["path"].value for e in msg.body[0]])
            if self.fail:
                return Message.new_error(msg, "com.victronenergy.Error", "settings broken")
            return Message.new_method_return(msg, "aa{sv}", [self._add(msg.path, msg.body[0])])
        if msg.interface == BUSITEM and msg.path in self.values:
            if msg.member == "GetValue":
                return Message.new_method_return(msg, "v", [_variant(self.values[msg.path])])
            if msg.member == "SetValue":
                self.values[msg.path] = msg.body[0].value
                return Message.new_method_return(msg, "i", [0])
        return None
