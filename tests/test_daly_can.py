"""Daly CAN family and simulator: ids from public logs, the UART captures' data on CAN, bad input.

The data bytes of a Daly CAN reply are those of the UART frame of the same command (DSB decodes
both with the same layouts; AIR hands both to the same DalyMessageHandler), so the UART captures
of tests/test_daly.py, with their sources, are replayed here as CAN replies of board 1.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.errors import FrameError
from bmsbank.plausibility import default_bounds, implausible
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.can_family import CanFrame
from bmsbank.services.poller.plugins.daly import family as uart
from bmsbank.services.poller.plugins.daly_can.family import Family, reply_id, request_id
from bmsbank.services.poller.plugins.daly_can.simulator import Simulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.test_daly import CAPTURED, CYCLE_8S, CYCLE_83, CYCLE_83_CELLS

DSB = "mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/daly_can.py CAN_FRAMES"
AIR81 = "ai-republic/bms-to-inverter#81 (DALY_CAN log, 2024-11-24: SEND 40 01 98 18 08 ...)"
AIR34 = "ai-republic/bms-to-inverter#34 (DALY_CAN log, 2024-12-11: SEND 40 01 50 18 08 ...)"


def as_can(uart_frame: bytes) -> CanFrame:
    """The CAN reply carrying a UART reply's command, board and 8 data bytes."""
    return CanFrame(reply_id(uart_frame[1], uart_frame[2]), uart_frame[4:12], extended=True)


def replay(family: Family, replies: dict[int, str]) -> dict[int, dict[str, dict[str, Any]]]:
    """Captured UART replies (command -> frames as hex) through the family as CAN replies."""
    packs: dict[int, dict[str, dict[str, Any]]] = {}
    for text in replies.values():
        raw = bytes.fromhex(text)
        for i in range(0, len(raw), uart.FRAME_LENGTH):
            f = as_can(raw[i : i + uart.FRAME_LENGTH])
            address = family.address_of(f)
            assert address is not None
            family.accept(f, packs.setdefault(address, {}))
    return packs


def checked(family: Family, parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The state of ``parts`` as the input sends it: validated, plausible."""
    state = validate_state(make_state("can0", 1, family.name, 0, family.state(parts), {}))
    assert implausible(state, default_bounds()) is None
    return state


def test_registered_as_a_can_family() -> None:
    cls = plugins.plugin_class("daly_can")
    assert cls.name == "daly_can" and cls.info.link == "CAN" and cls.baudrate == 250000
    assert cls.multidrop and list(cls.addresses) == list(range(1, 17))
    assert plugins.simulator_class("daly_can").family is cls


def test_ids_as_public_drivers_and_logs_have_them() -> None:
    assert request_id(1, 0x90) == 0x18900140 and reply_id(1, 0x90) == 0x18904001  # DSB
    assert request_id(1, 0x95) == 0x18950140 and reply_id(1, 0x95) == 0x18954001  # DSB
    # AIR81: the request buffer "40 01 98 18" is the little-endian id 0x18980140;
    # AIR34: "40 01 50 18" = 0x18500140 (0x50 rated capacity, the first request)
    assert int.from_bytes(bytes.fromhex("40019818"), "little") == request_id(1, 0x98)
    assert int.from_bytes(bytes.fromhex("40015018"), "little") == request_id(1, 0x50)


def test_requests_of_a_cycle() -> None:
    family = Family()
    first = family.requests(2, 0)
    assert [f.id for f in first] == [request_id(2, c) for c in
                                     (0x50, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98)]  # fmt: skip
    assert all(f.extended and f.data == bytes(8) for f in first)  # DSB: 8 zero data bytes
    assert [f.id >> 16 & 0xFF for f in family.requests(2, 1)][0] == 0x90  # 0x50 not every cycle
    assert family.requests(2, 60)[0].id == request_id(2, 0x50)
    with pytest.raises(ValueError):
        family.requests(17, 0)


@pytest.mark.parametrize("cap", CAPTURED, ids=[f"{c.part}-{i}" for i, c in enumerate(CAPTURED)])
def test_uart_captures_as_can_replies(cap: Any) -> None:
    parts: dict[str, dict[str, Any]] = {}
    f = as_can(cap.raw)
    assert Family().address_of(f) == cap.raw[1]
    Family().accept(f, parts)
    expect = {k: v for k, v in cap.expect.items() if k != "frame"}
    name = cap.part if "frame" not in cap.expect else f"{cap.part}#{cap.expect['frame']}"
    for key, value in expect.items():
        assert parts[name][key] == pytest.approx(value), (cap.source, key)


@pytest.mark.parametrize("invert", [False, True])
def test_captured_cycle_16s_discharging(invert: bool) -> None:
    # tests/test_daly.py CYCLE_83 (jblance/mpp-solar#83): 16 cells in 16 frames of 0x95, one
    # sensor in two frames of 0x96; 0x93 says "discharging"
    family = Family({"invert_current": invert})
    state = checked(family, replay(family, CYCLE_83)[1])
    assert state["voltage"] == pytest.approx(53.2) and state["soc"] == pytest.approx(88.8)
    assert state["current"] == pytest.approx(2.1 if invert else -2.1)
    assert state["cells"] == pytest.approx(CYCLE_83_CELLS)
    assert state["temperatures"] == [15.0]
    assert state["remaining"] == pytest.approx(248.64) and state["cycles"] == 3


def test_captured_cycle_8s_with_balancing() -> None:
    # tests/test_daly.py CYCLE_8S: 8 cells in 3 frames, the 9th slot junk; 0x97 byte 0 = 0x90
    family = Family()
    state = checked(family, replay(family, CYCLE_8S)[1])
    assert state["cells"] == pytest.approx(
        [2.923, 3.138, 3.139, 3.132, 3.154, 3.139, 3.072, 3.144])  # fmt: skip
    assert state["balancing"] == [0, 0, 0, 0, 1, 0, 0, 1]
    assert state["charge_fet"] and not state["discharge_fet"]
    assert state["hardware"] == "Daly CAN"


@pytest.mark.parametrize(
    ("board", "model"),
    [(1, BatteryModel(current=-35.6)),
     (2, BatteryModel(cells=15, current=12.1, temperatures=[18.0, 22.0, 21.0, 19.0, 20.0,
                                                           23.0, 24.0, 25.0], cycles=77)),
     (16, BatteryModel(cells=24, capacity=280.0, discharge_fet=False, faults={"low_soc"}))],
    ids=["16S-discharging", "15S-8-sensors", "24S-board16"],
)  # fmt: skip
def test_simulator_round_trip(board: int, model: BatteryModel) -> None:
    family = Family()
    sim = Simulator({board: model, 3: BatteryModel()})
    parts: dict[int, dict[str, dict[str, Any]]] = {}
    for request in family.requests(board, 0):
        for reply in sim.answer(request):
            address = family.address_of(reply)
            assert address == board
            family.accept(reply, parts.setdefault(address, {}))
    state = checked(family, parts[board])
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.051)
    assert state["current"] == pytest.approx(model.effective_current, abs=0.051)
    assert state["soc"] == pytest.approx(model.bms_soc, abs=0.051)
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.0006)
    assert state["temperatures"] == pytest.approx(model.temperatures, abs=0.51)
    assert state["capacity"] == pytest.approx(model.capacity, abs=0.001)
    assert state["cycles"] == model.cycles
    assert (state["charge_fet"], state["discharge_fet"]) == (model.charge_fet,
                                                             model.discharge_fet)  # fmt: skip
    active = {k for k, v in state["alarms"].items() if v}
    assert active == model.active_alarms


def test_nobody_answers_a_board_that_is_not_there() -> None:
    sim = Simulator({1: BatteryModel()})
    assert all(sim.answer(r) == [] for r in Family().requests(2, 0))
    assert sim.answer(CanFrame(request_id(1, 0x90), bytes(7), True)) == []  # DLC 7


def test_a_missing_cell_frame_is_waited_for() -> None:
    family = Family()
    replies = dict(CYCLE_83)
    replies[uart.CELLS] = " ".join(replies[uart.CELLS].split()[:5])  # frames 1-5 of 6 needed
    parts = replay(family, replies)[1]
    with pytest.raises(FrameError) as err:
        family.state(parts)
    assert err.value.kind == "truncated" and "cells#6" in str(err.value)


@pytest.mark.parametrize(
    ("can_id", "data", "kind"),
    [(reply_id(1, 0x90), "02 14 00 00 75 45 03", "truncated"),  # DLC 7
     (reply_id(1, 0x77), "00" * 8, "unexpected"),  # no such command
     (reply_id(1, 0x90), "02 14 00 00 75 45 03 E9", "malformed"),  # SoC 100.1 %
     (reply_id(1, 0x94), "00 01 00 00 00 00 03 40", "malformed"),  # 0 cells
     (reply_id(1, 0x95), "11 0C FD 0C FE 0C FE 40", "malformed"),  # cell frame 17
     (reply_id(1, 0x96), "04 37 00 00 00 00 00 00", "malformed")],  # sensor frame 4
    ids=["dlc-7", "command", "soc", "cell-count", "cell-frame", "sensor-frame"],
)  # fmt: skip
def test_bad_replies_are_rejected_whole(can_id: int, data: str, kind: str) -> None:
    family = Family()
    parts = replay(family, CYCLE_83)[1]
    before = {k: dict(v) for k, v in parts.items()}
    with pytest.raises(FrameError) as err:
        family.accept(CanFrame(can_id, bytes.fromhex(data), True), parts)
    assert err.value.kind == kind
    assert parts == before


@pytest.mark.parametrize(
    "f",
    [CanFrame(request_id(1, 0x90), bytes(8), True),  # a request (another host's)
     CanFrame(0x18904001, bytes(8), False),  # a standard id cannot be this
     CanFrame(0x19904001, bytes(8), True), CanFrame(0x02F4, bytes(8), False)],
    ids=["request", "standard", "priority", "jk"],
)  # fmt: skip
def test_frames_that_are_no_replies(f: CanFrame) -> None:
    assert Family().address_of(f) is None
    with pytest.raises(FrameError) as err:
        Family().accept(f, {})
    assert err.value.kind == "unexpected"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFF), st.integers(1, 16), st.binary(max_size=8))
def test_fuzz_nothing_but_frame_errors(command: int, board: int, data: bytes) -> None:
    family = Family()
    parts: dict[str, dict[str, Any]] = {}
    try:
        family.accept(CanFrame(reply_id(board, command), data, True), parts)
    except FrameError as err:
        assert parts == {} and err.kind in ("unexpected", "truncated", "malformed")
    try:
        family.state(parts)
    except FrameError as err:
        assert err.kind == "truncated"


def test_cli_decodes_a_candump_of_one_cycle(capsys: pytest.CaptureFixture[str]) -> None:
    from bmsbank.cli import main

    family, sim = Family(), Simulator({2: BatteryModel(current=5.0)})
    replies = [r for q in family.requests(2, 0) for r in sim.answer(q)]
    assert main(["decode", "daly_can", *[f"{r.id:08X}#{r.data.hex()}" for r in replies]]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["bms"] == "daly_can" and state["address"] == 2
    assert state["current"] == pytest.approx(5.0) and len(state["cells"]) == 16
    assert main(["decode", "daly_can", "--address", "1",
                 *[f"{r.id:08X}#{r.data.hex()}" for r in replies]]) == 1  # fmt: skip
    assert "got packs none" in capsys.readouterr().err
