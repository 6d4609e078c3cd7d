"""JK BMS PB family: captured frames and what is specific to JK PB (the generic checks, the
daisy chain and the TX echo included, are in tests/plugin_contract.py): the frame/pad/ack wire
forms, the ack as the only responder address, absent sensors, the cell mask, balancing flags,
the settings_every option and the switch writes."""

from __future__ import annotations

import pytest

from bmsbank.errors import ControlError, FrameError, LinkTimeout
from bmsbank.native.frames import crc16_modbus, sum8
from bmsbank.schema import ALARMS, validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.plugins.jkpb.control import (
    FC16,
    SWITCH_REGISTERS,
    ack_of,
    exception_reply,
    write_ack,
    write_switch,
)
from bmsbank.services.poller.plugins.jkpb.family import ALARM_BITS, ack, trigger
from bmsbank.services.poller.plugins.jkpb.simulator import Simulator as JkPbSimulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, MultidropContract, SimLink, extract_all


def decode_write(msg: bytes | bytearray) -> tuple[int, int, int] | None:
    """``(address, register, value)`` of a complete, valid two-register FC16 write, else None."""
    msg = bytes(msg)
    if len(msg) != 13 or msg[1] != FC16 or msg[4:7] != b"\x00\x02\x04":
        return None
    if crc16_modbus(msg, 0, 13 - 2) != int.from_bytes(msg[-2:], "little"):
        return None
    return msg[0], msg[2] << 8 | msg[3], int.from_bytes(msg[7:11], "big")


SERIALBATTERY = "mr-manuel/venus-os_dbus-serialbattery tests/bms/test_jkbms_pb.py"
AIOBMSBLE = "patman15/aiobmsble tests/bms/test_jikong_bms.py"
BSC_FW = "shining-man/bsc_fw issue #118 (JK BMS Monitor RS485 capture, MeisterQ, 2024-06-19)"

# RS485 captures of battery 3 (LA1010 logic analyser, JKBMS PB 15A / 15.41). The reference test
# stores frame and ack apart; they are joined with the 0x00 pad of the wire format in
# bms-docs/JKBMS-PB.md, as the reference's own "clean response" test does.
STATUS_3 = (
    "55aaeb900200dd0cdd0cdd0cdd0cdd0cdd0cde0cdd0cde0cde0cde0cde0cde0cdd0cde0cdd0c000000000000000000000000"
    "0000000000000000000000000000000000000000ffff0000dd0c01000100330034003f0042004d0058006600710077007100"
    "660062005a004400400036000000000000000000000000000000000000000000000000000000000000000000cb0000000000"
    "d7cd00000000000000000000c300c6000000000000000037535e0200c04504003e00000086b70901640000000422e5020101"
    "0000000000000000000000000000ff00010000009703000000001671404000000000951400000001010100060000b4e3af00"
    "00000000cb00c200c7009703863ec40b100900008051010000000302000000000000000001feff7fdc2f0101b0cf07000021"
)
SETTINGS_3 = (
    "55aaeb900100ac0d00008c0a0000550b0000420e0000740d000005000000750d0000540b00007a0d0000160d0000c409"
    "000060ea0000030000003c000000a08601002c0100003c00000005000000d00700005e010000400100005e0100004001"
    "0000320000004600000020030000bc02000010000000010000000100000001000000c0450400dc050000700d00000000"
    + "00" * 126
    + "030000000000000060e316000033000a18feffffff9fe99d030000000034"
)
ABOUT_3 = (
    "55aaeb9003004a4b5f50423241313653323050000000313541000000000031352e34310000001c29e5021600000042423032"
    "0000000000000000000000003132333400000000000000000000000032343039313400003430313139343931343830003030"
    "30004a4b2d424d5300000000000000000000313336393133000000000000000000004a4b2d424d5300000000000000000000"
    "ffffffff8fe99d0300000000901f00000000c0d8e7fe3f00000100000000000000000004ff67000000000000000000000000"
    "0000ff0f000000000000000000000000000001ff670000000000000000000000000009080001640000005f0000003c000000"
    "320000000000000000000000002f00000a78011e0000000000000000000000000000000000fe9fe9ff0f00000000000000f6"
)
# BLE cell info frames (same 300-byte layout as RS485, no ack over BLE): the RS485 reply is built
# here by appending the ack a pack at address 3 sends for 0x1620 (03 10 16 20 00 01 05 A9).
V15_CHARGING = (
    "55aaeb9002ac050dfe0cfe0c010d010dfd0cfb0c010dfc0cfb0cfe0cfb0cf80cfb0cfb0c090d00000000000000000000"
    "00000000000000000000000000000000000000000000ffff0000ff0c10000f0c40003d0040003d0041003f0041003e00"
    "41003e0041003d0040003e0041003f000000000000000000000000000000000000000000000000000000000000000000"
    "810000000000e8cf00004ae41900897c000086008000000000000000001986c00000400d030009000000b15f1c006400"
    "00008c4c760101010000000000000000000000000000ff0001000000050452000000d44e404000000000ca1400000001"
    "010100060000ea67000000000000cd00c300bf00bd03287f030a1d0000008051010000000100a50202000000000000fe"
    "ff7fdc2f0101b0cf070000bb"
)
V19_BALANCING = (
    "55aaeb9002daec0cf00cf00ceb0cef0cef0cf00ced0c000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000ff000000ee0c050001036100" + "5c005f0055006000"
    "5700650057000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000006010000000071670000fe2c050074ceffffe900ec0000000000c607014e48ba030090ca04000f00"
    "0000e9244a00640000000f2e210001010000000000000000000000000000ff00010000006f24000067001cf93e4000"
    "00d800580a0000000101010006010071281f00000000000601f500f000010092b1830b3b04000080510100000002"
    "00000000000000000000feff7fdd2f0101b00f07000084"
)
# JK BMS Monitor polling address 1 on RS485 (decimal dump in the issue, here in hex): the ack
# 01 10 16 20 00 01 04 4B follows the frame directly, no 0x00 pad. Alarm bit 19 is set.
MONITOR_1 = bytes.fromhex(
    "55aaeb900205ee0cf30cf30cee0ceb0cf60cf40cf70cf00cfa0cf10cef0cfa0cf50cf10cf60c00000000000000000000"
    "00000000000000000000000000000000000000000000ffff0000f30c0f00090433003500400043004e00580067007400"
    "79007100680065005b004500410035000000000000000000000000000000000000000000000000000000000000000000"
    "d700000000002bcf0000a82f07003e210000d500d900000008000000004463ea0200c045040001000000ee7704006400"
    "00001bd6030001010000000000000000000000000000ff00010000009d0317000000881f404000000000b71400000001"
    "000100060000c12f0d0000000000d700d400da009d033c6c6708320000008051010000000000000000000000000000fe"
    "ff7fdc2f0101b00700000013"
    "011016200001044b"
)
STATUS_CELLS = [3.293] * 6 + [3.294, 3.293, 3.294, 3.294, 3.294, 3.294, 3.294, 3.293, 3.294, 3.293]

CAPTURED = [
    # Cell info, 16S LiFePO4 280 Ah at rest: cells 0x0CDD/0x0CDE mV, mask 0x0000FFFF, 150: 0xCDD7
    # = 52.695 V, 158: 0 mA, 173: 0x37 = 55 %, 174: 0x00025E53 = 155.219 Ah, 178: 0x000445C0 =
    # 280 Ah, 182: 62 cycles, 190: SoH 100, 144: 0x00CB = 20.3 °C MOSFET, probes 0x00C3/0x00C6/
    # 0x00C2/0x00C7 = 19.5/19.8/19.4/19.9 °C (mask 0xFF), both FETs on, balancer idle.
    Captured(
        source=SERIALBATTERY + " STATUS_RESPONSE + FC16_ACK",
        hex=STATUS_3 + "00" + "03101620000105a9",
        part="cell_info",
        expect={
            "cells": STATUS_CELLS,
            "cell_mask": 0xFFFF,
            "voltage": 52.695,
            "current": 0.0,
            "soc": 55,
            "remaining": 155.219,
            "capacity": 280.0,
            "cycles": 62,
            "soh": 100,
            "mosfet_temperature": 20.3,
            "temperatures": [19.5, 19.8, 19.4, 19.9],
            "alarm_bits": 0,
            "charge_fet": True,
            "discharge_fet": True,
            "balancing_action": 0,
            "balancing": [0] * 16,
            "max_cell_index": 1,
            "min_cell_index": 0,
            "sensor_mask": 0xFF,
        },
    ),
    # Settings of the same pack: 10: 0x0A8C = 2.700 V UVP, 18: 0x0E42 = 3.650 V OVP, 50: 0xEA60 =
    # 60 A charge, 62: 0x0186A0 = 100 A discharge, 114: 16 cells, 126: balancer on, 130:
    # 0x0445C0 = 280 Ah, 270: DevAddr 3.
    Captured(
        source=SERIALBATTERY + " SETTINGS_RESPONSE + FC16_ACK_SETTINGS",
        hex=SETTINGS_3 + "00" + "0310161e00016465",
        part="settings",
        expect={
            "cell_undervoltage": 2.7,
            "cell_overvoltage": 3.65,
            "charge_current_limit": 60.0,
            "discharge_current_limit": 100.0,
            "cell_count": 16,
            "balancer_enabled": 1,
            "capacity": 280.0,
            "device_address": 3,
        },
    ),
    # Device info: "JK_PB2A16S20P", hardware "15A", software "15.41", name "BB02", serial at 86.
    Captured(
        source=SERIALBATTERY + " ABOUT_RESPONSE + FC16_ACK_ABOUT",
        hex=ABOUT_3 + "00" + "0310161c0001c5a5",
        part="device_info",
        expect={
            "model": "JK_PB2A16S20P",
            "hardware_version": "15A",
            "software_version": "15.41",
            "name": "BB02",
            "serial": "40119491",
        },
    ),
    # JK02_32S v15.38 while charging (aiobmsble: 53.224 V, +31.881 A, "battery_charging": True),
    # 25 %, 49.286 of 200 Ah, 9 cycles, MOSFET 12.9 °C, probes 13.4/12.8/19.5/19.1 °C; the max
    # (index 15, 3.337 V) and min (index 12, 3.320 V) cells as the BMS reports them.
    Captured(
        source=AIOBMSBLE + " _PROTO_DEFS['JK02_32S_v15']['cell'] + ack built here",
        hex=V15_CHARGING + ack(3, 0x1620).hex(),
        part="cell_info",
        expect={
            "voltage": 53.224,
            "current": 31.881,
            "soc": 25,
            "remaining": 49.286,
            "capacity": 200.0,
            "cycles": 9,
            "mosfet_temperature": 12.9,
            "temperatures": [13.4, 12.8, 19.5, 19.1],
            "max_cell_index": 15,
            "min_cell_index": 12,
            "balancing": [0] * 16,
            "cells": [
                3.333,
                3.326,
                3.326,
                3.329,
                3.329,
                3.325,
                3.323,
                3.329,
                3.324,
                3.323,
                3.326,
                3.323,
                3.32,
                3.323,
                3.323,
                3.337,
            ],
        },
    ),
    # JK02_32S v19.27, 8S, discharging at -12.684 A with the balancer working (172: 1, 170:
    # 0x07C6 = 1.990 A) between cell 2 (index 1, max 3.312 V) and cell 4 (index 3, min 3.307 V).
    Captured(
        source=AIOBMSBLE + " _PROTO_DEFS['JK02_32S_v19.27']['cell'] + ack built here",
        hex=V19_BALANCING + ack(3, 0x1620).hex(),
        part="cell_info",
        expect={
            "cells": [3.308, 3.312, 3.312, 3.307, 3.311, 3.311, 3.312, 3.309],
            "cell_mask": 0xFF,
            "voltage": 26.481,
            "current": -12.684,
            "soc": 78,
            "remaining": 244.296,
            "capacity": 314.0,
            "cycles": 15,
            "balancing_action": 1,
            "balance_current": 1.99,
            "balancing": [0, 1, 0, 1, 0, 0, 0, 0],
            "mosfet_temperature": 26.2,
            "temperatures": [23.3, 23.6, 24.5, 24.0],
        },
    ),
]
STATUS = CAPTURED[0].raw
FRAME = STATUS[:300]


class TestJkPb(MultidropContract):
    plugin_name = "jkpb"
    address = 3
    captured = CAPTURED
    # the FC16 triggers of battery 3 for 0x1620 / 0x161E / 0x161C: SERIALBATTERY (REQUEST_*)
    requests = {
        "cell_info": "03 10 16 20 00 01 02 00 00 cf 91",
        "settings": "03 10 16 1e 00 01 02 00 00 cb 4f",
        "device_info": "03 10 16 1c 00 01 02 00 00 ca ad",
    }

    def checksum_index(self, length: int) -> int:
        return 299  # the sum8; the reply goes on with the pad and the ack


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("jkpb")


def patched(frame: bytes, offset: int, data: bytes) -> bytes:
    """The 300-byte frame with ``data`` at ``offset`` and its sum8 made to match."""
    out = bytearray(frame[:300])
    out[offset : offset + len(data)] = data
    out[299] = sum8(out, 0, 299)
    return bytes(out)


def reply(frame: bytes, address: int = 3, register: int = 0x1620) -> bytes:
    return frame + ack(address, register)


def take(plugin: Plugin, data: bytes) -> bytes:
    frames, errors, _ = extract_all(plugin, data)
    assert not errors and len(frames) == 1, errors
    return frames[0]


def state_of(plugin: Plugin, *replies: bytes, address: int = 3) -> dict:
    parts = dict(plugin.parse(take(plugin, r), None, address) for r in replies)
    fields = plugin.state(parts)
    return validate_state(make_state("ttyUSB0", address, "jkpb", 0, fields, {}))


def crc16_reference(data: bytes) -> int:
    """Textbook CRC-16/MODBUS, written apart from the codec to cross-check it."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


# -- requests and options ----------------------------------------------------------------------
def test_poll_schedule(plugin: Plugin) -> None:
    queries = plugin.queries(1)
    # the JK BMS Monitor's cell info request to address 1 in BSC_FW
    assert queries[0].request.hex(" ") == "01 10 16 20 00 01 02 00 00 d6 f1"
    assert [(q.part, q.every, q.required, q.expects_reply) for q in queries] == [
        ("cell_info", 1, True, True), ("settings", 60, False, True),
        ("device_info", 0, False, True)]  # fmt: skip
    for address in plugin.addresses:
        for q in plugin.queries(address):
            assert q.request[0] == address
            assert crc16_reference(q.request[:9]).to_bytes(2, "little") == q.request[9:]
    assert (plugin.title, plugin.baudrate, plugin.multidrop) == ("JKBMS PB Model", 115200, True)
    assert plugin.addresses == range(1, 16) and plugin.command_gap == 0.12


def test_settings_every_option() -> None:
    every = {q.part: q.every for q in plugins.load("jkpb", {"settings_every": 5}).queries(3)}
    assert every == {"cell_info": 1, "settings": 5, "device_info": 0}
    for bad in (0, 3601, "5", 2.0):
        with pytest.raises(ValueError):
            plugins.load("jkpb", {"settings_every": bad})
    with pytest.raises(KeyError):
        plugins.load("jkpb", {"settings_evry": 5})


@pytest.mark.parametrize("address", [0, 16, 255], ids=["bus-master", "16", "255"])
def test_addresses_outside_1_to_15_are_refused(plugin: Plugin, address: int) -> None:
    with pytest.raises(ValueError, match="1-15"):
        plugin.queries(address)


# -- wire forms: frame, pad, ack ---------------------------------------------------------------
def test_acks_match_captures() -> None:
    assert ack(3, 0x1620).hex() == "03101620000105a9"
    assert ack(3, 0x161E).hex() == "0310161e00016465"
    assert ack(3, 0x161C).hex() == "0310161c0001c5a5"
    assert ack(1, 0x1620) == MONITOR_1[300:]


def test_monitor_capture_without_pad(plugin: Plugin) -> None:
    assert take(plugin, MONITOR_1) == MONITOR_1
    part, fields = plugin.parse(MONITOR_1, None, 1)
    assert part == "cell_info"
    assert fields["cells"][:4] == pytest.approx([3.310, 3.315, 3.315, 3.310])
    assert (fields["voltage"], fields["current"]) == pytest.approx((53.035, 8.510))
    assert (fields["max_cell_index"], fields["min_cell_index"]) == (9, 4)
    assert fields["alarm_bits"] == 1 << 19  # "modify password in time": no alarm raised
    state = state_of(plugin, MONITOR_1, address=1)
    assert not any(state["alarms"].values())
    assert state["soc"] == 68.0 and state["remaining"] == pytest.approx(191.075)


def test_pads_are_dropped_and_the_reply_waits_for_its_ack(plugin: Plugin) -> None:
    # frame + 00 + ack + 00 (JKBMS-PB.md): a pad that came with the reply is part of it ...
    frames, errors, stats = extract_all(plugin, STATUS + b"\x00")
    assert frames == [STATUS + b"\x00"] and not errors and stats.noise_bytes == 0
    # ... one that arrives after it is dropped at the head of the buffer, never counted
    stream = STATUS + b"\x00" + reply(FRAME) + b"\x00"
    buf, stats, got = bytearray(), LinkStats(), []
    for byte in stream:  # one byte at a time, as a slow adapter delivers it
        buf.append(byte)
        while (frame := plugin.extract(buf, stats)) is not None:
            got.append(frame)
    assert got == [STATUS, reply(FRAME)] and not buf and stats.noise_bytes == 0
    assert plugin.parse(got[0], None, 3) == plugin.parse(got[1], None, 3)
    for cut in (300, 301, 305):  # a complete frame waits for the ack that may follow it
        buf = bytearray(STATUS[:cut])
        assert plugin.extract(buf, LinkStats()) is None and len(buf) == cut


def test_frame_without_ack_has_no_known_responder(plugin: Plugin) -> None:
    frames, errors, _ = extract_all(plugin, FRAME + STATUS)  # a frame, then the next reply
    assert frames == [FRAME, STATUS] and not errors
    with pytest.raises(FrameError, match="unknown responder") as exc:
        plugin.parse(FRAME, None, 3)
    assert exc.value.kind == "address"
    assert plugin.parse(FRAME)[0] == "cell_info"  # offline decoding asks no address


def test_triggers_and_stray_acks_before_a_reply_are_noise(plugin: Plugin) -> None:
    # The transport drops the echo of its own trigger; in a bare extract it is noise, as are
    # another master's trigger and the ack it got.
    stream = trigger(3, 0x1620) + trigger(2, 0x1620) + ack(2, 0x1620) + STATUS
    frames, errors, stats = extract_all(plugin, stream)
    assert frames == [STATUS] and not errors and stats.noise_bytes == 11 + 11 + 8


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


ACK_CASES = [
    # (id, reply, error kind); a bad ack CRC is found by extract, the rest by parse
    ("ack-bad-crc", _flip(STATUS, len(STATUS) - 1), "checksum"),
    ("ack-bad-crc-no-pad", _flip(reply(FRAME), 307), "checksum"),
    ("ack-for-another-register", reply(FRAME, 3, 0x161E), "malformed"),
    ("unknown-frame-type", reply(patched(FRAME, 4, b"\x05")), "unexpected"),
]


@pytest.mark.parametrize(
    ("data", "kind"), [case[1:] for case in ACK_CASES], ids=[case[0] for case in ACK_CASES]
)
def test_ack_and_frame_type_must_agree(plugin: Plugin, data: bytes, kind: str) -> None:
    frames, errors, _ = extract_all(plugin, data)
    if kind == "checksum":
        assert not frames and [e.kind for e in errors] == [kind] and errors[0].raw
        return
    assert frames == [data] and not errors
    with pytest.raises(FrameError) as exc:
        plugin.parse(data, None, 3)
    assert exc.value.kind == kind


# -- decoding details --------------------------------------------------------------------------
def test_captured_replies_build_a_state(plugin: Plugin) -> None:
    state = state_of(plugin, *(c.raw for c in CAPTURED[:3]))
    assert state["cells"] == pytest.approx(STATUS_CELLS) and len(state["cells"]) == 16
    assert state["voltage"] == pytest.approx(52.695) and state["current"] == 0.0
    assert (state["soc"], state["soh"], state["cycles"]) == (55.0, 100.0, 62)
    assert (state["bms_ccl"], state["bms_dcl"]) == pytest.approx((60.0, 100.0))
    assert state["bms_cvl"] is None
    assert state["hardware"] == "JK_PB2A16S20P hw 15A sw 15.41" and state["serial"] == "40119491"
    assert state["cell_delta"] == pytest.approx(0.001)  # derived centrally, not by the plugin
    only_cells = state_of(plugin, STATUS)
    assert only_cells["bms_ccl"] is None and only_cells["hardware"] == "JKBMS PB Model"
    assert only_cells["serial"] == ""
    with pytest.raises(FrameError):
        plugin.state({"settings": plugin.parse(CAPTURED[1].raw)[1]})


@pytest.mark.parametrize(
    ("mask", "expected"),
    [(0x0000000F, 4), (0x000000FF, 8), (0x0000FFFF, 16), (0x00FFFFFF, 24)],
    ids=["4S", "8S", "16S", "24S"],
)
def test_cells_limited_to_enabled_mask(plugin: Plugin, mask: int, expected: int) -> None:
    frame = patched(FRAME, 70, mask.to_bytes(4, "little"))
    frame = patched(frame, 6 + 32, (3300).to_bytes(2, "little") * 8)  # slots 17-24 hold volts
    state = state_of(plugin, reply(frame))
    assert len(state["cells"]) == len(state["balancing"]) == expected
    assert state["cells"][:4] == pytest.approx([3.293] * 4)


def test_without_cell_mask_the_settings_cell_count_applies(plugin: Plugin) -> None:
    frame = patched(FRAME, 70, bytes(4))
    settings_reply = CAPTURED[1].raw
    parts = dict(plugin.parse(take(plugin, r)) for r in (reply(frame), settings_reply))
    assert plugin.parse(reply(frame))[1]["cells"] == []
    assert plugin.state(parts)["cells"] == pytest.approx(STATUS_CELLS)


def test_balancing_flags_max_and_min_cell(plugin: Plugin) -> None:
    working = plugin.parse(CAPTURED[4].raw)[1]
    assert working["balancing"] == [0, 1, 0, 1, 0, 0, 0, 0]
    idle = patched(CAPTURED[4].raw, 172, b"\x00")
    assert plugin.parse(reply(idle))[1]["balancing"] == [0] * 8
    discharging = patched(CAPTURED[4].raw, 172, b"\x02")
    assert plugin.parse(reply(discharging))[1]["balancing"] == [0, 1, 0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("mask", "temperatures", "mosfet"),
    [(0xFF, [19.5, 19.8, 19.4, 19.9], 20.3), (0x01, [], 20.3), (0x36, [19.5, 19.8, 19.4, 19.9],
     None), (0x13, [19.5, 19.4], 20.3)],
    ids=["all-present", "mosfet-only", "no-mosfet", "t1-and-t4"],
)  # fmt: skip
def test_temperature_probe_mask(
    plugin: Plugin, mask: int, temperatures: list[float], mosfet: float | None
) -> None:
    fields = plugin.parse(reply(patched(FRAME, 214, bytes([mask]))))[1]
    assert fields["temperatures"] == pytest.approx(temperatures)
    assert fields["mosfet_temperature"] == (pytest.approx(mosfet) if mosfet else None)


def test_absent_probe_and_negative_temperature(plugin: Plugin) -> None:
    frame = patched(FRAME, 162, (-2000).to_bytes(2, "little", signed=True))  # -200.0: unplugged
    frame = patched(frame, 164, (-55).to_bytes(2, "little", signed=True))
    fields = plugin.parse(reply(frame))[1]
    assert fields["temperatures"] == pytest.approx([-5.5, 19.4, 19.9])


EXPECTED_ALARMS = {
    1: "high_internal_temperature", 2: "internal_failure", 3: "internal_failure",
    4: "high_cell_voltage", 5: "high_voltage", 6: "high_charge_current", 7: "short_circuit",
    8: "high_charge_temperature", 9: "low_charge_temperature", 10: "internal_failure",
    11: "low_cell_voltage", 12: "low_voltage", 13: "high_discharge_current", 14: "short_circuit",
    15: "high_temperature", 16: "internal_failure", 17: "internal_failure",
    20: "internal_failure", 21: "high_temperature", 22: "internal_failure",
    23: "internal_failure",
}  # fmt: skip


def test_alarm_table_uses_schema_names() -> None:
    assert ALARM_BITS == EXPECTED_ALARMS
    assert set(ALARM_BITS.values()) <= set(ALARMS)


def test_unmapped_alarm_bits_raise_nothing(plugin: Plugin) -> None:
    frame = patched(FRAME, 166, (1 << 0 | 1 << 18 | 1 << 19 | 0xFF << 24).to_bytes(4, "little"))
    assert not any(state_of(plugin, reply(frame))["alarms"].values())


# -- simulator: one RS485 bus, several packs ----------------------------------------------------
def bus(padding: bool = False) -> JkPbSimulator:
    packs = {
        1: BatteryModel(cells=16, capacity=280.0, soc=40.0, current=10.0, cycles=5),
        2: BatteryModel(cells=8, capacity=100.0, soc=70.0, current=-4.5, cycles=7),
        3: BatteryModel(cells=4, capacity=50.0, soc=95.0, current=0.0, imbalance=0.08),
    }
    return JkPbSimulator(packs, padding=padding)


def test_simulator_reads_triggers_in_a_stream(plugin: Plugin) -> None:
    sim = bus()
    replies = sim.feed(b"".join(plugin.queries(a)[0].request for a in (3, 1, 2)))
    assert [r[-8] for r in replies] == [3, 1, 2]  # one write, three triggers, in order
    assert [len(plugin.parse(r)[1]["cells"]) for r in replies] == [4, 16, 8]
    request = plugin.queries(2)[0].request
    assert sim.feed(b"\x00\xff\x02\x10\x16" + request[:6]) == []  # garbage, half a trigger
    assert len(sim.feed(request[6:])) == 1
    assert sim.feed(request[:-1] + bytes([request[-1] ^ 0xFF])) == []  # bad CRC
    assert sim.feed(trigger(2, 0x1626)) == []  # a register it does not serve
    assert sim.feed(plugin.queries(9)[0].request) == []  # no pack at 9: silence


def test_simulator_reply_is_byte_exact(plugin: Plugin) -> None:
    sim = bus(padding=True)
    data = sim.feed(trigger(1, 0x1620))[0]
    assert len(data) == 310 and data[300] == 0 and data[-1] == 0
    assert data[:4] == bytes.fromhex("55aaeb90") and data[4] == 0x02
    assert data[299] == sum(data[:299]) & 0xFF
    assert data[301:309] == ack(1, 0x1620)
    assert crc16_reference(data[301:307]).to_bytes(2, "little") == data[307:309]
    buf = bytearray(data)
    assert plugin.extract(buf, LinkStats()) == data and not buf  # both pads came with it
    settings_reply = sim.feed(trigger(1, 0x161E))[0]
    assert plugin.parse(settings_reply, None, 1)[1]["device_address"] == 1
    device = plugin.parse(sim.feed(trigger(1, 0x161C))[0], None, 1)[1]
    assert device["model"] == "JK_PB2A16S20P" and device["serial"] == "SIM00001"


# -- writes (control channel) ------------------------------------------------------------------
ESPHOME_SWITCHES = "syssi/esphome-jk-bms components/jk_rs485_bms/switch/__init__.py"


def test_switch_writes_match_captures() -> None:
    # ESPHOME_SWITCHES, balancer switch of the pack at address 2 (comments beside CONF_BALANCING):
    # off "02.10.10.78.00.02.04.00.00.00.00.37.A9", on "...00.00.00.01.F6.69"
    assert write_switch(2, 0x1078, False).hex(" ") == "02 10 10 78 00 02 04 00 00 00 00 37 a9"
    assert write_switch(2, 0x1078, True).hex(" ") == "02 10 10 78 00 02 04 00 00 00 01 f6 69"
    # the same layout for the other switches (JKBMS-PB.md: BatChargeEN 0x0070, BatDisChargeEN
    # 0x0074 from base 0x1000), CRC cross-checked with the textbook CRC
    for register in (0x1070, 0x1074):
        frame = write_switch(3, register, False)
        assert frame[:4] == bytes((3, 0x10, register >> 8, register & 0xFF))
        assert crc16_reference(frame[:11]).to_bytes(2, "little") == frame[11:]
    assert SWITCH_REGISTERS == {"charge": 0x1070, "discharge": 0x1074, "balance": 0x1078}
    assert decode_write(write_switch(2, 0x1078, True)) == (2, 0x1078, 1)
    assert decode_write(write_switch(2, 0x1078, True)[:-1] + b"\x00") is None


def test_write_ack_is_the_standard_fc16_response() -> None:
    frame = write_ack(2, 0x1078)
    assert frame[:6].hex(" ") == "02 10 10 78 00 02"
    assert crc16_reference(frame[:6]).to_bytes(2, "little") == frame[6:]
    refusal = exception_reply(2, 2)
    assert refusal[:3].hex(" ") == "02 90 02"
    assert crc16_reference(refusal[:3]).to_bytes(2, "little") == refusal[3:]


def test_ack_extractor_skips_echo_and_noise_and_waits() -> None:
    take_ack = ack_of(2, 0x1070)
    request, expected = write_switch(2, 0x1070, False), write_ack(2, 0x1070)
    buf = bytearray(request + b"\x00\x55\xaa" + expected[:5])
    assert take_ack(buf) is None  # the echo and noise are no ack; the ack is not complete yet
    buf += expected[5:] + b"\x00"
    assert take_ack(buf) == expected and buf == bytearray(b"\x00")
    assert take_ack(bytearray(write_ack(3, 0x1070))) is None  # another pack's ack: not ours
    with pytest.raises(ControlError, match="pack 2 refused the write of 0x1070"):
        take_ack(bytearray(request + exception_reply(2, 2)))
    assert take_ack(bytearray(b"\x02\x90\x02\x00\x00")) is None  # bad CRC: not a refusal


def test_ack_extractor_searches_line_noise_once() -> None:
    take_ack = ack_of(2, 0x1070)
    expected, buf = write_ack(2, 0x1070), bytearray()
    for _ in range(1024):  # 64 KiB of noise, read 64 bytes at a time: only a possible start kept
        buf += bytes(range(64))
        assert take_ack(buf) is None and len(buf) < len(expected)
    buf += expected[:3]  # an answer split across two reads
    assert take_ack(buf) is None
    buf += expected[3:]
    assert take_ack(buf) == expected and not buf


def test_switches_reach_only_their_pack(plugin: Plugin) -> None:
    sim = bus()
    link = SimLink(sim)
    plugin.control(link, 2, "charge", False, {})
    plugin.control(link, 2, "discharge", False, {})
    plugin.control(link, 3, "balance", False, {})
    assert link.sent == [write_switch(2, 0x1070, False), write_switch(2, 0x1074, False),
                         write_switch(3, 0x1078, False)]  # fmt: skip
    two = state_of(plugin, sim.feed(trigger(2, 0x1620))[-1], address=2)
    assert not two["charge_fet"] and not two["discharge_fet"] and two["current"] == 0.0
    assert all(state_of(plugin, sim.feed(trigger(a, 0x1620))[-1], address=a)["charge_fet"]
               for a in (1, 3))  # fmt: skip
    assert not sim.packs[3].balancer and sim.packs[1].balancer
    settings_2 = take(plugin, sim.feed(trigger(2, 0x161E))[-1])
    assert [int.from_bytes(settings_2[i : i + 4], "little") for i in (118, 122, 126)] == [0, 0, 1]


def test_simulator_write_edge_cases(plugin: Plugin) -> None:
    sim = bus()
    request = write_switch(1, 0x1070, False)
    assert sim.feed(request[:12]) == []  # a write waits for its last byte
    assert sim.feed(request[12:]) == [write_ack(1, 0x1070)]
    assert sim.feed(write_switch(9, 0x1070, False)) == []  # no pack at 9: silence
    assert sim.feed(write_switch(1, 0x1084, False)) == [exception_reply(1, 2)]
    with pytest.raises(ControlError, match="Modbus exception 2"):
        ack_of(1, 0x1084)(bytearray(sim.feed(write_switch(1, 0x1084, False))[0]))
    with pytest.raises(LinkTimeout):
        plugin.control(SimLink(sim), 9, "charge", True, {})
