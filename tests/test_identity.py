"""The bank's D-Bus identity: DeviceInstance from the settings service, custom name kept."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from dbus_fast import Message, Variant

from bmsbank.config import load
from bmsbank.services.publisher import identity, paths
from bmsbank.services.publisher.dbus_service import IFACE
from tests.settings_standin import SettingsStandIn
from tests.test_publisher_service import Rig, bank, run

UID = "bmsbank_house"  # from the bank name "house" in the test config
INSTANCE = f"/Settings/Devices/{UID}/ClassAndVrmInstance"
NAME_SETTING = f"/Settings/Devices/{UID}/CustomName"


async def until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def set_value(rig: Rig, path: str, value: Variant) -> int:
    reply = await rig.client.call(path, "SetValue", "v", [value])
    return reply.body[0]


def test_device_instance_claimed_from_settings_and_name_kept(tmp_path, dbus_address):
    async def scenario():
        settings = await SettingsStandIn(dbus_address).start()
        settings.values["/Settings/Devices/other/ClassAndVrmInstance"] = "battery:7"
        try:
            async with Rig(tmp_path, dbus_address, with_can=False) as rig:
                await rig.until("/Soc", Variant("d", 50.0), bank(soc=50.0))
                # 7 (configured) is taken by another battery: the settings service hands out 8
                assert await rig.value("/DeviceInstance") == Variant("i", 8)
                assert settings.values[INSTANCE] == "battery:8"
                assert await rig.value("/CustomName") == Variant("s", "house")
                assert await set_value(rig, "/CustomName", Variant("s", "Shed bank")) == 0
                await until(lambda: settings.values.get(NAME_SETTING) == "Shed bank")
                assert await rig.value("/Serial") == Variant("s", UID)
            # a restart gets the same instance and the name typed before
            async with Rig(tmp_path, dbus_address, with_can=False) as rig:
                await rig.until("/Soc", Variant("d", 50.0), bank(soc=50.0))
                assert await rig.value("/DeviceInstance") == Variant("i", 8)
                assert await rig.value("/CustomName") == Variant("s", "Shed bank")
            assert not (tmp_path / "names.json").exists()  # the settings service keeps it
        finally:
            settings.stop()

    run(scenario(), timeout=30)


def test_without_settings_service_configured_instance_and_names_file(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            await rig.until("/Soc", Variant("d", 50.0), bank(soc=50.0))
            assert await rig.value("/DeviceInstance") == Variant("i", 7)
            assert await set_value(rig, "/CustomName", Variant("s", "Boat")) == 0
            await until(lambda: (tmp_path / "names.json").exists())
            # wrong type, empty or too long: refused (2), nothing changes
            assert await set_value(rig, "/CustomName", Variant("i", 3)) == 2
            assert await set_value(rig, "/CustomName", Variant("s", "")) == 2
            assert await set_value(rig, "/CustomName", Variant("s", "x" * 65)) == 2
            # read-only paths: 1, value unchanged
            assert await set_value(rig, "/Soc", Variant("d", 99.0)) == 1
            assert await set_value(rig, "/DeviceInstance", Variant("i", 3)) == 1
            assert await rig.value("/Soc") == Variant("d", 50.0)
            assert await rig.value("/CustomName") == Variant("s", "Boat")
        assert json.loads((tmp_path / "names.json").read_text()) == {UID: "Boat"}
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            await rig.until("/Soc", Variant("d", 50.0), bank(soc=50.0))
            assert await rig.value("/CustomName") == Variant("s", "Boat")

    run(scenario(), timeout=30)


def test_broken_settings_service_falls_back_to_configured_instance(tmp_path, dbus_address):
    async def scenario():
        settings = await SettingsStandIn(dbus_address).start()
        settings.fail = True
        try:
            async with Rig(tmp_path, dbus_address, with_can=False) as rig:
                await rig.until("/Soc", Variant("d", 50.0), bank(soc=50.0))
                assert await rig.value("/DeviceInstance") == Variant("i", 7)
                assert settings.calls  # it was asked
        finally:
            settings.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("text", "element"),
    [("rs485:3", "rs485_3"), ("house", "house"), ("my.bank-1", "my_bank_1"), ("3x", "_3x")],
)
def test_bus_element(text, element):
    assert identity.bus_element(text) == element


@pytest.mark.parametrize("bad", ["battery", "battery:x", "solarcharger:3", "battery:1024", 5, None])
def test_parse_instance_rejects(bad):
    with pytest.raises(ValueError):
        identity.parse_instance(bad)


def test_unique_id_from_config(tmp_path):
    cfg = tmp_path / "b.toml"
    cfg.write_text('[bank]\nname = "my.boat"\n')
    assert paths.unique_id(load(str(cfg))) == "bmsbank_my_boat"
    cfg.write_text('[bank]\nname = "my.boat"\n[dbus]\nunique_id = "boat_2"\n')
    assert paths.unique_id(load(str(cfg))) == "boat_2"


def test_names_file_unreadable_is_ignored(tmp_path):
    path = tmp_path / "names.json"
    path.write_text("{not json")
    store = identity.NameStore(str(path))
    assert store.get("x", "default") == "default"
    store.put("x", "kept")
    assert identity.NameStore(str(path)).get("x", "default") == "kept"


def test_a_pack_keeps_its_device_instance_by_serial_when_recabled(tmp_path, dbus_address):
    """Issue 12: a pack's identity follows its BMS's serial number, not the port:address."""
    from bmsbank.schema import TOPIC_STATE
    from tests.factories import state_msg
    from tests.test_pack_services import packs
    from tests.test_pack_services import until as pack_until
    from tests.test_publisher_service import NAME

    at_1, at_2 = f"{NAME}_usb0_1", f"{NAME}_usb0_2"
    by_serial = f"/Settings/Devices/{UID}_sn_SN_42/ClassAndVrmInstance"

    async def scenario():
        settings = await SettingsStandIn(dbus_address).start()
        try:
            async with Rig(tmp_path, dbus_address, with_can=False) as rig:
                feed = [(b"bank", bank(packs=packs(True, True))),
                        (TOPIC_STATE, state_msg("usb0", 1, serial="SN-42")),
                        (TOPIC_STATE, state_msg("usb0", 2, seq=1))]  # fmt: skip
                await pack_until(rig, at_2, "/Connected", Variant("i", 1), feed)
                await pack_until(rig, at_1, "/Serial", Variant("s", "SN-42"), feed)
                first = settings.values[by_serial]
                assert f"/Settings/Devices/{UID}_usb0_2/ClassAndVrmInstance" in settings.values
                reply = await rig.client.bus.call(Message(
                    destination=at_1, path="/CustomName", interface=IFACE, member="SetValue",
                    signature="v", body=[Variant("s", "Pack by the door")]))  # fmt: skip
                assert reply.body[0] == 0
                await until(lambda: settings.values.get(by_serial.replace(
                    "ClassAndVrmInstance", "CustomName")) == "Pack by the door")  # fmt: skip
            # re-cabled: the same BMS now answers as usb0:2, and nothing is at usb0:1
            async with Rig(tmp_path, dbus_address, with_can=False) as rig:
                feed = [(b"bank", bank(packs=packs(False, True))),
                        (TOPIC_STATE, state_msg("usb0", 2, serial="SN-42"))]  # fmt: skip
                await pack_until(rig, at_2, "/Serial", Variant("s", "SN-42"), feed)
                instance = (await rig.client.bus.call(Message(
                    destination=at_2, path="/DeviceInstance", interface=IFACE,
                    member="GetValue"))).body[0].value  # fmt: skip
                assert f"battery:{instance}" == first
                name = (await rig.client.bus.call(Message(
                    destination=at_2, path="/CustomName", interface=IFACE,
                    member="GetValue"))).body[0].value  # fmt: skip
                assert name == "Pack by the door"
        finally:
            settings.stop()

    run(scenario(), timeout=40)
