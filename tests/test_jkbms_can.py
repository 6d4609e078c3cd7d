"""JK BMS CAN family and simulator: published frames, ids and addresses, layouts, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.errors import FrameError
from bmsbank.plausibility import default_bounds, implausible
from bmsbank.schema import ALARM, WARNING, validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.can_family import CanFrame
from bmsbank.services.poller.plugins.jkbms_can.family import Family
from bmsbank.services.poller.plugins.jkbms_can.simulator import Simulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state

# Sources. DOC is a file of the public code index whose repository the search did not name.
DOC = "JK 'CAN BMS_BB_PKG V1.0' protocol, markdown copy (code index id 57104495051)"
DSB = "mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/jkbms_can.py"
DSB288 = "mr-manuel/venus-os_dbus-serialbattery#288 (address 2 sends 2F6, 4F6, 5F6)"
AIR = ("ai-republic/bms-to-inverter bms-jk-can/src/main/java/com/airepublic/bmstoinverter/bms/"
       "jk/can/JKBmsCANProcessor.java main()")  # fmt: skip
AIR99 = "ai-republic/bms-to-inverter#99 (JK-PB1A16S-10P, log of 2025-02-09)"


def frame(can_id: int, hex_data: str) -> CanFrame:
    """A frame as python-can delivers it: extended when the id needs 29 bits."""
    return CanFrame(can_id, bytes.fromhex(hex_data), extended=can_id > 0x7FF)


def accept(family: Family, *frames: CanFrame) -> dict[int, dict[str, dict[str, Any]]]:
    """Every frame into its pack's parts, as the CAN input hands them over."""
    packs: dict[int, dict[str, dict[str, Any]]] = {}
    for f in frames:
        address = family.address_of(f)
        assert address is not None, hex(f.id)
        family.accept(f, packs.setdefault(address, {}))
    return packs


def checked(family: Family, parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The state of ``parts`` as the input sends it: validated, plausible."""
    state = validate_state(make_state("can0", 0, family.name, 0, family.state(parts), {}))
    assert implausible(state, default_bounds()) is None
    return state


def test_registered_as_a_can_family() -> None:
    cls = plugins.plugin_class("jkbms_can")
    assert cls.name == "jkbms_can" and cls.info.link == "CAN"
    assert cls.baudrate == 250000  # DOC §3: "The communication baud rate is 250kbps"
    assert list(cls.addresses) == list(range(16)) and cls.default_address == 0
    assert plugins.simulator_class("jkbms_can").family is cls
    assert cls().requests(0, 0) == ()  # the BMS broadcasts: nothing to ask
    assert "alarms" in cls.transient  # ALM_INFO is sent only while an alarm is active (DOC)


def test_doc_example_of_the_per_cell_frame() -> None:
    # DOC §5.9: "0x18E028F4 AD 0E AB 0E A3 0E A6 0E" = cells 1-4: 3757, 3755, 3747, 3750 mV
    parts = accept(Family(), frame(0x18E028F4, "AD 0E AB 0E A3 0E A6 0E"))[0]
    assert parts["cells1"]["cells"] == pytest.approx([3.757, 3.755, 3.747, 3.750])


def test_air_sample_battery_status() -> None:
    # AIR: ED 01 A0 0F 33 = 0x01ED 49.3 V, 0x0FA0 = 4000 dA - 4000 = 0 A, 0x33 = 51 %
    parts = accept(Family(), frame(0x02F4, "ED 01 A0 0F 33 00 00 00"))[0]
    assert parts["status"]["voltage"] == pytest.approx(49.3)
    assert parts["status"]["current"] == pytest.approx(0.0, abs=1e-9)
    assert parts["status"]["soc"] == 51


def test_pb_capture_of_cell_range_with_max_under_min() -> None:
    # AIR99: 0x04F4 D1 0C 01 D2 0C 04: "max" 3281 mV at #1, "min" 3282 mV at #4 (a real frame:
    # decoded as sent, not rejected; the state does not use it)
    parts = accept(Family(), frame(0x04F4, "D1 0C 01 D2 0C 04 00 00"))[0]
    assert parts["cell_range"] == {"max_cell": pytest.approx(3.281), "max_cell_no": 1,
                                   "min_cell": pytest.approx(3.282), "min_cell_no": 4}  # fmt: skip


@pytest.mark.parametrize(
    ("can_id", "address"),
    [(0x02F6, 2), (0x04F6, 2), (0x05F6, 2),  # DSB288
     (0x02F4, 0), (0x18E028F7, 3), (0x18F12903, 15), (0x0303, 15)],  # id + address, carried
)  # fmt: skip
def test_the_address_is_added_to_every_id(can_id: int, address: int) -> None:
    assert Family().address_of(frame(can_id, "00" * 8)) == address


@pytest.mark.parametrize(
    "f",
    [frame(0x02E4, "00" * 8), frame(0x0304, "00" * 8),  # below 0x2F4, past address 15
     CanFrame(0x02F4, bytes(8), extended=True),  # a standard id sent as extended
     CanFrame(0x18F128F4, bytes(8), extended=False), frame(0x18904001, "00" * 8)],
    ids=["below", "address-16", "ext-2F4", "std-BATT_ST2", "daly-reply"],
)  # fmt: skip
def test_other_devices_frames_are_not_this_familys(f: CanFrame) -> None:
    family = Family()
    assert family.address_of(f) is None
    with pytest.raises(FrameError) as err:
        family.accept(f, {})
    assert err.value.kind == "unexpected"


@pytest.mark.parametrize(
    ("raw", "amps"), [("A0 0F", 0.0), ("04 10", 10.0), ("3C 0F", -10.0), ("00 00", -400.0)]
)
def test_current_offset_and_sign(raw: str, amps: float) -> None:
    # DOC §5.1: 0.1 A, offset -400 A (raw 4000 = 0 A); DSB and AIR read + = charge
    for invert, sign in ((False, 1.0), (True, -1.0)):
        family = Family({"invert_current": invert})
        parts = accept(family, frame(0x02F4, f"10 02 {raw} 32 00 00 00"))[0]
        assert parts["status"]["current"] == pytest.approx(sign * amps, abs=1e-9)


def test_battery_status_2_layouts() -> None:
    # remaining 0x03E8 = 100.0 Ah, full 0x07D0 = 200.0 Ah (all agree); bytes 4-7 2A 00 64 00:
    # DOC: cycles 42 at byte 4, SoH 100 % at byte 6; DSB/AIR: cycles at bytes 6-7 = 100
    data = "E8 03 D0 07 2A 00 64 00"
    model = BatteryModel()
    for protocol, cycles, soh in (("bb_pkg", 42, 100.0), ("v1", 100, None)):
        family = Family({"protocol": protocol})
        parts = accept(family, *Simulator({0: model}, protocol).broadcast())[0]
        family.accept(frame(0x18F128F4, data), parts)
        state = family.state(parts)
        assert (state["remaining"], state["capacity"]) == pytest.approx((100.0, 200.0))
        assert state["cycles"] == cycles and state["soh"] == soh


@pytest.mark.parametrize(
    ("protocol", "pairs", "expect"),
    [("bb_pkg", 0b10_01, {"low_voltage": WARNING, "low_cell_voltage": ALARM}),  # DOC §5.4
     ("v1", 0b10_01, {"high_cell_voltage": WARNING, "low_cell_voltage": ALARM}),  # DSB, AIR
     ("bb_pkg", 3 << 24, {"low_soc": ALARM}), ("v1", 3 << 20, {"low_soc": ALARM}),
     ("v1", 1 << 28, {"internal_failure": WARNING})],
)  # fmt: skip
def test_alarm_pairs(protocol: str, pairs: int, expect: dict[str, int]) -> None:
    family = Family({"protocol": protocol})
    parts = accept(family, *Simulator({0: BatteryModel()}, protocol).broadcast())[0]
    assert "alarms" not in parts  # no alarm, no ALM_INFO
    assert not any(family.state(parts)["alarms"].values())  # every alarm reported, all OK
    family.accept(frame(0x07F4, pairs.to_bytes(4, "little").hex() + "0000"), parts)
    alarms = family.state(parts)["alarms"]
    assert {k: v for k, v in alarms.items() if v} == expect


@pytest.mark.parametrize("protocol", ["bb_pkg", "v1"])
@pytest.mark.parametrize(
    ("address", "model"),
    [(0, BatteryModel(current=-42.7, soc=35.0)),
     (5, BatteryModel(cells=14, current=18.4, temperatures=[31.0, 12.0, 20.0], cycles=250)),
     (15, BatteryModel(cells=24, capacity=280.0, imbalance=0.02, charge_fet=False)),
     (9, BatteryModel(cells=32, soc=99.0, discharge_fet=False, faults={"high_temperature"}))],
    ids=["16S-discharging", "14S-charging", "24S-addr15", "32S-alarm"],
)  # fmt: skip
def test_simulator_round_trip(protocol: str, address: int, model: BatteryModel) -> None:
    family = Family({"protocol": protocol})
    sim = Simulator({address: model, 1: BatteryModel()}, protocol)
    packs = accept(family, *sim.broadcast())
    assert sorted(packs) == sorted({address, 1})
    state = checked(family, packs[address])
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.051)
    assert state["current"] == pytest.approx(model.effective_current, abs=0.051)
    assert state["soc"] == pytest.approx(model.bms_soc, abs=0.51)
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.0006)
    assert state["capacity"] == pytest.approx(model.capacity, abs=0.051)
    assert state["temperatures"] == [min(model.temperatures), max(model.temperatures)] or (
        state["temperatures"] == [max(model.temperatures), min(model.temperatures)]
    )
    assert state["charge_fet"] == model.charge_fet
    assert state["discharge_fet"] == model.discharge_fet
    active = {k for k, v in state["alarms"].items() if v}
    assert active == model.active_alarms & set(state["alarms"])


def test_firmware_without_per_cell_frames_gives_no_state() -> None:
    """The min/max-only firmware (DSB's "V1"): no cells to report, no made-up ones."""
    family = Family()
    frames = [f for f in Simulator({0: BatteryModel()}).broadcast()
              if not 0x18E0 <= f.id >> 16 <= 0x18E7]  # fmt: skip
    parts = accept(family, *frames)[0]
    assert "cell_range" in parts
    with pytest.raises(FrameError) as err:
        family.state(parts)
    assert err.value.kind == "truncated"


def test_a_cell_frame_still_due_is_waited_for() -> None:
    family = Family()
    frames = Simulator({0: BatteryModel(cells=16)}).broadcast()
    last = [f for f in frames if f.id == 0x18E328F4]
    parts = accept(family, *[f for f in frames if f not in last])[0]
    with pytest.raises(FrameError) as err:  # 12 cells sum to 3/4 of the pack: frame 4 is due
        family.state(parts)
    assert err.value.kind == "truncated"
    gap = dict(parts)
    del gap["cells2"]
    gap["cells4"] = accept(family, *last)[0]["cells4"]
    with pytest.raises(FrameError) as err:  # frames 1, 3, 4 without 2
        family.state(gap)
    assert err.value.kind == "truncated"
    family.accept(last[0], parts)
    assert len(family.state(parts)["cells"]) == 16


def test_cells_option_cuts_the_slots() -> None:
    model = BatteryModel(cells=14)
    parts = accept(Family(), *Simulator({0: model}).broadcast())[0]
    assert parts["cells4"]["cells"][2:] == [0.0, 0.0]  # slots 15-16 unused
    assert len(Family({"cells": 14}).state(parts)["cells"]) == 14
    assert len(Family().state(parts)["cells"]) == 14  # trailing zero slots dropped
    with pytest.raises(FrameError) as err:  # 17 wanted: frame 5 is not sent
        Family({"cells": 17}).state(parts)
    assert err.value.kind == "truncated"


@pytest.mark.parametrize(
    ("can_id", "data", "kind"),
    [(0x02F4, "ED 01 A0 0F", "truncated"),  # SoC missing
     (0x04F4, "D1 0C 01 D2 0C", "truncated"),
     (0x18E028F4, "AD 0E AB 0E A3 0E", "truncated"),  # 3 of 4 cells
     (0x18F528F4, "", "truncated"),
     (0x02F4, "ED 01 A0 0F 65 00 00 00", "malformed"),  # SoC 101 %
     (0x02F4, "ED 01 B1 36 32 00 00 00", "malformed"),  # 0x36B1 = 1001.7 A - 400
     (0x02F4, "11 27 A0 0F 32 00 00 00", "malformed"),  # 1000.1 V
     (0x18E128F4, "AD 0E 89 13 A3 0E A6 0E", "malformed"),  # 0x1389 = 5001 mV
     (0x05F4, "FB 01 46 02 4B 00 00 00", "malformed")],  # 251 - 50 = 201 °C
    ids=["status-4", "range-5", "cells-6", "switches-0", "soc", "current", "voltage", "cell",
         "temperature"],
)  # fmt: skip
def test_bad_frames_are_rejected_whole(can_id: int, data: str, kind: str) -> None:
    family = Family()
    parts = accept(family, *Simulator({0: BatteryModel()}).broadcast())[0]
    before = {k: dict(v) for k, v in parts.items()}
    with pytest.raises(FrameError) as err:
        family.accept(frame(can_id, data), parts)
    assert err.value.kind == kind
    assert parts == before  # never half-decoded: the pack keeps its last good values


def test_frames_the_state_does_not_use_are_skipped() -> None:
    family = Family()
    parts: dict[str, dict[str, Any]] = {}
    for can_id in (0x18F228F4, 0x18F328F4, 0x18F428F4, 0x1806E5F4):
        family.accept(frame(can_id, "01 4B 4C 4D 00 00 00 00"), parts)
    assert parts == {}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0x1FFFFFFF), st.binary(max_size=8), st.booleans())
def test_fuzz_nothing_but_frame_errors(can_id: int, data: bytes, extended: bool) -> None:
    family = Family()
    f = CanFrame(can_id, data, extended)
    parts: dict[str, dict[str, Any]] = {}
    try:
        family.accept(f, parts)
    except FrameError as err:
        assert parts == {} and err.kind in ("unexpected", "truncated", "malformed")
    try:
        family.state(parts)
    except FrameError as err:
        assert err.kind == "truncated"


def candump(frames: list[CanFrame]) -> list[str]:
    """The frames as candump prints them: ``ID#DATA`` (8 hex digits: a 29-bit id)."""
    return [f"{f.id:08X}#{f.data.hex()}" if f.extended else f"{f.id:03X}#{f.data.hex()}"
            for f in frames]  # fmt: skip


def test_cli_decodes_a_candump_of_one_broadcast(capsys: pytest.CaptureFixture[str]) -> None:
    from bmsbank.cli import main

    model = BatteryModel(cells=16, current=-7.5)
    frames = Simulator({4: model}).broadcast()
    other = CanFrame(0x351, bytes(8))  # another device on the bus: counted, skipped
    assert main(["decode", "jkbms_can", *candump([other, *frames])]) == 0
    out, err = capsys.readouterr()
    state = json.loads(out)
    assert state["bms"] == "jkbms_can" and state["address"] == 4
    assert state["current"] == pytest.approx(-7.5) and len(state["cells"]) == 16
    assert state["link"]["unexpected"] == 1 and "ignored 1 frame" in err
    # the per-cell frames left out: the parts, and why there is no state
    assert main(["decode", "jkbms_can", *candump(frames[:5])]) == 1
    assert "incomplete state" in capsys.readouterr().err
    bad = candump([CanFrame(0x2F4, bytes.fromhex("ED01A00F65"))])  # SoC 101 %
    assert main(["decode", "jkbms_can", *bad]) == 1
    assert "rejected (malformed)" in capsys.readouterr().err
    assert main(["decode", "jkbms_can", "2F4ED01"]) == 2  # not ID#DATA
