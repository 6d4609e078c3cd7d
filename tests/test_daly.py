"""Daly "A5" plugin and simulator: captured frames and poll cycles, Daly specifics, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from bmsbank.errors import ControlError, FrameError, LinkTimeout
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.decode import decode_replies
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, run_query
from bmsbank.services.poller.plugins.daly.family import (
    CELLS,
    CHARGE_MOS,
    SET_SOC,
    SOC,
    STATUS,
    Family,
    pack_frame,
    request,
)
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import (
    Captured,
    MultidropContract,
    MultiFrameContract,
    SimLink,
    extract_all,
    poll,
)

# Sources. Index ids are files of the public code index whose repository the search did not name.
MPP83 = "jblance/mpp-solar#83 (firemen027, 2021-04-24) = mppsolar/protocols/daly.py test_responses"
MPP_TEST = "jblance/mpp-solar tests/integration/test_protocol_daly.py"
LOG360 = "16S/360 Ah poll log, '# Read:' lines of a python test (code index id 4829001134)"
SET_K = "16S JS reader comment 'MASTER SEND A5 80 .. RESPONSE A5 01' (code index id 4812209082)"
CPY8S = "CircuitPython Daly gateway, 8S demo payload (code index id 49350529327)"
NORDIC = "nordic_http_log JS comment, 7S (code index id 18754103785)"

CAPTURED = [
    # mpp-solar#83, one 16S/280 Ah pack, one cycle (host 0x80). 0x90: 53.2 V, acquired 0,
    # raw 0x7545 = 30021, SoC 88.8 %. mpp-solar expects +2.1 A ((raw - 30000) / 10); the same
    # cycle's 0x93 says "discharging", so the plugin gives -2.1 A (see the family docstring).
    Captured(MPP83, "a5 01 90 08 02 14 00 00 75 45 03 78 89", "soc",
             {"voltage": 53.2, "acquired_voltage": 0.0, "current": -2.1, "soc": 88.8}),
    # 0x93 of that cycle: state 2 (discharging), both FETs on, heartbeat 0x78, 0x0003CB40 mAh.
    Captured(MPP83, "a5 01 93 08 02 01 01 78 00 03 cb 40 cb", "fets",
             {"mode": 2, "charge_fet": 1, "discharge_fet": 1, "life": 120, "remaining": 248.64}),
    # 0x94: 16 cells, 1 sensor, charger/load off, cycles 3 (mpp-solar expects 3), byte 7 0x40.
    Captured(MPP_TEST, "a5 01 94 08 10 01 00 00 00 00 03 40 96", "status",
             {"cell_count": 16, "sensor_count": 1, "charger": 0, "load": 0, "cycles": 3}),
    # 0x91: max 3.328 V cell 15, min 3.326 V cell 1 (mpp-solar's expectation); tail = SoC bytes.
    Captured(MPP_TEST, "a5 01 91 08 0d 00 0f 0c fe 01 03 78 e1", "cell_range",
             {"max_cell": 3.328, "max_cell_no": 15, "min_cell": 3.326, "min_cell_no": 1}),
    # 0x92: 0x37 - 40 = 15 °C at sensor 1, both max and min.
    Captured(MPP83, "a5 01 92 08 37 01 37 01 fe 01 03 78 2a", "temperature_range",
             {"max_temperature": 15.0, "min_temperature": 15.0, "max_sensor_no": 1}),
    # 0x93, another moment: stationary, heartbeat 154, 172.76 Ah (mpp-solar's expectation).
    Captured(MPP_TEST, "a5 01 93 08 00 01 01 9a 00 02 a2 d8 59", "fets",
             {"mode": 0, "life": 154, "remaining": 172.76}),
    # 0x95 frame 1 of the #83 burst: 0x0CFD 0x0CFE 0x0CFE mV (mpp-solar: 3.325, 3.326, 3.326).
    Captured(MPP83, "a5 01 95 08 01 0c fd 0c fe 0c fe 40 a1", "cells",
             {"frame": 1, "cells": [3.325, 3.326, 3.326]}),
    # 0x96 frame 1: sensor 1 = 15 °C, the six unused slots 0x00 = -40 °C.
    Captured(MPP83, "a5 01 96 08 01 37 00 00 00 00 00 00 7c", "temperatures",
             {"frame": 1, "temperatures": [15.0] + [-40.0] * 6}),
    # The 360 Ah log, cycle A: 51.5 V, raw 30500 (discharging: 0x93 state 2 below) = -50.0 A,
    # SoC 82.4 %; 0x93: 296.64 Ah (= 82.4 % of 360 Ah); 0x94: 16 cells, DI2 set, cycles 5;
    # 0x95 frame 1: 3242, 3221, 3161 mV; 0x92: 31 °C.
    Captured(LOG360, "a5 01 90 08 02 03 00 00 77 24 03 38 19", "soc",
             {"voltage": 51.5, "current": -50.0, "soc": 82.4}),
    Captured(LOG360, "a5 01 93 08 02 01 01 71 00 04 86 c0 00", "fets",
             {"mode": 2, "charge_fet": 1, "discharge_fet": 1, "remaining": 296.64}),
    Captured(LOG360, "a5 01 94 08 10 01 00 00 02 00 05 c0 1a", "status",
             {"cell_count": 16, "sensor_count": 1, "dio": 2, "cycles": 5}),
    Captured(LOG360, "a5 01 95 08 01 0c aa 0c 95 0c 59 c0 c0", "cells",
             {"frame": 1, "cells": [3.242, 3.221, 3.161]}),
    Captured(LOG360, "a5 01 92 08 47 01 47 01 13 05 03 38 23", "temperature_range",
             {"max_temperature": 31.0, "min_temperature": 31.0}),
    # cycle B: 52.2 V, raw 30187 = -18.7 A (0x93 state 2), 88.0 %.
    Captured(LOG360, "a5 01 90 08 02 0a 00 00 75 eb 03 70 1d", "soc",
             {"voltage": 52.2, "current": -18.7, "soc": 88.0}),
    # Set K: no balancing; 0x98 byte 2 bit 7 = SoC low, level 2.
    Captured(SET_K, "A5 01 97 08 00 00 00 00 00 00 00 00 45", "balance", {"balance": [0] * 6}),
    Captured(SET_K, "A5 01 98 08 00 00 80 00 00 00 00 00 C6", "failure",
             {"failure": [0, 0, 0x80, 0, 0, 0, 0], "fault_code": 0}),
    # 7S: 0x93 idle, heartbeat 0x4D, 0x2382 = 9090 mAh.
    Captured(NORDIC, "A5 01 93 08 00 01 01 4D 00 00 23 82 35", "fets", {"remaining": 9.09}),
    # Idle packs (raw 30000 = 0 A): 57.0 V 49.3 %; 16.2 V 89.6 % (Daly Y-series, host 0x40);
    # 25.7 V 32.6 %; 4 cells with 2 sensors.
    Captured("maland16/daly-bms-uart README.md", "A5 01 90 08 02 3A 00 00 75 30 01 ED 0D",
             "soc", {"voltage": 57.0, "current": 0.0, "soc": 49.3}),
    Captured("patagonaa/esphome-daly-hkms-bms#9", "a5 01 90 08 00 a2 00 00 75 30 03 80 08",
             "soc", {"voltage": 16.2, "current": 0.0, "soc": 89.6}),
    Captured("ForrestFire0/GenericBMSArduino#4", "a5 01 90 08 01 01 00 00 75 30 01 46 2c",
             "soc", {"voltage": 25.7, "current": 0.0, "soc": 32.6}),
    Captured("fl4p/batmon-ha#416 snoop (code index id 70875400348)",
             "a501940804020000000000438b", "status", {"cell_count": 4, "sensor_count": 2}),
]  # fmt: skip

# Whole cycles of one pack at one moment, command -> every frame of its reply.
CYCLE_83 = {  # MPP83: 16 cells in 16 frames (frames 7-16 empty), 0x96 in 2 frames for 1 sensor
    SOC: "a5019008021400007545037889",
    0x93: "a5019308020101780003cb40cb",
    STATUS: "a5019408100100000000034096",
    CELLS: "a5019508010cfd0cfe0cfe40a1 a5019508020cfe0cfe0cfe40a3 a5019508030cfe0cfe0cfe40a4"
    " a5019508040cfe0cfc0cfe40a3 a5019508050cfe0cff0cfe40a7 a5019508060cfc000000004091"
    " a501950807000000000000408a a501950808000000000000408b a501950809000000000000408c"
    " a50195080a000000000000408d a50195080b000000000000408e a50195080c000000000000408f"
    " a50195080d0000000000004090 a50195080e0000000000004091 a50195080f0000000000004092"
    " a5019508100000000000004093",
    0x96: "a501960801370000000000007c a5019608020000000000000046",
}
CYCLE_83_CELLS = [3.325, 3.326, 3.326, 3.326, 3.326, 3.326, 3.326, 3.326,
                  3.326, 3.326, 3.324, 3.326, 3.326, 3.327, 3.326, 3.324]  # fmt: skip
CYCLE_8S = {  # CPY8S: 8 cells in 3 frames, the 9th slot non-zero junk (3139 mV)
    SOC: "a501900800f80000753001815d",
    0x93: "a50193080001002500009de9ed",
    STATUS: "a501940808010000000001327e",
    CELLS: "a5019508010b6b0c420c433289 a5019508020c3c0c520c43326c a5019508030c000c480c433227",
    0x96: "a5019608013d000000000032b4",
    0x97: "a50197089000000000000000d5",
    0x98: "a5019808000000000000100056",
}
SET_K_CELLS = (  # 16 cells in ceil(16 / 3) = 6 frames, slots 17-18 of frame 6 non-zero
    "A5 01 95 08 01 0C CE 0C CF 0C CE 00 D3 A5 01 95 08 02 0C CF 0C CF 0C D1 00 D8"
    " A5 01 95 08 03 0C D1 0C CC 0C CE 00 D5 A5 01 95 08 04 0C D0 0C CB 0C CD 00 D3"
    " A5 01 95 08 05 0C CF 0C CC 0C D0 00 D7 A5 01 95 08 06 0C CD 0C CC 0C D0 00 D6"
)


class TestDaly(MultidropContract, MultiFrameContract):
    plugin_name = "daly"
    address = 1
    captured = CAPTURED
    # board 1 (0x40), zero fill: sums 7D..85 as in maland16/daly-bms-uart example-output.txt
    requests = {
        "soc": "A5 40 90 08 00 00 00 00 00 00 00 00 7D",
        "fets": "A5 40 93 08 00 00 00 00 00 00 00 00 80",
        "status": "A5 40 94 08 00 00 00 00 00 00 00 00 81",
        "cells": "A5 40 95 08 00 00 00 00 00 00 00 00 82",
        "temperatures": "A5 40 96 08 00 00 00 00 00 00 00 00 83",
        "balance": "A5 40 97 08 00 00 00 00 00 00 00 00 84",
        "failure": "A5 40 98 08 00 00 00 00 00 00 00 00 85",
    }
    roundtrip_tolerance = {"voltage": 0.051, "current": 0.051}  # 0.1 V, 0.1 A steps

    def make_models(self) -> dict[int, BatteryModel]:
        """16 cells (6 frames of 0x95), 15 sensors in whole degrees (3 frames of 0x96, so that a
        repeated frame 2 is caught before the last one)."""
        models = super().make_models()
        models[1].temperatures = [float(18 + i % 9) for i in range(15)]
        return models


class ScriptLink:
    """A Link answering each request with captured frames by command (none: a timeout).

    What a reply leaves unread is gone at the next request, as the poller's drain does.
    """

    timeout = 0.5

    def __init__(self, replies: dict[int, str]) -> None:
        self.replies = {cmd: bytes.fromhex(text) for cmd, text in replies.items()}
        self.buf = bytearray()

    def exchange(self, request: bytes, extract: Any) -> bytes:
        self.buf = bytearray(self.replies.get(request[2], b""))
        return self.receive(extract)

    def receive(self, extract: Any) -> bytes:
        frame = extract(self.buf)
        if frame is None:
            raise LinkTimeout("timeout")
        return frame


def cycle(plugin: Plugin, replies: dict[int, str]) -> dict[str, Any]:
    """One poll cycle of board 1 over captured replies, as the poller runs it: the state."""
    link, parts = ScriptLink(replies), {}
    for q in plugin.queries(1):
        try:
            parts[q.part] = run_query(plugin, link, q, 1, parts, LinkStats())
        except LinkTimeout:
            assert not q.required, q.part
    fields = plugin.state(parts)
    return validate_state(make_state("cap", 1, plugin.name, 0, fields, {}))


@pytest.mark.parametrize("cell_frames", [0, 16])
def test_cycle_83_16s_discharging(cell_frames: int) -> None:
    state = cycle(Family({"cell_frames": cell_frames}), CYCLE_83)
    assert state["voltage"] == pytest.approx(53.2)
    assert state["current"] == pytest.approx(-2.1)  # 0x93 of the same cycle: discharging
    assert state["soc"] == pytest.approx(88.8)
    assert state["cells"] == pytest.approx(CYCLE_83_CELLS)  # 53.212 V in all
    assert state["temperatures"] == [15.0]  # 1 sensor; the second 0x96 frame is ignored
    assert state["remaining"] == pytest.approx(248.64)
    assert state["capacity"] == pytest.approx(280.0)  # no 0x50 captured: remaining / SoC
    assert state["cycles"] == 3 and state["charge_fet"] and state["discharge_fet"]
    assert state["alarms"] == {} and state["balancing"] == [0] * 16


def test_cycle_83_inverted_matches_mpp_solar() -> None:
    assert cycle(Family({"invert_current": True}), CYCLE_83)["current"] == pytest.approx(2.1)


def test_cycle_8s_with_balancing_and_failure_bits() -> None:
    state = cycle(Family(), CYCLE_8S)
    assert state["voltage"] == pytest.approx(24.8) and state["current"] == 0.0
    assert state["soc"] == pytest.approx(38.5)
    # the 9th slot (3.139 V) is cut
    assert state["cells"] == pytest.approx([2.923, 3.138, 3.139, 3.132, 3.154, 3.139, 3.072, 3.144])
    assert state["temperatures"] == [21.0]
    assert state["balancing"] == [0, 0, 0, 0, 1, 0, 0, 1]  # 0x97 byte 0 = 0x90: two highest
    assert state["charge_fet"] and not state["discharge_fet"]
    assert state["remaining"] == pytest.approx(40.425)
    assert state["capacity"] == pytest.approx(105.0, abs=0.1)
    assert state["cycles"] == 1
    assert not any(state["alarms"].values())  # byte 6 bit 4 is reserved


def test_set_k_cells_past_the_count_are_junk(plugin: Plugin) -> None:
    parts, _, left = decode_replies(plugin, [(None, bytes.fromhex(SET_K_CELLS))])
    assert left == 0 and parts["cells"]["frames"] == 6
    assert parts["cells"]["cells"][15:] == pytest.approx([3.277, 3.276, 3.280])
    assert plugin.alarms(bytes([0, 0, 0x80, 0, 0, 0, 0]))["low_soc"] == 2  # set K's 0x98


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("daly")


def test_board_2_request_and_reply(plugin: Plugin) -> None:
    # esphome/esphome#12445: TX A5 41 90 .. 7E -> RX A5 02 90 08 00 82 00 00 75 30 01 F4 5B
    assert request(2, SOC) == bytes.fromhex("A5 41 90 08 00 00 00 00 00 00 00 00 7E")
    reply = bytes.fromhex("A5 02 90 08 00 82 00 00 75 30 01 F4 5B")
    part, fields = plugin.parse(reply, None, 2)
    assert part == "soc" and fields["voltage"] == pytest.approx(13.0)
    assert fields["soc"] == pytest.approx(50.0) and fields["current"] == 0.0
    with pytest.raises(FrameError) as err:
        plugin.parse(reply, None, 1)
    assert err.value.kind == "address"


def data(cmd: int, *body: int, address: int = 1) -> bytes:
    return pack_frame(address, cmd, bytes(body))


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        pytest.param(bytes.fromhex("a5 01 90 07 02 14 00 00 75 45 03 78 88"), "malformed",
                     id="data-length-07"),
        pytest.param(bytes.fromhex("A5 01 D8 08 00 00 00 00 01 00 00 00 87"), "unexpected",
                     id="undocumented-0xD8-of-set-K"),
        pytest.param(data(SOC, 2, 0x14, 0, 0, 0x75, 0x30, 0x03, 0xE9), "malformed",
                     id="soc-100.1"),
        pytest.param(data(SOC, 2, 0x14, 0, 0, 0, 0, 0x03, 0x78), "malformed", id="current-raw-0"),
        pytest.param(data(STATUS, 0, 1), "malformed", id="zero-cells"),
        pytest.param(data(STATUS, 49, 1), "malformed", id="49-cells"),
        pytest.param(data(STATUS, 16, 22), "malformed", id="22-sensors"),
        pytest.param(request(1, SOC), "address", id="echoed-request"),
        pytest.param(data(SOC, 2, 0x14, 0, 0, 0x75, 0x30, 3, 0x78, address=3), "address",
                     id="another-board"),
    ],
)  # fmt: skip
def test_rejected_frames(plugin: Plugin, frame: bytes, kind: str) -> None:
    frames, errors, _ = extract_all(plugin, frame)
    assert frames == [frame] and not errors
    with pytest.raises(FrameError) as err:
        plugin.parse(frame, None, 1)
    assert err.value.kind == kind


def test_frames_numbered_from_zero_are_out_of_sequence(plugin: Plugin) -> None:
    frames = " ".join(pack_frame(1, CELLS, bytes([n, 0x0C, 0xE4])).hex() for n in range(6))
    link = ScriptLink({CELLS: frames})
    q = next(q for q in plugin.queries(1) if q.part == "cells")
    with pytest.raises(FrameError) as err:
        run_query(plugin, link, q, 1, {"status": {"cell_count": 16}}, LinkStats())
    assert err.value.kind == "sequence"


def test_options() -> None:
    assert Family({"cell_frames": 16}).collecting("cells").frames == 16
    for bad in ({"cell_frames": 17}, {"cell_frames": -1}, {"invert_current": 1}):
        with pytest.raises(ValueError):
            Family(bad)
    with pytest.raises(ValueError, match="outside 1-16"):
        Family().queries(17)


def test_too_few_cell_frames_is_truncated() -> None:
    plugin = Family({"cell_frames": 5})
    with pytest.raises(FrameError) as err:
        cycle(plugin, CYCLE_83)
    assert err.value.kind == "truncated"


def test_levels_and_inverted_over_current_bits(plugin: Plugin) -> None:
    assert plugin.alarms(bytes([0x01, 0, 0, 0, 0, 0, 0]))["high_cell_voltage"] == 1  # level 1
    assert plugin.alarms(bytes([0x03, 0, 0, 0, 0, 0, 0]))["high_cell_voltage"] == 2  # level 2
    assert plugin.alarms(bytes([0, 0, 0, 0, 0, 0, 0x04]))["short_circuit"] == 2
    inverted = Family({"invert_current": True}).alarms(bytes([0, 0, 0x02, 0, 0, 0, 0]))
    assert inverted["high_discharge_current"] == 2 and inverted["high_charge_current"] == 0


# -- simulator ------------------------------------------------------------------------------
def bus() -> Any:
    return simulators.create("daly", {1: BatteryModel(current=25.0), 2: BatteryModel(cells=8)})


def test_simulator_answers_only_its_boards_with_their_number() -> None:
    sim = bus()
    assert sim.feed(request(3, SOC)) == []
    (reply,) = sim.feed(request(2, SOC))
    assert reply[:3] == bytes.fromhex("a5 02 90")
    assert len(sim.feed(request(2, CELLS))) == 3  # ceil(8 / 3)


def test_inverted_option_against_the_simulator() -> None:
    state = poll(Family({"invert_current": True}), bus(), 1)
    assert state["current"] == pytest.approx(-25.0)


def test_firmware_sending_all_16_cell_frames() -> None:
    sim = bus()
    sim.cell_frames = 16
    assert len(sim.feed(request(2, CELLS))) == 16
    assert poll(Family({"cell_frames": 16}), sim, 2)["cells"] == pytest.approx([3.31] * 8, abs=1e-3)
    assert len(poll(Family(), sim, 2)["cells"]) == 8  # 3 frames read, the rest drained


# -- writes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("board", "action", "value", "wire"),
    [  # requests as MAL setChargeMOS / setDischargeMOS build them (byte 0 = 1 on)
        (1, "charge", False, "A5 40 DA 08 00 00 00 00 00 00 00 00 C7"),
        (1, "discharge", True, "A5 40 D9 08 01 00 00 00 00 00 00 00 C7"),
        (2, "charge", True, "A5 41 DA 08 01 00 00 00 00 00 00 00 C9"),
    ],
)
def test_fet_writes(plugin: Plugin, board: int, action: str, value: bool, wire: str) -> None:
    models = {board: BatteryModel(charge_fet=not value, discharge_fet=not value)}
    link = SimLink(simulators.create("daly", models))
    plugin.control(link, board, action, value, {})
    assert link.sent == [bytes.fromhex(wire)]
    assert getattr(models[board], f"{action}_fet") is value
    assert poll(plugin, link.sim, board)[f"{action}_fet"] is value


def test_fet_ack_must_echo_the_state(plugin: Plugin) -> None:
    # python-daly-bms set_charge_mosfet comment: the "on" reply's data is 01 01 00 00 02 00 6c be
    on_ack = pack_frame(1, CHARGE_MOS, bytes.fromhex("0101000002006cbe")).hex()
    plugin.control(ScriptLink({CHARGE_MOS: on_ack}), 1, "charge", True, {})
    with pytest.raises(ControlError, match="kept the charge FET on"):
        plugin.control(ScriptLink({CHARGE_MOS: on_ack}), 1, "charge", False, {})


def test_set_soc(plugin: Plugin) -> None:
    model = BatteryModel(soc=60.0)
    link = SimLink(simulators.create("daly", {1: model}))
    plugin.set_soc(link, 1, 80.0)  # python-daly-bms set_soc: six zero bytes, then SoC x 10
    assert link.sent == [bytes.fromhex("A5 40 21 08 00 00 00 00 00 00 03 20 31")]
    assert model.bms_soc == pytest.approx(80.0)
    assert poll(plugin, link.sim, 1)["soc"] == pytest.approx(80.0)
    with pytest.raises(ValueError):
        plugin.set_soc(link, 1, 100.5)
    refused = pack_frame(1, SET_SOC, b"\x00").hex()
    with pytest.raises(ControlError, match="refused"):
        plugin.set_soc(ScriptLink({SET_SOC: refused}), 1, 50.0)
    (reply,) = link.sim.feed(request(1, SET_SOC, bytes(6) + (1001).to_bytes(2, "big")))
    assert reply[4] == 0  # the simulator refuses 100.1 %


def test_reset_soc_is_not_offered(plugin: Plugin) -> None:
    assert plugin.controls == {"charge", "discharge"}
