"""Who a service is on D-Bus: a stable unique id, its VRM DeviceInstance and its custom name.

Venus OS hands out device instances through its settings service (localsettings,
``com.victronenergy.settings``): a device calls ``AddSettings`` on ``/`` (interface
``com.victronenergy.Settings``, signature ``aa{sv}``) with
``{"path": "/Settings/Devices/<unique id>/ClassAndVrmInstance", "default": "battery:<N>"}``;
the reply (``aa{sv}``: path, error, value) holds the instance the settings service assigned -- N
when it is free, the next free one otherwise, and the same one on every later start because the
setting persists. The custom name lives beside it (``/Settings/Devices/<unique id>/CustomName``),
so a name typed in the GUI survives restarts and reinstalls.

Without a settings service (plain Debian, the demo) the configured instance is used and the custom
name is kept in a small JSON file (``[dbus] names_file``). Anything going wrong while talking to the
settings service falls back the same way, with one warning: a missing instance must never keep the
bank off the bus. A names file that is not an object of unique ids to valid custom names (checked
entry by entry) is logged once and taken as empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from bmsbank.persisted import CorruptFile, read_json

from .dbus_service import VeService

log = logging.getLogger(__name__)

SETTINGS = "com.victronenergy.settings"
SETTINGS_IFACE = "com.victronenergy.Settings"
BUSITEM = "com.victronenergy.BusItem"
DEVICE_CLASS = "battery"
CALL_TIMEOUT = 3.0  # s for one call to the settings service
_INSTANCE = re.compile(r"^([a-z_]+):(\d{1,4})$")
UNIQUE_ID_MAX = 255  # characters of a unique id kept in the names file (a settings path element)


def bus_element(text: str) -> str:
    """Turn any text into a D-Bus name element: ``rs485:3`` -> ``rs485_3``.

    Letters, digits and ``_`` are kept, anything else becomes ``_``; a leading digit gets a ``_``
    in front (elements must not start with one).
    """
    out = re.sub(r"[^A-Za-z0-9_]", "_", text) or "_"
    return "_" + out if out[0].isdigit() else out


def device_path(unique_id: str, leaf: str) -> str:
    """The settings path of one of a device's settings (``ClassAndVrmInstance``, ...)."""
    return f"/Settings/Devices/{unique_id}/{leaf}"


def parse_instance(value: Any) -> int:
    """``"battery:3"`` -> 3.

    Raises:
        ValueError: for anything that is not ``battery:<0-1023>``.

    """
    match = _INSTANCE.match(value) if isinstance(value, str) else None
    if match is None or match.group(1) != DEVICE_CLASS or int(match.group(2)) > 1023:
        raise ValueError(f"not a battery ClassAndVrmInstance: {value!r}")
    return int(match.group(2))


@dataclass
class Identity:
    """The identity a service registers with.

    Attributes:
        unique_id: stable id, the settings key (``bmsbank_house``, ``bmsbank_house_rs485_3``).
        instance: the DeviceInstance (VRM instance).
        custom_name: the name shown in the GUI.
        via_settings: True when the settings service assigned these (and keeps the name).

    """

    unique_id: str
    instance: int
    custom_name: str
    via_settings: bool = False


class NameStore:
    """Custom names kept in a JSON file ``{unique id: name}`` when there is no settings service.

    ``path`` "" keeps nothing. A file that cannot be read or written is logged once and ignored.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._warned = False

    def _read(self) -> dict[str, str]:
        try:
            data = read_json(self.path)
            return {} if data is None else _names(data)
        except CorruptFile as exc:
            self._warn("unreadable", exc)
            return {}

    def get(self, unique_id: str, default: str) -> str:
        """The stored name of ``unique_id``, or ``default``."""
        return self._read().get(unique_id, default)

    def put(self, unique_id: str, name: str) -> None:
        """Store a name (atomically: temporary file, then rename)."""
        if not self.path:
            return
        data = self._read()
        data[unique_id] = name
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            self._warn("not writable", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        if not self._warned:
            log.warning("custom-name file %s %s: %s", self.path, what, exc)
            self._warned = True


def _names(data: dict[str, Any]) -> dict[str, str]:
    """The names file's contents when every entry is a unique id and a valid custom name.

    Raises:
        CorruptFile: naming the first entry that is not.

    """
    from .paths import custom_name_ok  # here: paths imports this module

    for uid, name in data.items():
        if not 0 < len(uid) <= UNIQUE_ID_MAX or not custom_name_ok(name):
            raise CorruptFile(f"entry {uid[:32]!r}: not a unique id and a name of 1-64 characters")
    return data


class SettingsError(Exception):
    """The settings service refused or failed a call."""


async def _call(bus: MessageBus, msg: Message) -> Message:
    reply = await asyncio.wait_for(bus.call(msg), CALL_TIMEOUT)
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        raise SettingsError(f"{msg.member} on {msg.path}: {reply.error_name} {reply.body}")
    return reply


async def settings_present(bus: MessageBus) -> bool:
    """True when ``com.victronenergy.settings`` has an owner on this bus."""
    reply = await _call(bus, Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="NameHasOwner", signature="s", body=[SETTINGS],
    ))  # fmt: skip
    return bool(reply.body[0])


async def add_settings(bus: MessageBus, defaults: dict[str, Any]) -> dict[str, Any]:
    """Create settings (kept when they exist) and return their values.

    Args:
        bus: a connected bus.
        defaults: settings path -> default value (its type is the setting's type).

    Raises:
        SettingsError: the call failed or a setting came back with an error.

    """
    entries = [{"path": Variant("s", p), "default": _variant(v)} for p, v in defaults.items()]
    reply = await _call(bus, Message(
        destination=SETTINGS, path="/", interface=SETTINGS_IFACE, member="AddSettings",
        signature="aa{sv}", body=[entries],
    ))  # fmt: skip
    values: dict[str, Any] = {}
    for row in reply.body[0]:
        path, error = row["path"].value, row["error"].value
        if error != 0 or "value" not in row:
            raise SettingsError(f"AddSettings {path}: error {error}")
        values[path] = row["value"].value
    missing = set(defaults) - set(values)
    if missing:
        raise SettingsError(f"AddSettings did not return {sorted(missing)}")
    return values


async def set_setting(bus: MessageBus, path: str, value: Any) -> None:
    """Write one setting.

    Raises:
        SettingsError: the settings service refused it.

    """
    reply = await _call(bus, Message(
        destination=SETTINGS, path=path, interface=BUSITEM, member="SetValue", signature="v",
        body=[_variant(value)],
    ))  # fmt: skip
    if reply.body and reply.body[0] != 0:
        raise SettingsError(f"SetValue {path}: {reply.body[0]}")


def _variant(value: Any) -> Variant:
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("i", int(value))


async def claim(bus: MessageBus, fallback: Identity, names: NameStore) -> Identity:
    """Claim a DeviceInstance and read the custom name; fall back when there is no settings service.

    Args:
        bus: the service's own connection, before it takes its name.
        fallback: the unique id, the configured instance and the default custom name.
        names: where the custom name is kept when there is no settings service.

    Returns:
        The identity to register with; ``via_settings`` says where it came from.

    """
    uid = fallback.unique_id
    try:
        if await settings_present(bus):
            paths = (device_path(uid, "ClassAndVrmInstance"), device_path(uid, "CustomName"))
            values = await add_settings(bus, {
                paths[0]: f"{DEVICE_CLASS}:{fallback.instance}", paths[1]: fallback.custom_name,
            })  # fmt: skip
            name = values[paths[1]]
            name = name if isinstance(name, str) and name else fallback.custom_name
            return Identity(uid, parse_instance(values[paths[0]]), name, via_settings=True)
    except (TimeoutError, SettingsError, ValueError, OSError) as exc:
        log.warning("%s: settings service unusable (%s); using DeviceInstance %d", uid, exc,
                    fallback.instance)  # fmt: skip
    name = names.get(uid, fallback.custom_name)
    return Identity(uid, fallback.instance, name, via_settings=False)


async def save_custom_name(bus: MessageBus | None, identity: Identity, names: NameStore) -> None:
    """Keep a new custom name where the identity came from (settings service or names file)."""
    identity_name = identity.custom_name
    if identity.via_settings and bus is not None:
        try:
            await set_setting(bus, device_path(identity.unique_id, "CustomName"), identity_name)
            return
        except (TimeoutError, SettingsError, OSError) as exc:
            log.warning("%s: custom name not saved in settings (%s); keeping it in %s",
                        identity.unique_id, exc, names.path or "memory")  # fmt: skip
    names.put(identity.unique_id, identity_name)


class ServiceIdentity:
    """Claims one service's identity before its name is taken and keeps its custom name.

    Pass :meth:`claim` as ``prepare`` to :meth:`VeService.connect` and :meth:`renamed` as the
    ``on_set`` of /CustomName.
    """

    def __init__(self, ve: VeService, fallback: Identity, names: NameStore) -> None:
        self.ve = ve
        self.identity = fallback
        self.names = names
        self._tasks: set[asyncio.Task] = set()

    async def claim(self, bus: MessageBus) -> None:
        """Claim the DeviceInstance and read the custom name; show both on the service."""
        self.identity = await claim(bus, self.identity, self.names)
        await self.ve.set_value("/DeviceInstance", self.identity.instance)
        await self.ve.set_value("/CustomName", self.identity.custom_name)
        log.info("%s: DeviceInstance %d (%s)", self.ve.service_name, self.identity.instance,
                 "settings service" if self.identity.via_settings else "configured")  # fmt: skip

    def renamed(self, _path: str, value: Any) -> None:
        """A client wrote /CustomName: keep it where the identity came from (in the background)."""
        self.identity.custom_name = value
        task = asyncio.get_running_loop().create_task(
            save_custom_name(self.ve.bus, self.identity, self.names)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
