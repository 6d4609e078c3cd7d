"""VeService (Venus BusItem service on dbus-fast) against a private dbus-daemon."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.introspection import Node

from bmsbank.services.publisher.dbus_service import IFACE, VeService

NAME = "com.victronenergy.battery.test"


def run(coro, timeout: float = 15.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


VALUES = {
    "/Mgmt/ProcessName": "test", "/DeviceInstance": 512, "/ProductId": 0xBA5B,
    "/CustomName": "bank", "/Connected": 1, "/Soc": 81.3, "/Dc/0/Voltage": 53.21,
    "/Dc/0/Current": -20.6, "/Dc/0/Temperature": None, "/Info/MaxChargeVoltage": 55.2,
    "/Info/MaxChargeCurrent": 100.0, "/Io/AllowToCharge": True,
}  # fmt: skip


def make_service(address: str) -> VeService:
    ve = VeService(address, NAME)
    for path, value in VALUES.items():
        ve.add_path(
            path, value, writable=path == "/CustomName", fmt="{:.1f}%" if path == "/Soc" else None,
            validator=(lambda v: isinstance(v, str) and len(v) <= 64)
            if path == "/CustomName" else None,
        )  # fmt: skip
    return ve


class Client:
    """A plain dbus-fast connection that calls the service and records its signals."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.signals: list[Message] = []

    async def __aenter__(self) -> Client:
        self.bus = await MessageBus(bus_address=self.address).connect()
        self.bus.add_message_handler(self._on_message)
        await self.dbus("AddMatch", "s", [f"type='signal',interface='{IFACE}'"])
        return self

    async def __aexit__(self, *exc) -> None:
        self.bus.disconnect()

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.interface == IFACE:
            self.signals.append(msg)

    async def dbus(self, member: str, signature: str = "", body: list | None = None) -> Message:
        return await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member=member, signature=signature, body=body or [],
        ))  # fmt: skip

    async def call(self, path: str, member: str, signature: str = "", body: list | None = None,
                   interface: str = IFACE) -> Message:  # fmt: skip
        return await self.bus.call(Message(
            destination=NAME, path=path, interface=interface, member=member, signature=signature,
            body=body or [],
        ))  # fmt: skip

    async def value(self, path: str):
        reply = await self.call(path, "GetValue")
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        return reply.body[0]

    async def sync(self) -> None:
        # Messages from one sender arrive in order: once a reply to a later call is here, every
        # signal the service sent before it has been delivered too.
        await self.value("/Soc")


async def started(address: str) -> VeService:
    ve = make_service(address)
    await ve.connect()
    return ve


def test_name_on_bus_and_get_items(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            names = (await c.dbus("ListNames")).body[0]
            assert NAME in names
            reply = await c.call("/", "GetItems")
            assert reply.signature == "a{sa{sv}}"
            items = reply.body[0]
            assert set(items) == set(VALUES)
            assert items["/Soc"]["Value"] == Variant("d", 81.3)
            assert items["/Soc"]["Text"] == Variant("s", "81.3%")
            assert items["/Dc/0/Temperature"]["Value"] == Variant("ai", [])
            assert items["/Dc/0/Temperature"]["Text"].value == "---"
        await ve.close()

    run(scenario())


def test_get_value_types_leaf_root_and_subtree(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            assert await c.value("/DeviceInstance") == Variant("i", 512)
            assert await c.value("/ProductId") == Variant("i", 0xBA5B)
            assert await c.value("/Soc") == Variant("d", 81.3)
            assert await c.value("/CustomName") == Variant("s", "bank")
            assert await c.value("/Io/AllowToCharge") == Variant("i", 1)  # bool -> int
            invalid = await c.value("/Dc/0/Temperature")
            assert invalid.signature == "ai" and invalid.value == []
            root = await c.value("/")
            assert root.signature == "a{sv}"
            assert root.value["Soc"] == Variant("d", 81.3)
            assert root.value["Dc/0/Voltage"] == Variant("d", 53.21)
            assert len(root.value) == len(VALUES)
            sub = await c.value("/Dc")
            assert set(sub.value) == {"0/Voltage", "0/Current", "0/Temperature"}
            assert set((await c.value("/Dc/0")).value) == {"Voltage", "Current", "Temperature"}
        await ve.close()

    run(scenario())


def test_get_text(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            reply = await c.call("/Soc", "GetText")
            assert reply.signature == "s" and reply.body == ["81.3%"]
            assert (await c.call("/Dc/0/Voltage", "GetText")).body == ["53.21"]
            assert (await c.call("/Dc/0/Temperature", "GetText")).body == ["---"]
            texts = (await c.call("/Dc/0", "GetText")).body[0]
            assert texts.value["Temperature"] == Variant("s", "---")
        await ve.close()

    run(scenario())


def test_unknown_path_and_method_are_errors(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            reply = await c.call("/Nope", "GetValue")
            assert reply.message_type is MessageType.ERROR
            assert reply.error_name == "org.freedesktop.DBus.Error.UnknownObject"
            reply = await c.call("/Soc", "Frobnicate")
            assert reply.message_type is MessageType.ERROR
            assert reply.error_name == "org.freedesktop.DBus.Error.UnknownMethod"
            reply = await c.call("/Soc", "GetItems")  # GetItems only on the root
            assert reply.error_name == "org.freedesktop.DBus.Error.UnknownMethod"
        await ve.close()

    run(scenario())


def test_set_value_read_only_is_refused(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            reply = await c.call("/Soc", "SetValue", "v", [Variant("d", 12.0)])
            assert reply.signature == "i" and reply.body[0] != 0
            assert await c.value("/Soc") == Variant("d", 81.3)
            reply = await c.call("/", "SetValue", "v", [Variant("d", 12.0)])
            assert reply.body[0] != 0
            await c.sync()
            assert c.signals == [] and ve.signals == 0
        await ve.close()

    run(scenario())


def test_set_value_custom_name_emits_properties_changed(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            reply = await c.call("/CustomName", "SetValue", "v", [Variant("s", "Garage bank")])
            assert reply.body == [0]
            assert await c.value("/CustomName") == Variant("s", "Garage bank")
            assert ve.get("/CustomName") == "Garage bank"
            await c.sync()
            assert [(s.path, s.member) for s in c.signals] == [("/CustomName", "PropertiesChanged")]
            assert c.signals[0].signature == "a{sv}"
            assert c.signals[0].body[0] == {
                "Value": Variant("s", "Garage bank"),
                "Text": Variant("s", "Garage bank"),
            }
            # wrong type and too long are rejected, nothing changes, nothing is emitted
            for bad in (Variant("i", 5), Variant("s", "x" * 65)):
                reply = await c.call("/CustomName", "SetValue", "v", [bad])
                assert reply.body[0] != 0
            assert await c.value("/CustomName") == Variant("s", "Garage bank")
            await c.sync()
            assert len(c.signals) == 1 and ve.signals == 1
        await ve.close()

    run(scenario())


def test_update_emits_one_items_changed_with_only_changed_paths(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            new = dict(VALUES)
            new.update({"/Soc": 82.0, "/Dc/0/Voltage": 53.4, "/Dc/0/Temperature": 24.5})
            assert await ve.update(new) == 3
            await c.sync()
            assert len(c.signals) == 1
            sig = c.signals[0]
            assert (sig.path, sig.member, sig.signature) == ("/", "ItemsChanged", "a{sa{sv}}")
            changes = sig.body[0]
            assert set(changes) == {"/Soc", "/Dc/0/Voltage", "/Dc/0/Temperature"}
            assert changes["/Soc"] == {"Value": Variant("d", 82.0), "Text": Variant("s", "82.0%")}
            assert changes["/Dc/0/Temperature"]["Value"] == Variant("d", 24.5)
            assert ve.signals == 1
            # no change: nothing at all
            assert await ve.update(new) == 0
            await c.sync()
            assert len(c.signals) == 1 and ve.signals == 1
            # back to invalid is a change, sent as an empty int array
            assert await ve.update({"/Dc/0/Temperature": None}) == 1
            await c.sync()
            assert c.signals[-1].body[0]["/Dc/0/Temperature"]["Value"] == Variant("ai", [])
            # a type change (1 -> 1.0) is a change too
            assert await ve.update({"/Connected": 1.0}) == 1
        await ve.close()

    run(scenario())


def test_local_set_value_emits_properties_changed(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            assert await ve.set_value("/Info/MaxChargeCurrent", 50.0)
            assert not await ve.set_value("/Info/MaxChargeCurrent", 50.0)
            await c.sync()
            assert [(s.path, s.member) for s in c.signals] == [
                ("/Info/MaxChargeCurrent", "PropertiesChanged")
            ]
            assert c.signals[0].body[0]["Value"] == Variant("d", 50.0)
        await ve.close()

    run(scenario())


def test_introspect(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            intro = "org.freedesktop.DBus.Introspectable"
            reply = await c.call("/", "Introspect", interface=intro)
            root = Node.parse(reply.body[0])
            assert {n.name for n in root.nodes} >= {"Soc", "Dc", "Info", "Mgmt", "CustomName"}
            busitem = next(i for i in root.interfaces if i.name == IFACE)
            assert {m.name for m in busitem.methods} >= {"GetValue", "GetText", "GetItems"}
            assert {s.name for s in busitem.signals} >= {"ItemsChanged"}
            dc0 = Node.parse((await c.call("/Dc/0", "Introspect", interface=intro)).body[0])
            assert {n.name for n in dc0.nodes} == {"Voltage", "Current", "Temperature"}
            leaf = Node.parse((await c.call("/Soc", "Introspect", interface=intro)).body[0])
            assert leaf.nodes == [] and any(i.name == IFACE for i in leaf.interfaces)
            reply = await c.call("/Nope", "Introspect", interface=intro)
            assert reply.message_type is MessageType.ERROR
        await ve.close()

    run(scenario())


def test_dbus_send_cli(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        proc = await asyncio.create_subprocess_exec(
            "dbus-send", f"--bus={dbus_address}", "--print-reply", f"--dest={NAME}", "/Soc",
            f"{IFACE}.GetValue", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        await ve.close()
        return proc.returncode, out.decode()

    code, out = run(scenario())
    assert code == 0, out
    assert "variant" in out and "double 81.3" in out


def test_close_releases_the_name_and_reconnects(dbus_address):
    async def scenario():
        ve = await started(dbus_address)
        async with Client(dbus_address) as c:
            await ve.close()
            assert not ve.connected
            assert NAME not in (await c.dbus("ListNames")).body[0]
            await ve.update({"/Soc": 90.0})  # while disconnected: stored, nothing emitted
            await ve.connect()
            assert await c.value("/Soc") == Variant("d", 90.0)
            assert ve.signals == 0
        await ve.close()

    run(scenario())


def test_name_already_owned_is_an_error(dbus_address):
    async def scenario():
        first = await started(dbus_address)
        second = make_service(dbus_address)
        with pytest.raises(ConnectionError):
            await second.connect()
        assert not second.connected
        await first.close()

    run(scenario())


def test_add_path_rejects_bad_paths():
    ve = VeService(None, NAME)
    ve.add_path("/Dc/0/Voltage", 1.0)
    for bad in ("/", "Soc", "/Dc/0", "/Dc/0/Voltage/X"):
        with pytest.raises(ValueError):
            ve.add_path(bad, 1)
    with pytest.raises(TypeError):
        ve.add_path("/List", [1, 2])
