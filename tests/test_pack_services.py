"""Per-pack battery services: discovered like Venus does, cells shown, never limits, live."""

from __future__ import annotations

import asyncio
import time

from dbus_fast import Message, Variant
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.schema import TOPIC_STATE
from bmsbank.services.publisher.dbus_service import IFACE
from bmsbank.services.publisher.pack_paths import changed_values, pack_values
from tests.factories import state_msg
from tests.test_publisher_service import NAME, STALE_AFTER, Rig, bank, run

PACK = f"{NAME}_usb0_1"
CELLS = [3.301 + 0.002 * k for k in range(16)]


def packs(*online: bool) -> list[dict]:
    return [{"id": f"usb0:{k + 1}", "online": on} for k, on in enumerate(online)]


async def call(rig: Rig, dest: str, path: str, member: str, sig: str = "", body=None) -> Message:
    return await rig.client.bus.call(Message(
        destination=dest, path=path, interface=IFACE, member=member, signature=sig,
        body=body or [],
    ))  # fmt: skip


async def names(rig: Rig) -> list[str]:
    reply = await rig.client.dbus("ListNames")
    return [n for n in reply.body[0] if n.startswith("com.victronenergy.battery.")]


async def value(rig: Rig, dest: str, path: str):
    return (await call(rig, dest, path, "GetValue")).body[0]


async def until(rig: Rig, dest: str, path: str, expected, resend=(), timeout: float = 6.0):
    deadline = time.monotonic() + timeout
    while True:
        for topic, msg in resend:
            await rig.send(msg, topic)
        try:
            if await value(rig, dest, path) == expected:
                return
        except Exception:  # service not on the bus yet
            pass
        assert time.monotonic() < deadline, f"{dest}{path} never became {expected!r}"
        await asyncio.sleep(0.1)


def test_pack_service_discovered_with_cells_and_no_limits(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            balancing = [0] * 16
            balancing[1] = 1
            state = state_msg("usb0", 1, cells=CELLS, balancing=balancing, soh=97.0)
            feed = [(b"bank", bank(packs=packs(True, True))), (TOPIC_STATE, state)]
            await until(rig, PACK, "/Voltages/Cell16", Variant("d", 3.331), feed)
            assert sorted(await names(rig)) == [NAME, PACK]
            items = (await call(rig, PACK, "/", "GetItems")).body[0]
            assert not [p for p in items if p.startswith("/Info")]  # Venus keeps one BMS
            bank_items = (await call(rig, NAME, "/", "GetItems")).body[0]
            assert "/Info/MaxChargeVoltage" in bank_items
            got = {p: items[p]["Value"].value for p in items}
            assert [got[f"/Voltages/Cell{k}"] for k in range(1, 17)] == [round(c, 3) for c in CELLS]
            assert [got[f"/Balances/Cell{k}"] for k in range(1, 17)] == balancing
            assert got["/Voltages/Sum"] == round(sum(CELLS), 2)
            assert got["/Voltages/Diff"] == 0.03
            assert got["/System/MaxVoltageCellId"] == "C16"
            assert got["/System/Temperature2"] == 26.0
            assert (got["/Connected"], got["/Balancing"], got["/Soh"]) == (1, 1, 97.0)
            assert got["/DeviceInstance"] == 8  # configured 7 + 1 + position 0
            assert got["/Alarms/BmsCable"] == 0
            assert items["/Voltages/Cell1"]["Text"].value == "3.301V"
            # every path read one by one agrees with GetItems
            for path, entry in items.items():
                assert await value(rig, PACK, path) == entry["Value"], path
            # read-only: refused with 1 and unchanged
            reply = await call(rig, PACK, "/Voltages/Cell1", "SetValue", "v", [Variant("d", 4.0)])
            assert reply.body[0] == 1
            assert await value(rig, PACK, "/Voltages/Cell1") == Variant("d", 3.301)

    run(scenario())


def test_pack_signals_only_for_changes(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            first = state_msg("usb0", 1, cells=CELLS)
            feed = [(b"bank", bank(packs=packs(True))), (TOPIC_STATE, first)]
            await until(rig, PACK, "/Voltages/Cell1", Variant("d", 3.301), feed)
            owner = (await rig.client.dbus("GetNameOwner", "s", [PACK])).body[0]
            await asyncio.sleep(0.3)
            rig.client.signals.clear()
            # the same reading again (new seq and clock): nothing to tell
            await rig.send(state_msg("usb0", 1, seq=1, cells=CELLS), TOPIC_STATE)
            cells = list(CELLS)
            cells[2] = 3.400
            second = state_msg("usb0", 1, seq=2, cells=cells)
            await rig.send(second, TOPIC_STATE)
            await until(rig, PACK, "/Voltages/Cell3", Variant("d", 3.4))
            mine = [m for m in rig.client.signals if m.sender == owner]
            assert [m.member for m in mine] == ["ItemsChanged"]
            old, new = pack_values(first, True, 16, 2), pack_values(second, True, 16, 2)
            changed = {p for p in new if new[p] != old[p]}
            assert set(mine[0].body[0]) == changed
            assert {"/Voltages/Cell3", "/Voltages/Sum", "/Dc/0/Voltage"} <= changed

    run(scenario())


def test_pack_liveness_follows_bank_and_staleness(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            state = state_msg("usb0", 1, cells=CELLS)
            feed = [(b"bank", bank(packs=packs(True))), (TOPIC_STATE, state)]
            await until(rig, PACK, "/Soc", Variant("d", 60.0), feed)
            # the arbiter calls the pack offline: disconnected, unknown, cable alarm
            await until(rig, PACK, "/Connected", Variant("i", 0),
                        [(b"bank", bank(packs=packs(False)))])  # fmt: skip
            assert await value(rig, PACK, "/Alarms/BmsCable") == Variant("i", 2)
            assert (await value(rig, PACK, "/Soc")).signature == "ai"
            assert (await value(rig, PACK, "/Voltages/Cell1")).signature == "ai"
            # back online: the last state shows again
            await until(rig, PACK, "/Soc", Variant("d", 60.0), [(b"bank", bank(packs=packs(True)))])
            assert await value(rig, PACK, "/Connected") == Variant("i", 1)
            # the bank goes silent: after stale_after every pack is offline too
            silent = time.monotonic()
            await until(rig, PACK, "/Connected", Variant("i", 0), timeout=STALE_AFTER + 4)
            assert time.monotonic() - silent >= STALE_AFTER - 0.2
            assert await value(rig, PACK, "/Alarms/BmsCable") == Variant("i", 2)

    run(scenario(), timeout=25)


def health(warnings=(), median=0.5) -> dict:
    """A bank's cell_health of a 16-cell pack: cell 3 high, cell 16 not yet estimated."""
    resistance = [0.5] * 15 + [None]
    resistance[2] = 0.8
    return {"status": "learning", "resistance": resistance, "resistance_median": median,
            "capacity": [100.0] * 15 + [None], "steps": 12, "charges": 3,
            "warnings": list(warnings)}  # fmt: skip


def test_cell_health_on_the_pack_service_once_per_change(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            state = state_msg("usb0", 1, cells=CELLS)
            feed = [(b"bank", bank(packs=packs(True))), (TOPIC_STATE, state)]
            await until(rig, PACK, "/Soc", Variant("d", 60.0), feed)
            # nothing learnt yet: the paths exist (fixed from the start), unknown
            for path in ("/CellHealth/Status", "/CellHealth/Cell16/Resistance"):
                assert (await value(rig, PACK, path)).signature == "ai", path
            warning = "usb0:1 cell 3: resistance 1.6× the pack median (12 steps)"
            row = {"id": "usb0:1", "online": True, "cell_health": health([warning])}
            await until(rig, PACK, "/CellHealth/Status", Variant("s", "learning"),
                        [(b"bank", bank(packs=[row]))])  # fmt: skip
            items = (await call(rig, PACK, "/", "GetItems")).body[0]
            got = {p: items[p]["Value"].value for p in items if p.startswith("/CellHealth")}
            assert got["/CellHealth/Warnings"] == warning
            assert (got["/CellHealth/WarningCount"], got["/CellHealth/Steps"]) == (1, 12)
            assert got["/CellHealth/ResistanceMedian"] == 0.5
            assert got["/CellHealth/Cell3/Resistance"] == 0.8
            assert got["/CellHealth/Cell1/Capacity"] == 100.0
            assert items["/CellHealth/Cell16/Resistance"]["Value"].signature == "ai"
            assert items["/CellHealth/Cell3/Resistance"]["Text"].value == "0.80mOhm"
            assert items["/CellHealth/Cell1/Capacity"]["Text"].value == "100.0%"
            # the same cell health in the next banks: no signal; a change: one ItemsChanged
            owner = (await rig.client.dbus("GetNameOwner", "s", [PACK])).body[0]
            rig.client.signals.clear()
            for seq in (8, 9):
                await rig.send(bank(seq=seq, packs=[row]), b"bank")
            await asyncio.sleep(0.3)
            assert not [m for m in rig.client.signals if m.sender == owner]
            two = [warning, "usb0:1 cell 9: reaches 3.45 V first in 7 of the last 10 charges"]
            changed = {"id": "usb0:1", "online": True, "cell_health": health(two, 0.51)}
            await rig.send(bank(seq=10, packs=[changed]), b"bank")
            await until(rig, PACK, "/CellHealth/WarningCount", Variant("i", 2))
            mine = [m for m in rig.client.signals if m.sender == owner]
            assert [m.member for m in mine] == ["ItemsChanged"]
            assert set(mine[0].body[0]) == {"/CellHealth/Warnings", "/CellHealth/WarningCount",
                                            "/CellHealth/ResistanceMedian"}  # fmt: skip
            assert await value(rig, PACK, "/CellHealth/Warnings") == Variant("s", "\n".join(two))
            # learnt, not measured: kept while the pack is offline
            off = dict(changed, online=False)
            await until(rig, PACK, "/Connected", Variant("i", 0), [(b"bank", bank(packs=[off]))])
            assert await value(rig, PACK, "/CellHealth/WarningCount") == Variant("i", 2)

    run(scenario())


def test_pack_services_can_be_turned_off(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False,
                       dbus_extra="pack_services = false") as rig:  # fmt: skip
            state = state_msg("usb0", 1, cells=CELLS)
            await rig.until("/Soc", Variant("d", 81.3), bank(packs=packs(True)))
            for _ in range(5):
                await rig.send(state, TOPIC_STATE)
                await asyncio.sleep(0.1)
            assert await names(rig) == [NAME]
            assert rig.publisher.packs is None

    run(scenario())


def test_pack_values_shape():
    state = state_msg("usb0", 1, cells=CELLS[:4], temperatures=[20.0])
    values = pack_values(state, True, 4, 1)
    assert not [p for p in values if p.startswith("/Info")]
    assert values["/ConsumedAmphours"] == -40.0
    assert values["/System/MinTemperatureCellId"] == "T1"
    offline = pack_values(state, False, 4, 1)
    assert set(offline) == set(values)  # the same paths, whatever the state
    assert offline["/Voltages/Cell1"] is None and offline["/Connected"] == 0


def test_pack_switches_validated_and_reverted_when_nobody_answers(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            state = state_msg("usb0", 1, cells=CELLS)  # a JBD pack: every control offered
            jk = dict(state_msg("usb0", 2, cells=CELLS), bms="jkpb")  # no SoC reset on JK PB
            feed = [(b"bank", bank(packs=packs(True, True))), (TOPIC_STATE, state),
                    (TOPIC_STATE, jk)]  # fmt: skip
            jk_name = f"{NAME}_usb0_2"
            await until(rig, PACK, "/Io/ForceChargingOff", Variant("i", 0), feed)
            await until(rig, jk_name, "/Io/ForceChargingOff", Variant("i", 0), feed)
            assert (await value(rig, jk_name, "/Settings/ResetSoc")).signature == "ai"
            reply = await call(rig, jk_name, "/Settings/ResetSoc", "SetValue", "v",
                               [Variant("i", 1)])  # fmt: skip
            assert reply.body[0] == 1  # not offered for this family: read-only
            for bad in (Variant("i", 2), Variant("s", "1"), Variant("d", 1.0)):
                reply = await call(rig, PACK, "/Io/ForceChargingOff", "SetValue", "v", [bad])
                assert reply.body[0] == 2, bad
            # a valid write is taken at once; with no arbiter to carry it out it goes back
            reply = await call(rig, PACK, "/Io/ForceChargingOff", "SetValue", "v",
                               [Variant("i", 1)])  # fmt: skip
            assert reply.body[0] == 0
            assert await value(rig, PACK, "/Io/ForceChargingOff") == Variant("i", 1)
            await until(rig, PACK, "/Io/ForceChargingOff", Variant("i", 0), timeout=10)
            result = (await value(rig, PACK, "/Control/LastResult")).value
            assert result.startswith("charge off: failed: ") and "arbiter" in result

    run(scenario(), timeout=30)


def test_a_burst_of_states_is_handled_whole(tmp_path, dbus_address):
    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            feed = [(b"bank", bank(packs=packs(True))), (TOPIC_STATE, state_msg("usb0", 1))]
            await until(rig, PACK, "/Soc", Variant("d", 60.0), feed)
            await asyncio.sleep(0.5)  # the feed's last copies are in
            before = rig.publisher.counters.states
            for seq in range(1, 451):  # more than one wake-up's batch, back to back
                await rig.send(state_msg("usb0", 1, seq=seq, soc=seq / 10), TOPIC_STATE)
            await until(rig, PACK, "/Soc", Variant("d", 45.0))  # the last one shows
            assert rig.publisher.counters.states - before == 450  # none lost, none twice
            assert rig.publisher.counters.rejected == 0

    run(scenario())


def test_services_come_back_when_their_bus_connection_drops(tmp_path, dbus_address):
    """The keepers sleep while connected; a dropped connection wakes them and they reconnect."""

    async def scenario():
        async with Rig(tmp_path, dbus_address, with_can=False) as rig:
            state = state_msg("usb0", 1, cells=CELLS)
            feed = [(b"bank", bank(packs=packs(True))), (TOPIC_STATE, state)]
            await until(rig, PACK, "/Soc", Variant("d", 60.0), feed)
            await until(rig, NAME, "/Connected", Variant("i", 1))
            assert rig.publisher.packs is not None and rig.publisher.ve is not None
            bank_service = rig.publisher.ve
            pack_service = rig.publisher.packs.services["usb0:1"].ve
            old = (bank_service.bus, pack_service.bus)
            assert None not in old
            for bus in old:  # as when the daemon closes a connection under the service
                bus.disconnect()
            await until(rig, PACK, "/Soc", Variant("d", 60.0), feed)
            await until(rig, NAME, "/Connected", Variant("i", 1))
            assert bank_service.bus not in (None, old[0])
            assert pack_service.bus not in (None, old[1])
            assert sorted(await names(rig)) == [NAME, PACK]

    run(scenario(), timeout=25)


readings = st.fixed_dictionaries({
    "current": st.sampled_from([-5.0, 0.0, 5.04, 5.06]),
    "cells": st.lists(st.sampled_from([3.3, 3.3004, 3.301, 3.4]), min_size=4, max_size=4),
    "balancing": st.lists(st.sampled_from([0, 1]), min_size=4, max_size=4),
    "temperatures": st.lists(st.sampled_from([20.0, 20.04, 21.0, -3.0]), min_size=1, max_size=2),
    "alarms": st.dictionaries(st.sampled_from(["low_voltage", "high_temperature"]),
                              st.sampled_from([0, 1, 2])),
    "charge_fet": st.booleans(),
    "soc": st.sampled_from([50.0, 50.04, 61.0]),
})  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(readings, min_size=2, max_size=5))
def test_paths_by_difference_give_exactly_the_full_computation(steps):
    """Applying changed_values step after step leaves every path as pack_values would set it."""
    states = [state_msg("usb0", 1, **step) for step in steps]
    shown = pack_values(states[0], True, 4, 2)
    for old, new in zip(states[:-1], states[1:], strict=True):
        update = changed_values(old, new, 4, 2)
        assert set(update) <= set(shown)  # never a path the service does not have
        shown.update(update)
        assert shown == pack_values(new, True, 4, 2)
