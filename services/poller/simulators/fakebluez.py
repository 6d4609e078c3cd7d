"""A fake BlueZ on a private D-Bus: bleak's BlueZ backend talks to simulated BMSs through it.

python-dbusmock's ``bluez5`` template gives the adapters (``org.bluez.Adapter1``); this module adds
the devices itself (``org.bluez.Device1`` with the advertisement property types bleak expects:
``ManufacturerData`` ``a{qv}`` and ``ServiceData`` ``a{sv}`` dictionaries, the family's service
in ``UUIDs``) and, under each, the GATT objects of its family's :class:`Ble` facts: one
``org.bluez.GattService1`` (``.../service000c``) and its ``org.bluez.GattCharacteristic1``
objects (``char000d`` notify, ``char0010`` write; one object when both UUIDs are the same).
Object paths end in hex handles, as bleak derives handles from them. ``Connect`` sets
``Connected`` and ``ServicesResolved``; ``StartNotify``/``StopNotify`` set ``Notifying``;
``WriteValue`` feeds the bytes to the family's serial simulator (``plugins.simulator_class``,
:meth:`~bmsbank.services.poller.simulators.base.Simulator.feed`) and sends each reply back as
``PropertiesChanged{Value}`` notifications of ``chunk`` bytes (20 by default: a 23-byte ATT MTU
less its 3-byte header; 1 splits at every byte boundary). While a device is not connected its
``RSSI`` is re-announced every ``rssi_interval`` seconds, the way BlueZ reports a device that
keeps advertising: bleak's scanner (``find_device_by_address``) only reports devices whose
properties change while it scans.

``AcquireNotify`` as BlueZ has it (bluez doc/org.bluez.GattCharacteristic.rst "AcquireNotify",
src/gatt-client.c ``characteristic_acquire_notify``, ``create_sock``, ``notify_io_cb``): the
notify characteristic carries ``NotifyAcquired`` (BlueZ shows it only where the "notify" flag is
set); ``AcquireNotify(a{sv}) -> (h fd, q mtu)`` hands one end of a ``SOCK_SEQPACKET`` socketpair
and sets ``NotifyAcquired``; while acquired every notification is one ``send`` of a chunk on the
other end instead of ``PropertiesChanged{Value}``. Refusals as in BlueZ: NotPermitted ("Notify
acquired") for AcquireNotify or StartNotify while acquired, InProgress for AcquireNotify while a
StartNotify session runs, Failed when not connected. The client closing its end releases it
(noticed at the next send or method call, as BlueZ's HUP watch would); a disconnect, a vanish or
the adapter's removal closes the fake's end, which the client sees as a hang-up.
``AcquireWrite`` likewise (``characteristic_acquire_write``, ``sock_read``): on a characteristic
flagged "write-without-response" it hands a non-blocking ``SOCK_SEQPACKET`` end and sets
``WriteAcquired``; each packet the client writes is one write to the device (read from a GLib
watch); NotPermitted ("Write acquired") while acquired, Failed when not connected; the client
closing its end releases it, a disconnect closes the fake's (the client's writes fail).

Faults (see :class:`FakeBluez`): ``vanish`` (disconnect and remove the device, as when it is
switched off or out of range), ``restore``, ``remove_adapter`` (the adapter object and everything
under it go, as when a USB dongle is unplugged) and ``add_adapter`` again (its devices return),
``mute`` (connects and accepts writes, never notifies), ``garble`` (replies with a flipped byte),
``foreign`` (answers every write with another family's frames), ``refuse_acquire``
(``AcquireNotify`` and ``AcquireWrite`` fail with org.bluez.Error.NotSupported: StartNotify
and WriteValue must be used) and
``hang_up`` (the acquired socket is closed while the device stays connected: nothing comes
through it any more).

Why a process of its own (``python -m bmsbank.services.poller.simulators.fakebluez``):
python-dbusmock is dbus-python on a GLib main loop, bleak is dbus-fast on asyncio. Kept apart,
neither main loop runs in the other's process, the poller's CPU figures (bench/ble.py) hold no
fake-BlueZ work, and the demo runs it as one more supervisord program. The control channel is
D-Bus itself: the object :data:`CONTROL_PATH` (interface :data:`CONTROL_IFACE`) on the same
private bus, so a test, the demo or ``dbus-send`` can drive the faults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from bmsbank.services.poller.simulators.battery import BatteryModel

BLUEZ = "org.bluez"
CONTROL_PATH = "/org/bmsbank/FakeBluez"
CONTROL_IFACE = "org.bmsbank.FakeBluez"
DEVICE_IFACE = "org.bluez.Device1"
ADAPTER_IFACE = "org.bluez.Adapter1"
SERVICE_IFACE = "org.bluez.GattService1"
CHAR_IFACE = "org.bluez.GattCharacteristic1"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
CHUNK = 20  #: notification size [bytes]: a 23-byte default ATT MTU less the 3-byte header
RSSI_INTERVAL = 0.5  #: s between two RSSI announcements of a device that is not connected


def model_to_dict(model: BatteryModel) -> dict[str, Any]:
    """A JSON-able copy of ``model`` (its faults as a sorted list)."""
    data = dataclasses.asdict(model)
    data["faults"] = sorted(model.faults)
    return data


def model_from_dict(data: Mapping[str, Any]) -> BatteryModel:
    """The inverse of :func:`model_to_dict` (unknown keys are refused by the dataclass)."""
    fields = dict(data)
    fields["faults"] = set(fields.get("faults", ()))
    return BatteryModel(**fields)


def device_path(adapter: str, mac: str) -> str:
    """BlueZ's object path of device ``mac`` on ``adapter``."""
    return f"/org/bluez/{adapter}/dev_{mac.upper().replace(':', '_')}"


# -- the server (runs in its own process, dbus-python on a GLib main loop) ---------------------


class _Device:
    """One simulated BLE BMS and the state of its link."""

    def __init__(
        self, adapter: str, mac: str, name: str, family: str, packs: dict[int, BatteryModel],
        chunk: int,
    ) -> None:  # fmt: skip
        from bmsbank.services.poller import plugins

        ble = plugins.info(family).ble
        if ble is None:
            raise ValueError(f"family {family!r} does not speak BLE (its INFO has no ble)")
        self.adapter, self.mac, self.name, self.family = adapter, mac.upper(), name, family
        self.ble = ble
        self.packs = packs
        self.sim = plugins.simulator_class(family)(packs)
        self.chunk = chunk
        self.present = True  #: not vanished
        self.exported = False  #: its objects are on the bus
        self.connected = False
        self.notifying = False
        self.muted = False
        self.garbled = False
        self.foreign: tuple[Any, bytes] | None = None  #: (simulator, the request it answers)
        self.refuse_acquire = False  #: AcquireNotify and AcquireWrite fail with NotSupported
        self.notify_sock: socket.socket | None = None  #: the fake's end while acquired
        self.write_sock: socket.socket | None = None  #: the fake's end of AcquireWrite's socket
        self.write_source = 0  #: its GLib watch
        self.writes = self.notifications = self.connects = self.acquires = 0

    @property
    def path(self) -> str:
        return device_path(self.adapter, self.mac)

    @property
    def service_path(self) -> str:
        return f"{self.path}/service000c"

    @property
    def notify_path(self) -> str:
        return f"{self.service_path}/char000d"

    @property
    def write_path(self) -> str:
        same = self.ble.write.lower() == self.ble.notify.lower()
        return self.notify_path if same else f"{self.service_path}/char0010"

    def replies(self, data: bytes) -> list[bytes]:
        """What the device sends back for a write (its faults applied)."""
        if self.foreign is not None:
            sim, request = self.foreign
            out = sim.feed(request)
        else:
            out = self.sim.feed(data)
        if self.muted:
            return []
        if self.garbled:
            out = [_garble(r) for r in out]
        return out


def _garble(reply: bytes) -> bytes:
    """``reply`` with its middle byte inverted (a frame whose check must fail)."""
    if not reply:
        return reply
    b = bytearray(reply)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


class _Server:
    """The fake bluetoothd: the dbusmock object tree plus the simulated devices."""

    def __init__(self, bus: Any, rssi_interval: float, latency: float) -> None:
        import ctypes

        import dbus
        import dbus.service
        import dbusmock.mockobject as mockobject

        self.dbus = dbus
        self.mockobject = mockobject
        self.bus = bus
        self.name = dbus.service.BusName(BLUEZ, bus, allow_replacement=True,
                                         replace_existing=True, do_not_queue=True)  # fmt: skip
        self.main = mockobject.DBusMockObject(
            self.name, "/", OBJECT_MANAGER_IFACE, {}, os.devnull, True
        )
        self.main.AddTemplate("bluez5", {})
        mockobject.objects["/"] = self.main
        self.adapters: set[str] = set()
        self.devices: dict[str, _Device] = {}
        self.by_path: dict[str, _Device] = {}
        self.latency_ms = max(0, int(latency * 1000))
        self.pending: deque[tuple[_Device, bytes]] = deque()
        self.running = True
        self.glib = ctypes.cdll.LoadLibrary("libglib-2.0.so.0")
        source_func = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
        self.glib.g_timeout_add.argtypes = [ctypes.c_uint, source_func, ctypes.c_void_p]
        self.glib.g_timeout_add.restype = ctypes.c_uint
        # kept referenced: GLib holds only the C pointers
        self._flush_cb = source_func(lambda _data: self._flush())
        self._rssi_cb = source_func(lambda _data: self._announce())
        fd_func = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
        self.glib.g_unix_fd_add.argtypes = [ctypes.c_int, ctypes.c_uint, fd_func, ctypes.c_void_p]
        self.glib.g_unix_fd_add.restype = ctypes.c_uint
        self.glib.g_source_remove.argtypes = [ctypes.c_uint]
        self._write_cb = fd_func(lambda fd, _cond, _data: self._written(fd))
        self._flush_scheduled = False
        self.rssi = 0
        self.glib.g_timeout_add(max(1, int(rssi_interval * 1000)), self._rssi_cb, None)

    # -- adapters ---------------------------------------------------------------------------
    def add_adapter(self, name: str) -> None:
        if name in self.adapters:
            return
        self.main.AddAdapter(name, name)
        self.adapters.add(name)
        for dev in self.devices.values():
            if dev.adapter == name and dev.present:
                self._export(dev)

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            return
        for dev in self.devices.values():
            if dev.adapter == name:
                self._unexport(dev)
        self.main.RemoveAdapter(name)
        self.adapters.discard(name)

    # -- devices ----------------------------------------------------------------------------
    def add_device(self, dev: _Device) -> None:
        if dev.mac in self.devices:
            raise ValueError(f"device {dev.mac} exists")
        self.devices[dev.mac] = dev
        if dev.adapter in self.adapters:
            self._export(dev)

    def device(self, mac: str) -> _Device:
        try:
            return self.devices[mac.upper()]
        except KeyError:
            raise self.dbus.exceptions.DBusException(
                f"no device {mac}", name=f"{CONTROL_IFACE}.NoSuchDevice"
            ) from None

    def vanish(self, mac: str) -> None:
        dev = self.device(mac)
        dev.present = False
        self._unexport(dev)

    def restore(self, mac: str) -> None:
        dev = self.device(mac)
        dev.present = True
        if dev.adapter in self.adapters:
            self._export(dev)

    def _export(self, dev: _Device) -> None:
        if dev.exported:
            return
        dbus = self.dbus
        ble = dev.ble
        props = {
            "Address": dbus.String(dev.mac),
            "AddressType": dbus.String("public"),
            "Name": dbus.String(dev.name),
            "Alias": dbus.String(dev.name),
            "Adapter": dbus.ObjectPath(f"/org/bluez/{dev.adapter}"),
            "UUIDs": dbus.Array([ble.service.lower()], signature="s"),
            "Paired": dbus.Boolean(False),
            "Bonded": dbus.Boolean(False),
            "Connected": dbus.Boolean(False),
            "Trusted": dbus.Boolean(False),
            "Blocked": dbus.Boolean(False),
            "LegacyPairing": dbus.Boolean(False),
            "RSSI": dbus.Int16(-60),
            "TxPower": dbus.Int16(0),
            "ManufacturerData": dbus.Dictionary({}, signature="qv"),
            "ServiceData": dbus.Dictionary({}, signature="sv"),
            "ServicesResolved": dbus.Boolean(False),
        }
        self.main.AddObject(dev.path, DEVICE_IFACE, props, [
            ("Connect", "", "", lambda obj: self._connect(obj)),
            ("Disconnect", "", "", lambda obj: self._disconnect(obj)),
            ("Pair", "", "", ""),
            ("CancelPairing", "", "", ""),
        ])  # fmt: skip
        self._added(dev.path, DEVICE_IFACE, props)
        service = {
            "UUID": dbus.String(ble.service.lower()),
            "Device": dbus.ObjectPath(dev.path),
            "Primary": dbus.Boolean(True),
            "Includes": dbus.Array([], signature="o"),
        }
        self.main.AddObject(dev.service_path, SERVICE_IFACE, service, [])
        self._added(dev.service_path, SERVICE_IFACE, service)
        same = dev.write_path == dev.notify_path
        write_flags = ["write-without-response", "write"]
        chars = [(dev.notify_path, ble.notify, ["read", "notify"] + (write_flags if same else []))]
        if not same:
            chars.append((dev.write_path, ble.write, write_flags))
        for path, uuid, flags in chars:
            char = {
                "UUID": dbus.String(uuid.lower()),
                "Service": dbus.ObjectPath(dev.service_path),
                "Value": dbus.Array([], signature="y"),
                "Notifying": dbus.Boolean(False),
                "Flags": dbus.Array(flags, signature="s"),
                "MTU": dbus.UInt16(max(23, dev.chunk + 3)),
            }
            if "notify" in flags:
                char["NotifyAcquired"] = dbus.Boolean(False)
            if "write-without-response" in flags:
                char["WriteAcquired"] = dbus.Boolean(False)
            self.main.AddObject(path, CHAR_IFACE, char, [
                ("ReadValue", "a{sv}", "ay", lambda obj, _opts: dbus.ByteArray(b"")),
                ("WriteValue", "aya{sv}", "", lambda obj, value, _o: self._write(obj, value)),
                ("StartNotify", "", "", lambda obj: self._notify(obj, True)),
                ("StopNotify", "", "", lambda obj: self._notify(obj, False)),
                ("AcquireNotify", "a{sv}", "hq", lambda obj, _opts: self._acquire(obj)),
                ("AcquireWrite", "a{sv}", "hq", lambda obj, _opts: self._acquire_write(obj)),
            ])  # fmt: skip
            self._added(path, CHAR_IFACE, char)
            self.by_path[path] = dev
        self.by_path[dev.path] = dev
        dev.exported = True

    def _unexport(self, dev: _Device) -> None:
        if not dev.exported:
            return
        if dev.connected:
            self._set_connected(dev, False)
        self._release(dev)
        self._release_write(dev)
        paths = [(p, CHAR_IFACE) for p in {dev.write_path, dev.notify_path}]
        paths += [(dev.service_path, SERVICE_IFACE), (dev.path, DEVICE_IFACE)]
        for path, iface in paths:
            self.main.RemoveObject(path)
            self.by_path.pop(path, None)
            self.main.EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas",
                                 [self.dbus.ObjectPath(path), [iface]])  # fmt: skip
        dev.exported = False

    def _added(self, path: str, iface: str, props: dict[str, Any]) -> None:
        self.main.EmitSignal(OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
                             [self.dbus.ObjectPath(path), {iface: props}])  # fmt: skip

    def _changed(self, path: str, iface: str, changes: dict[str, Any]) -> None:
        obj = self.mockobject.objects[path]
        obj.props[iface].update(changes)
        obj.EmitSignal(PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as",
                       [iface, self.dbus.Dictionary(changes, signature="sv"),
                        self.dbus.Array([], signature="s")])  # fmt: skip

    # -- the device's D-Bus methods ---------------------------------------------------------
    def _dev(self, obj: Any) -> _Device:
        dev = self.by_path.get(obj.path)
        if dev is None:
            raise self.dbus.exceptions.DBusException(
                "Does Not Exist", name="org.freedesktop.DBus.Error.UnknownObject"
            )
        return dev

    def _connect(self, obj: Any) -> None:
        dev = self._dev(obj)
        if dev.connected:
            raise self.dbus.exceptions.DBusException(
                "Already Connected", name="org.bluez.Error.AlreadyConnected"
            )
        dev.connects += 1
        self._set_connected(dev, True)

    def _disconnect(self, obj: Any) -> None:
        dev = self._dev(obj)
        if dev.connected:
            self._set_connected(dev, False)

    def _set_connected(self, dev: _Device, on: bool) -> None:
        dev.connected = on
        if not on:
            self._release(dev)
            self._release_write(dev)
        if not on and dev.notifying:
            dev.notifying = False
            self._changed(dev.notify_path, CHAR_IFACE, {"Notifying": self.dbus.Boolean(False)})
        b = self.dbus.Boolean(on)
        self._changed(dev.path, DEVICE_IFACE, {"Connected": b, "ServicesResolved": b})

    def _notify(self, obj: Any, on: bool) -> None:
        dev = self._dev(obj)
        if obj.path != dev.notify_path:
            raise self.dbus.exceptions.DBusException(
                "Operation is not supported", name="org.bluez.Error.NotSupported"
            )
        if not dev.connected:
            raise self.dbus.exceptions.DBusException("Not connected", name="org.bluez.Error.Failed")
        if self._acquired(dev):
            if on:
                raise self.dbus.exceptions.DBusException(
                    "Notify acquired", name="org.bluez.Error.NotPermitted"
                )
            self._release(dev)  # BlueZ's StopNotify destroys an acquired socket too
            return
        dev.notifying = on
        self._changed(dev.notify_path, CHAR_IFACE, {"Notifying": self.dbus.Boolean(on)})

    def _acquire(self, obj: Any) -> tuple[Any, Any]:
        """``AcquireNotify``: one end of a SOCK_SEQPACKET socketpair and the MTU."""
        dbus = self.dbus
        dev = self._dev(obj)
        if obj.path != dev.notify_path:
            raise dbus.exceptions.DBusException(
                "Operation is not supported", name="org.bluez.Error.NotSupported"
            )
        if not dev.connected:
            raise dbus.exceptions.DBusException("Not connected", name="org.bluez.Error.Failed")
        if self._acquired(dev):
            raise dbus.exceptions.DBusException(
                "Notify acquired", name="org.bluez.Error.NotPermitted"
            )
        if dev.notifying:
            raise dbus.exceptions.DBusException("In Progress", name="org.bluez.Error.InProgress")
        if dev.refuse_acquire:
            raise dbus.exceptions.DBusException(
                "Operation is not supported", name="org.bluez.Error.NotSupported"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)  # a reader that lags loses notifications, as in BlueZ
        try:
            fd = dbus.types.UnixFd(theirs)  # a dup of it, sent with the reply
        finally:
            theirs.close()
        dev.notify_sock = ours
        dev.acquires += 1
        self._changed(dev.notify_path, CHAR_IFACE, {"NotifyAcquired": dbus.Boolean(True)})
        mtu = self.mockobject.objects[dev.notify_path].props[CHAR_IFACE]["MTU"]
        return fd, dbus.UInt16(mtu)

    def _acquired(self, dev: _Device) -> bool:
        """Whether ``dev``'s notify is acquired (a client that closed its end released it)."""
        sock = dev.notify_sock
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock, select.POLLHUP)
        if poller.poll(0):
            self._release(dev)
            return False
        return True

    def _release(self, dev: _Device) -> None:
        """End ``dev``'s acquired notify: close the fake's end (the client sees a hang-up)."""
        sock, dev.notify_sock = dev.notify_sock, None
        if sock is None:
            return
        sock.close()
        if dev.exported:
            self._changed(dev.notify_path, CHAR_IFACE, {"NotifyAcquired": self.dbus.Boolean(False)})

    def _acquire_write(self, obj: Any) -> tuple[Any, Any]:
        """``AcquireWrite``: one end of a SOCK_SEQPACKET socketpair, each packet one write."""
        dbus = self.dbus
        dev = self._dev(obj)
        if obj.path != dev.write_path:
            raise dbus.exceptions.DBusException(
                "Operation is not supported", name="org.bluez.Error.NotSupported"
            )
        if not dev.connected:
            raise dbus.exceptions.DBusException("Not connected", name="org.bluez.Error.Failed")
        if dev.write_sock is not None:
            raise dbus.exceptions.DBusException(
                "Write acquired", name="org.bluez.Error.NotPermitted"
            )
        if dev.refuse_acquire:
            raise dbus.exceptions.DBusException(
                "Operation is not supported", name="org.bluez.Error.NotSupported"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)  # as BlueZ's (SOCK_NONBLOCK on the pair)
        try:
            fd = dbus.types.UnixFd(theirs)
        finally:
            theirs.close()
        dev.write_sock = ours
        # G_IO_IN | G_IO_ERR | G_IO_HUP
        dev.write_source = self.glib.g_unix_fd_add(ours.fileno(), 1 | 8 | 16, self._write_cb, None)
        self._changed(dev.write_path, CHAR_IFACE, {"WriteAcquired": dbus.Boolean(True)})
        mtu = self.mockobject.objects[dev.write_path].props[CHAR_IFACE]["MTU"]
        return fd, dbus.UInt16(mtu)

    def _written(self, fd: int) -> int:
        """GLib watch of an AcquireWrite socket: each packet is one write; EOF releases it."""
        dev = next((d for d in self.devices.values()
                    if d.write_sock is not None and d.write_sock.fileno() == fd), None)  # fmt: skip
        if dev is None or dev.write_sock is None:
            return 0
        while True:
            try:
                data = dev.write_sock.recv(512)  # BlueZ's sock_read buffer
            except BlockingIOError:
                return 1  # keep watching
            except OSError:
                data = b""
            if not data:  # the client closed its end (or the link broke): BlueZ's sock_hup
                dev.write_source = 0  # this watch ends by returning 0
                self._release_write(dev)
                return 0
            if dev.connected:
                self._feed(dev, data)

    def _release_write(self, dev: _Device) -> None:
        """End ``dev``'s acquired write: close the fake's end (the client's writes fail)."""
        sock, dev.write_sock = dev.write_sock, None
        if sock is None:
            return
        if dev.write_source:
            self.glib.g_source_remove(dev.write_source)
            dev.write_source = 0
        sock.close()
        if dev.exported:
            self._changed(dev.write_path, CHAR_IFACE, {"WriteAcquired": self.dbus.Boolean(False)})

    def _write(self, obj: Any, value: Any) -> None:
        dev = self._dev(obj)
        if obj.path != dev.write_path:
            raise self.dbus.exceptions.DBusException(
                "Operation is not supported", name="org.bluez.Error.NotSupported"
            )
        if not dev.connected:
            raise self.dbus.exceptions.DBusException("Not connected", name="org.bluez.Error.Failed")
        self._feed(dev, bytes(value))

    def _feed(self, dev: _Device, data: bytes) -> None:
        """The device got ``data``: its replies are queued as notifications."""
        dev.writes += 1
        for reply in dev.replies(data):
            for i in range(0, len(reply), dev.chunk):
                self.pending.append((dev, reply[i : i + dev.chunk]))
        if self.pending and not self._flush_scheduled:
            # sent after the write's own reply, the way a BMS answers after it got the request
            self._flush_scheduled = True
            self.glib.g_timeout_add(self.latency_ms, self._flush_cb, None)

    def _flush(self) -> int:
        self._flush_scheduled = False
        while self.pending:
            dev, piece = self.pending.popleft()
            if not (dev.connected and dev.exported):
                continue
            if dev.notify_sock is not None:
                try:
                    dev.notify_sock.send(piece)  # one notification, one packet
                except BlockingIOError:
                    continue  # the client's buffer is full: BlueZ drops it too
                except OSError:  # the client closed its end: BlueZ's HUP watch releases it
                    self._release(dev)
                    continue
                dev.notifications += 1
            elif dev.notifying:
                dev.notifications += 1
                self._changed(dev.notify_path, CHAR_IFACE, {"Value": self.dbus.ByteArray(piece)})
        return 0  # one-shot

    def _announce(self) -> int:
        self.rssi = (self.rssi + 1) % 4
        for dev in self.devices.values():
            if dev.exported and not dev.connected:
                self._changed(dev.path, DEVICE_IFACE, {"RSSI": self.dbus.Int16(-60 - self.rssi)})
        for obj in self.mockobject.objects.values():
            obj.call_log.clear()  # dbusmock logs every call: keep a long demo's memory flat
        return 1  # repeat


def _control_class() -> type:
    """The control object's class (built lazily: only the server process imports dbus)."""
    import dbus
    import dbus.service

    class Control(dbus.service.Object):
        """The fault switches, on the bus at :data:`CONTROL_PATH`."""

        # dbusmock replaces dbus-python's method lookup process-wide with one that reads these
        # first: empty, it falls back to the decorated methods below
        methods: dict[str, dict[str, Any]] = {}
        interface = CONTROL_IFACE

        def __init__(self, server: _Server) -> None:
            super().__init__(server.bus, CONTROL_PATH)
            self.server = server

        @dbus.service.method(CONTROL_IFACE, in_signature="s", out_signature="")
        def AddAdapter(self, name: str) -> None:  # noqa: N802 (D-Bus method names)
            self.server.add_adapter(str(name))

        @dbus.service.method(CONTROL_IFACE, in_signature="s", out_signature="")
        def RemoveAdapter(self, name: str) -> None:  # noqa: N802
            self.server.remove_adapter(str(name))

        @dbus.service.method(CONTROL_IFACE, in_signature="sssssi", out_signature="")
        def AddDevice(self, adapter, mac, name, family, packs, chunk) -> None:  # noqa: N802
            models = {int(a): model_from_dict(m) for a, m in json.loads(str(packs)).items()}
            try:
                dev = _Device(str(adapter), str(mac), str(name), str(family), models, int(chunk))
                self.server.add_device(dev)
            except (KeyError, ValueError) as exc:
                raise dbus.exceptions.DBusException(
                    str(exc), name=f"{CONTROL_IFACE}.Invalid"
                ) from exc

        @dbus.service.method(CONTROL_IFACE, in_signature="s", out_signature="")
        def Vanish(self, mac: str) -> None:  # noqa: N802
            self.server.vanish(str(mac))

        @dbus.service.method(CONTROL_IFACE, in_signature="s", out_signature="")
        def Restore(self, mac: str) -> None:  # noqa: N802
            self.server.restore(str(mac))

        @dbus.service.method(CONTROL_IFACE, in_signature="sb", out_signature="")
        def Mute(self, mac: str, on: bool) -> None:  # noqa: N802
            self.server.device(str(mac)).muted = bool(on)

        @dbus.service.method(CONTROL_IFACE, in_signature="sb", out_signature="")
        def Garble(self, mac: str, on: bool) -> None:  # noqa: N802
            self.server.device(str(mac)).garbled = bool(on)

        @dbus.service.method(CONTROL_IFACE, in_signature="ss", out_signature="")
        def Foreign(self, mac: str, family: str) -> None:  # noqa: N802
            from bmsbank.services.poller import plugins

            dev = self.server.device(str(mac))
            if not family:
                dev.foreign = None
                return
            info = plugins.info(str(family))
            address = info.default_address
            sim = plugins.simulator_class(info.name)(
                {address: dev.sim.packs[next(iter(dev.packs))]}
            )
            request = plugins.load(info.name).queries(address)[0].request
            dev.foreign = (sim, request)

        @dbus.service.method(CONTROL_IFACE, in_signature="sb", out_signature="")
        def RefuseAcquire(self, mac: str, on: bool) -> None:  # noqa: N802
            self.server.device(str(mac)).refuse_acquire = bool(on)

        @dbus.service.method(CONTROL_IFACE, in_signature="s", out_signature="")
        def HangUp(self, mac: str) -> None:  # noqa: N802
            self.server._release(self.server.device(str(mac)))

        @dbus.service.method(CONTROL_IFACE, in_signature="si", out_signature="")
        def SetChunk(self, mac: str, chunk: int) -> None:  # noqa: N802
            self.server.device(str(mac)).chunk = max(1, int(chunk))

        @dbus.service.method(CONTROL_IFACE, in_signature="ss", out_signature="")
        def SetModel(self, mac: str, values: str) -> None:  # noqa: N802
            dev = self.server.device(str(mac))
            for model in dev.packs.values():
                for key, value in json.loads(str(values)).items():
                    setattr(model, key, set(value) if key == "faults" else value)

        @dbus.service.method(CONTROL_IFACE, in_signature="s", out_signature="s")
        def Stats(self, mac: str) -> str:  # noqa: N802
            dev = self.server.device(str(mac))
            return json.dumps({
                "writes": dev.writes, "notifications": dev.notifications,
                "connects": dev.connects, "connected": dev.connected,
                "notifying": dev.notifying, "present": dev.present,
                "acquired": self.server._acquired(dev), "acquires": dev.acquires,
                "write_acquired": dev.write_sock is not None,
            })  # fmt: skip

        @dbus.service.method(CONTROL_IFACE, in_signature="", out_signature="")
        def Stop(self) -> None:  # noqa: N802
            self.server.running = False

    return Control


def serve(address: str, adapters: list[str], devices: list[dict[str, Any]],
          rssi_interval: float = RSSI_INTERVAL, latency: float = 0.0) -> None:  # fmt: skip
    """Run the fake BlueZ on the bus at ``address`` until ``Stop`` or the bus goes away."""
    import dbus
    import dbus.bus
    import dbus.mainloop.glib

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    server = _Server(bus, rssi_interval, latency)
    bus.add_signal_receiver(lambda *_: setattr(server, "running", False),
                            signal_name="Disconnected", path="/org/freedesktop/DBus/Local",
                            dbus_interface="org.freedesktop.DBus.Local")  # fmt: skip
    control = _control_class()(server)
    for name in adapters:
        server.add_adapter(name)
    for spec in devices:
        control.AddDevice(spec["adapter"], spec["mac"], spec["name"], spec["family"],
                          json.dumps(spec["packs"]), spec.get("chunk", CHUNK))  # fmt: skip
    while server.running:
        server.glib.g_main_context_iteration(None, True)


# -- the client (tests, the demo): starts the bus and the server, drives the faults ------------


class FakeBluez:
    """A private D-Bus with the fake BlueZ on it, and its fault switches.

    Args:
        address: the D-Bus address to serve on; None starts a private ``dbus-daemon`` (stopped
            with :meth:`stop`).
        rssi_interval: s between the RSSI announcements of devices that are not connected.
        latency: s between a write and the first notification of its reply.
        startup_timeout: s to wait for the server to appear on the bus.
        adapters: adapters to start with (the command line's ``--adapter``).
        devices: devices to start with, ``ADAPTER/MAC/NAME/FAMILY[/key=value,...]`` (the
            command line's ``--device``, see :func:`device_spec`).

    ``DBUS_SYSTEM_BUS_ADDRESS`` must name :attr:`address` in the process that runs bleak
    (:meth:`install` sets it in this process; :meth:`env` gives it for a child's environment).

    """

    def __init__(
        self, address: str | None = None, rssi_interval: float = RSSI_INTERVAL,
        latency: float = 0.0, startup_timeout: float = 15.0, adapters: Sequence[str] = (),
        devices: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.rundir: str | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        if address is None:
            address = self._start_daemon()
        self.address = address
        cmd = [sys.executable, "-m", __name__, "--address", address,
               "--rssi-interval", str(rssi_interval), "--latency", str(latency)]  # fmt: skip
        cmd += [arg for name in adapters for arg in ("--adapter", name)]
        cmd += [arg for spec in devices for arg in ("--device", spec)]
        self.server: subprocess.Popen[bytes] | None = subprocess.Popen(cmd)
        import dbus.bus

        self.bus = dbus.bus.BusConnection(address)
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                self._proxy = self.bus.get_object(BLUEZ, CONTROL_PATH)
                self._proxy.Introspect(dbus_interface="org.freedesktop.DBus.Introspectable")
                if CONTROL_IFACE in str(self._proxy.Introspect()):
                    break
            except Exception:  # not on the bus yet
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake BlueZ did not start")
            time.sleep(0.05)
        self._control = __import__("dbus").Interface(self._proxy, CONTROL_IFACE)

    def _start_daemon(self) -> str:
        from bmsbank.demo import PRIVATE_BUS_CONF  # the demo's private bus: any name may be owned

        self.rundir = tempfile.mkdtemp(prefix="fakebluez-")
        conf = os.path.join(self.rundir, "bus.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(PRIVATE_BUS_CONF.format(sock=os.path.join(self.rundir, "bus.sock")))
        self.daemon = subprocess.Popen(
            ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={conf}",
             "--print-address=1"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # it warns that it may not raise its fd limit
        )  # fmt: skip
        assert self.daemon.stdout is not None
        line = self.daemon.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError("dbus-daemon did not start")
        return line

    def env(self) -> dict[str, str]:
        """The environment variables that point bleak (and D-Bus clients) at this bus."""
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def install(self) -> None:
        """Point this process's bleak at this bus (``DBUS_SYSTEM_BUS_ADDRESS``)."""
        os.environ.update(self.env())

    # -- adapters and devices ---------------------------------------------------------------
    def add_adapter(self, name: str = "hci0") -> None:
        """Add (or re-add) adapter ``name``; the devices it had come back with it."""
        self._control.AddAdapter(name)

    def remove_adapter(self, name: str) -> None:
        """Remove adapter ``name`` and everything under it (a dongle unplugged)."""
        self._control.RemoveAdapter(name)

    def add_device(
        self, adapter: str, mac: str, name: str, family: str,
        packs: Mapping[int, BatteryModel] | BatteryModel | None = None, chunk: int = CHUNK,
    ) -> None:  # fmt: skip
        """Add a BLE BMS of ``family`` advertising ``name`` at ``mac`` on ``adapter``.

        Args:
            adapter: the adapter it is seen on ("hci0").
            mac: its address ("AA:BB:CC:DD:EE:01").
            name: the local name it advertises ("JBD-SP04S001").
            family: the BMS family whose simulator answers behind it.
            packs: the packs its simulator answers for (one model: at the family's default
                address; None: a default :class:`BatteryModel`).
            chunk: notification size [bytes] (1: every byte in a notification of its own).

        """
        from bmsbank.services.poller import plugins

        if packs is None or isinstance(packs, BatteryModel):
            packs = {plugins.info(family).default_address: packs or BatteryModel()}
        data = json.dumps({str(a): model_to_dict(m) for a, m in packs.items()})
        self._control.AddDevice(adapter, mac, name, family, data, chunk)

    def vanish(self, mac: str) -> None:
        """Disconnect device ``mac`` and remove it from BlueZ (switched off, out of range)."""
        self._control.Vanish(mac)

    def restore(self, mac: str) -> None:
        """Bring a vanished device back (it advertises again)."""
        self._control.Restore(mac)

    def mute(self, mac: str, on: bool = True) -> None:
        """Make ``mac`` accept connections and writes but never notify."""
        self._control.Mute(mac, on)

    def garble(self, mac: str, on: bool = True) -> None:
        """Make ``mac`` reply with a corrupted byte in every frame."""
        self._control.Garble(mac, on)

    def foreign(self, mac: str, family: str | None) -> None:
        """Make ``mac`` answer every write with ``family``'s frames (None: its own again)."""
        self._control.Foreign(mac, family or "")

    def refuse_acquire(self, mac: str, on: bool = True) -> None:
        """Make ``AcquireNotify`` and ``AcquireWrite`` on ``mac`` fail (NotSupported)."""
        self._control.RefuseAcquire(mac, on)

    def hang_up(self, mac: str) -> None:
        """Close the acquired notification socket of ``mac``; the device stays connected."""
        self._control.HangUp(mac)

    def set_chunk(self, mac: str, chunk: int) -> None:
        """Notification size of ``mac`` from now on [bytes]."""
        self._control.SetChunk(mac, chunk)

    def set_model(self, mac: str, **values: Any) -> None:
        """Set attributes of the packs behind ``mac`` (``soc=55.0, current=-3.0``)."""
        self._control.SetModel(mac, json.dumps(values))

    def stats(self, mac: str) -> dict[str, Any]:
        """Counters and state of ``mac``.

        Keys: writes, notifications (either way), connects, acquires (granted AcquireNotify
        calls); connected, notifying (a StartNotify session), present, acquired (a socket is
        held now).
        """
        return dict(json.loads(str(self._control.Stats(mac))))

    def stop(self) -> None:
        """Stop the server and the private daemon (if this object started it)."""
        if self.server is not None:
            try:
                self._control.Stop(timeout=2.0)
            except Exception:  # already gone
                pass
            try:
                self.server.wait(2.0)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server = None
        try:
            self.bus.close()
        except Exception:  # already closed
            pass
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait()
            if self.daemon.stdout is not None:
                self.daemon.stdout.close()
            self.daemon = None
        if self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None

    def __enter__(self) -> FakeBluez:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def device_spec(text: str) -> dict[str, Any]:
    """``ADAPTER/MAC/NAME/FAMILY[/key=value,...]``: a device of the command line.

    Keys: ``chunk`` (notification size), else :class:`BatteryModel` attributes (``soc=55``,
    ``current=-3.5``, ``cells=8``), values in JSON.

    Raises:
        argparse.ArgumentTypeError: a malformed spec, an unknown family or model attribute.

    """
    from bmsbank.services.poller import plugins

    parts = text.split("/")
    if len(parts) not in (4, 5):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADAPTER/MAC/NAME/FAMILY[/k=v,...]")
    adapter, mac, name, family = parts[:4]
    extra: dict[str, Any] = {}
    try:
        for item in parts[4].split(",") if len(parts) == 5 else []:
            key, _, value = item.partition("=")
            extra[key.strip()] = json.loads(value)
        chunk = int(extra.pop("chunk", CHUNK))
        model = BatteryModel(**extra)
        address = plugins.info(family).default_address
    except (KeyError, TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
    return {"adapter": adapter, "mac": mac, "name": name, "family": family,
            "packs": {str(address): model_to_dict(model)}, "chunk": chunk}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Serve the fake BlueZ on ``--address`` (adapters and devices from the command line)."""
    p = argparse.ArgumentParser(prog="fakebluez", description=__doc__.splitlines()[0])
    p.add_argument(
        "--address",
        default=os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"),
        help="the D-Bus address to serve on (default: $DBUS_SYSTEM_BUS_ADDRESS)",
    )
    p.add_argument("--adapter", action="append", default=[], help="an adapter (hci0), repeatable")
    p.add_argument(
        "--device",
        action="append",
        default=[],
        type=device_spec,
        help="ADAPTER/MAC/NAME/FAMILY[/chunk=20,soc=55,...], repeatable",
    )
    p.add_argument("--rssi-interval", type=float, default=RSSI_INTERVAL)
    p.add_argument("--latency", type=float, default=0.0)  # fmt: skip
    args = p.parse_args(argv)
    if not args.address:
        p.error("no --address and no DBUS_SYSTEM_BUS_ADDRESS")
    serve(args.address, args.adapter, args.device, args.rssi_interval, args.latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
