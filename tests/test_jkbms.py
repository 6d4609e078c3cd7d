"""JK BMS (``4E 57`` UART protocol) plugin and simulator: captures, quirks, malformed input."""

from __future__ import annotations

import pytest

from bmsbank.errors import FrameError
from bmsbank.services.poller import plugins
from bmsbank.services.poller.plugins.base import Plugin
from bmsbank.services.poller.plugins.jkbms.family import READ_ALL, amps, celsius, pack_frame
from bmsbank.services.poller.plugins.jkbms.simulator import Simulator as JkSimulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from tests.plugin_contract import Captured, PluginContract, extract_all, poll

ESPHOME = "syssi/esphome-jk-bms"
# the read-all request of the vendor spec (SPEC example, docs/RS485 Communication example.pdf,
# dbus-serialbattery bms/jkbms.py command_status): CMD 06, SRC 03 (PC), TYPE 0, ID 00, sum 0x0129
REQUEST = "4e57 0013 00000000 06 03 00 00 00000000 68 00000129"


def mv(*cells: int) -> list[float]:
    return [c / 1000 for c in cells]


# fmt: off
CAPTURED = [
    # A: 14S, H6.X__S6.1.3S__, protocol version 1. 53.59 V, 0x84 = 0x80D0: charging 2.08 A (the
    # expected value of esphome's own test), SoC 15 %, T 29/30/28 °C, status 0x07 (both FETs,
    # balancer), 14 Ah. Also esphome tests/components/jk_bms/common.h.
    Captured(
        source=ESPHOME + " docs/protocol-design-uart-ttl-gps-port.md",
        hex="4e57011b00000000060001792a010eed020efa030ef7040eec050ef8060efa070ef1080ef8090ee30a0efa"
        "0b0ef10c0efb0d0efb0e0ef280001d81001e82001c8314ef8480d0850f860287000489000000008a000e8b"
        "00008c00078e16268f10ae900fd2910fa0920005930bea940c1c95000596012c9700079800039900059a00"
        "059b0ce49c00089d019e005a9f0046a00064a10064a20014a30046a40046a5ffeca6fff6a7ffeca8fff6a9"
        "0eaa0000000eab01ac01ad0411ae01af01b0000ab114b231323334353600000000b300b4496e7075742055"
        "73b532313031b60000e200b748362e585f5f53362e312e33535f5fb800b900000000ba4254333037323032"
        "30313230303030323030353231303031c0010000000068000054d1",
        part="all",
        expect={"voltage": 53.59, "current": 2.08, "soc": 15, "cycles": 4, "capacity": 14,
                "mosfet_temperature": 29, "temperature_1": 30, "temperature_2": 28, "status": 7,
                "warnings": 0, "protocol_version": 1, "software_version": "H6.X__S6.1.3S__",
                "cells": mv(3821, 3834, 3831, 3820, 3832, 3834, 3825, 3832, 3811, 3834, 3825,
                            3835, 3835, 3826)},
    ),
    # B: JK-B2A24S20P, 13S, 10.XW_S10.07___. 53.13 V, 0 A, SoC 94 %, T 22/19/19 °C, status 0x04
    # (balancer only: the charge/discharge switches 0xAB/0xAC are 0), 5 Ah.
    Captured(
        source=ESPHOME + " docs/pdus/JK-B2A24S20P-10.07-UART-TTL.txt",
        hex="4e570118000000000600017927010ffc020fcf030ffd040ffc050ffc060ffa070ff7080ffe090ffe0a0ffc"
        "0b0ff70c0ff70d0ffd8000168100138200138314c1840000855e860287000089000000008a000d8b00008c"
        "00048e15548f0eba901068911004920005930b54940c8095000596012c97009698012c9900199a001e9b0c"
        "e49c000a9d019e005a9f0046a00064a10064a20014a30046a40046a5ffeca6fff6a7ffeca8fff6a90daa00"
        "000005ab00ac00ad042eae01af01b0000ab114b231323334353600000000b300b4496e707574205573b532"
        "323034b600000000b731302e58575f5331302e30375f5f5fb800b900000000ba496e707574205573657264"
        "614a4b2d423241323453313550c00100000000680000544e",
        part="all",
        expect={"voltage": 53.13, "current": 0.0, "soc": 94, "capacity": 5, "status": 4,
                "mosfet_temperature": 22, "temperature_1": 19, "temperature_2": 19,
                "cells": mv(4092, 4047, 4093, 4092, 4092, 4090, 4087, 4094, 4094, 4092, 4087,
                            4087, 4093)},
    ),
    # C: JK-BD6A17S6P, 16S, H7.X__S7.1.0H__. The published text has the token "0" where "A0"
    # belongs (".. 9F 00 46 0 00 64 .."); restored, the checksum 0x4AB1 matches. 51.21 V,
    # 0x84 = 0x0045: discharging 0.69 A, SoC 15 %, 17 cycles, T 18/16/16 °C, 81 Ah.
    Captured(
        source=ESPHOME + " docs/pdus/JK-BD6A17S6P-7.1.0H-UART-TTL.txt (0xA0 restored)",
        hex="4e570121000000000600017930010c81020c81030c82040c81050c83060c81070c71080c81090c7c0a0c"
        "830b0c820c0c830d0c830e0c830f0c83100c82800012810010820010831401840045850f860287001189"
        "000005008a00108b00008c00038e16d08f1090900e42910dde920005930a5a940abe95000596012c9700"
        "3c98012c99001e9a001e9b0d7a9c000a9d019e005a9f0046a00064a10064a20014a30046a40046a50000"
        "a60005a7ffeca8fff6a910aa00000051ab01ac01ad02d5ae01af01b0000ab114b2313233343536000000"
        "00b300b4496e707574205573b532313036b600016400b748372e585f5f53372e312e30485f5fb800b900"
        "000000ba425433303732303230313230303030323030353231303031c001000000006800004ab1",
        part="all",
        expect={"voltage": 51.21, "current": -0.69, "soc": 15, "cycles": 17, "capacity": 81,
                "mosfet_temperature": 18, "temperature_1": 16, "temperature_2": 16, "status": 3,
                "cells": mv(3201, 3201, 3202, 3201, 3203, 3201, 3185, 3201, 3196, 3203, 3202,
                            3203, 3203, 3203, 3203, 3202)},
    ),
    # E: JK_B1A8S20P, 7S, 11.XA_S11.51___ ("JKBMS - Standord", a public markdown report of a real
    # request/response; repository not identified). 26.58 V, 0 A, SoC 90 %, T 28 °C x 3, 117 Ah.
    Captured(
        source="public markdown 'JKBMS - Standord' (real request/response, repository unknown)",
        hex="4e570106000000000600017915010ed2020ed2030ed2040ed2050edb060edb070edb80001c81001c8200"
        "1c830a62840000855a860287000089000000058a00078b00008c00038e0b7c8f07b6901068911054920003"
        "930b04940b2295000396012c9700c898012c9900199a001e9b0bb89c000a9d019e00649f0050a00046a1"
        "003ca20014a30046a40046a5ffeca6fff6a7ffeca8fff6a907aa00000075ab01ac01ad03ccae01af01b0"
        "000ab114b231323334353600000000b300b4496e707574205573b532343037b600000819b731312e5841"
        "5f5331312e35315f5f5fb800b900000075ba496e707574205573657264614a4b5f423141385332305000"
        "c001000000006800004d89",
        part="all",
        expect={"voltage": 26.58, "current": 0.0, "soc": 90, "capacity": 117, "status": 3,
                "mosfet_temperature": 28, "temperature_1": 28, "temperature_2": 28,
                "software_version": "11.XA_S11.51___",
                "cells": mv(3794, 3794, 3794, 3794, 3803, 3803, 3803)},
    ),
    # F: JK_B1A20S15P, 14S, 11.XW_S11.261__, the reply to CMD 0x03 (read, ID 0: 03 echoed).
    # 55.78 V, 0x84 = 0x81C5: charging 4.53 A, SoC 100 %, 25 cycles, T 33/28/30 °C, 234 Ah.
    Captured(
        source="jblance/powermon powermon/protocols/jkserial.py (test_responses; also mpp-solar)",
        hex="4e57011b00000000030001792a010f90020f91030f94040f8e050f92060f91070f91080f91090f930a0f"
        "8e0b0f910c0f900d0f900e0f8d80002181001c82001e8315ca8481c58564860287001989000016da8a00"
        "0e8b00008c00038e16b28f10f4901036911004920005930c1c940c8095000596012c97006e98012c9900"
        "559a001e9b0bb89c00329d019e005a9f0046a00064a10064a20014a3003ca4003ca50001a60003a7ffec"
        "a8fff6a90eaa000000eaab01ac01ad0437ae01af01b0000ab114b231323334353600000000b300b4496e"
        "707574205573b532333036b6000182e3b731312e58575f5331312e3236315f5fb800b9000000eaba496e"
        "707574205573657264614a4b5f423141323053313550c0010000000068000051d6",
        part="all",
        expect={"voltage": 55.78, "current": 4.53, "soc": 100, "cycles": 25, "capacity": 234,
                "mosfet_temperature": 33, "temperature_1": 28, "temperature_2": 30, "status": 3,
                "charge_overcurrent": 85, "discharge_overcurrent": 110,
                "cells": mv(3984, 3985, 3988, 3982, 3986, 3985, 3985, 3985, 3987, 3982, 3985,
                            3984, 3984, 3981)},
    ),
]
# fmt: on
A = CAPTURED[0].raw
A_INFO = A[11:-9].hex()

# D: 20S, NW_1_0_0_200428 (no 0xB8-0xC0: protocol version 0), from the vendor's worked example
# (esphome-jk-bms docs/RS485 Communication example.pdf). LEN is right but the stated check value
# 0x4923 is not the byte sum (0x485C): a hand-edited example. 76.12 V, 0x84 = 10000: 0 A, SoC 71 %,
# T 27/30/30 °C, status 0x0B (both FETs, bit 3 "battery online").
D = bytes.fromhex(
    "4e57010b00000000060001793c010ef9020ef8030f01040f03050f02060f05070f02080f05090efb0a0ec80b"
    "0ecb0c0e9a0d0ec50e0ec60f0ecb100ec1110ecd120ecb130ebc140ec280001b81001e82001e831dbc842710"
    "8547860287000189000000008a00148b00008c000b8e20d08f15e0901068911036920004930af0940b549500"
    "0496012c9700289800049900149a00049b10369c00649d009e00649f0050a00050a10046a20014a30064a400"
    "64a5ffeca6fff6a7ffeca8fff6a914aa00000028ab00ac00ad03e8ae01af01b0000ab114b200000000000000"
    "000000b301b43630333030303031b532303034b600000001b74e575f315f305f305f32303034323800000000"
    "6800004923"
)
# G: 14S, 10.XW_S10.10___, posted as "CRC OK?" in esphome-jk-bms issue #247: line bit errors from
# bad wiring, one byte lost (284 bytes where LEN says 285), garbage in 0xBA.
G = bytes.fromhex(
    "4e57011b00000000060001792a010fd8020fd7030fd7040fd7050fd7060fd5070fd5080fd8090fd80a0fd70b"
    "0fd80c0fd90d0fd90e0fd880001681001282001283162d840038855a860287000789000009fb8a000e8b0000"
    "8c00038e16f88f0f6c901068911054920005930b04940b2295000596012c97006498012c9900509a001e9b0c"
    "e49c00149d019e007a9f0046a00064a10064a20014a30046a40046a5ffeca6fffea7ffeca8fff6a90eaa0000"
    "0154ab01ac01ad03a6ae01af01b0000ab114b231323334353600000000b300b44972656e615f686fb5323330"
    "31b60000bcf6b731302e58575f5331302e31305f5f5fb800b900000154ba4972656e615f686ff77365004972"
    "656e585dabcd655f34c8218000000068000058eb"
)


class TestJkbms(PluginContract):
    plugin_name = "jkbms"
    address = None
    captured = CAPTURED
    requests = {"all": REQUEST}
    # 1 °C and whole-percent SoC on the wire; remaining is capacity x SoC (no such ID)
    roundtrip_tolerance = {"temperatures": 0.5, "remaining": 1.5}


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("jkbms")


def reply(info_hex: str, command: int = 0x06) -> bytes:
    """A reply frame (SRC 0, TYPE 1) around the TLV stream ``info_hex``."""
    return pack_frame(command, bytes.fromhex(info_hex), source=0x00, ftype=0x01)


def test_requests_and_framing_helper() -> None:
    assert READ_ALL == bytes.fromhex(REQUEST)
    # esphome jk_modbus.cpp's variant with SRC 2 (GPS): sum 0x0128
    gps = "4e57 0013 00000000 06 02 00 00 00000000 68 00000128"
    assert pack_frame(0x06, b"\x00", source=0x02) == bytes.fromhex(gps)
    assert reply(A_INFO) == A  # the helper rebuilds a captured reply byte for byte


# -- published frames that fail their check, and a corrupted one --------------------------------
def test_vendor_example_fails_its_check_but_decodes_as_version_0(plugin: Plugin) -> None:
    frames, errors, _ = extract_all(plugin, D)
    assert not frames and errors[0].kind == "checksum"
    part, fields = plugin.parse(D)  # the content, bypassing the check value
    assert part == "all" and fields["protocol_version"] == 0 and fields["current"] == 0.0
    assert (fields["voltage"], fields["soc"], len(fields["cells"])) == (76.12, 71, 20)
    assert (fields["mosfet_temperature"], fields["temperature_1"]) == (27, 30)
    state = plugin.state({part: fields})
    assert state["charge_fet"] and state["discharge_fet"]
    assert not any(state["alarms"].values())  # status bit 3 ("battery online/offline"): no alarm


C_AS_PUBLISHED = CAPTURED[2].raw.replace(b"\x9f\x00\x46\xa0", b"\x9f\x00\x46\x00")
MALFORMED = [
    # (id, stream, frames extracted, error kinds)
    ("issue-247-bit-errors-alone", G, [], []),  # one byte short of LEN: waits, never decodes
    ("issue-247-bit-errors-then-good", G + A, [A], ["checksum"]),
    ("typo-as-published", C_AS_PUBLISHED, [], ["checksum"]),
    ("check-high-word-not-zero", A[:-4] + b"\x00\x01" + A[-2:], [], ["checksum"]),
    ("length-too-long", b"\x4e\x57\x02\x01" + bytes(8) + A, [A], ["malformed"]),
    ("garbage-before", b"\x68\x00\x4e\x00" + A, [A], []),
]


@pytest.mark.parametrize(
    ("stream", "frames", "kinds"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_streams(plugin: Plugin, stream: bytes, frames: list, kinds: list) -> None:
    got, errors, _ = extract_all(plugin, stream)
    assert got == frames and [e.kind for e in errors] == kinds


CELLS_END = 2 * (2 + 0x2A)  # A's 0x79 entry: id, L, 14 x 3 bytes (hex characters)
PARSE_ERRORS = [
    # (id, frame, kind)
    ("unknown-id-0x88", reply(A_INFO.replace("000e8b0000", "000e880000")), "tlv"),
    ("cells-past-payload", reply("79ff010ced"), "tlv"),
    ("cells-not-whole-records", reply("792b" + A_INFO[4:CELLS_END] + "0e" + A_INFO[CELLS_END:]),
     "tlv"),
    ("no-cells", reply("7900" + A_INFO[CELLS_END:]), "tlv"),
    ("missing-current", reply(A_INFO.replace("8480d0", "")), "malformed"),
    ("no-end-flag", A[:-5] + b"\x69" + A[-4:-2] + (int.from_bytes(A[-2:]) + 1).to_bytes(2),
     "malformed"),
    ("request-echo", READ_ALL, "unexpected"),
    ("write-reply", reply(A_INFO, command=0x02), "unexpected"),
    ("empty-reply", reply(""), "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("frame", "kind"), [c[1:] for c in PARSE_ERRORS],
                         ids=[c[0] for c in PARSE_ERRORS])  # fmt: skip
def test_parse_rejects(plugin: Plugin, frame: bytes, kind: str) -> None:
    with pytest.raises(FrameError) as err:
        plugin.parse(frame)
    assert err.value.kind == kind


# -- current and temperature encodings ----------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "version", "expected"),
    [
        (0x87D0, 1, 20.0),  # SPEC: charge 20 A
        (0x07D0, 1, -20.0),  # SPEC: discharge 20 A
        (0x8000, 1, 0.0),
        (0x0000, 1, 0.0),
        (11000, 0, -10.0),  # SPEC: offset 10000, above it = discharge
        (9500, 0, 5.0),
        (10000, 0, 0.0),  # the vendor example at rest
    ],
)
def test_current_encodings(raw: int, version: int, expected: float) -> None:
    assert amps(raw, version) == pytest.approx(expected)


def test_current_encoding_follows_0xc0(plugin: Plugin) -> None:
    v1 = A_INFO.replace("8480d0", "8407d0")
    v0 = v1.replace("c001", "")  # NW_1_0_0 firmware: no 0xC0
    assert plugin.parse(reply(v1))[1]["current"] == pytest.approx(-20.0)
    assert plugin.parse(reply(v0))[1]["current"] == pytest.approx(80.0)  # (10000 - 2000) x 10 mA
    assert plugin.parse(reply(v1.replace("c001", "c000")))[1]["current"] == pytest.approx(80.0)
    forced = plugins.load("jkbms", {"current_encoding": "sign_bit"})  # the port option
    assert forced.parse(reply(v0))[1]["current"] == pytest.approx(-20.0)
    offset = plugins.load("jkbms", {"current_encoding": "offset"})
    assert offset.parse(reply(v1))[1]["current"] == pytest.approx(80.0)
    with pytest.raises(ValueError):
        plugins.load("jkbms", {"current_encoding": "both"})


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, 0), (25, 25), (99, 99), (100, 0), (101, -1), (120, -20)]
)
def test_temperature_encoding(raw: int, expected: int) -> None:
    assert celsius(raw) == expected


def test_negative_temperatures_in_a_frame(plugin: Plugin) -> None:
    cold = A_INFO.replace("80001d81001e82001c", "80007381006582006e")  # 115, 101, 110
    state = plugin.state(dict([plugin.parse(reply(cold))]))
    assert state["mosfet_temperature"] == -15 and state["temperatures"] == [-1, -10]


# -- simulator ---------------------------------------------------------------------------------
def test_simulator_reply_bytes(plugin: Plugin) -> None:
    pack = BatteryModel(cells=4, capacity=100.0, soc=50.0, current=-2.5, temperatures=[21.0, 22.0])
    sim = JkSimulator({1: pack})
    (frame,) = sim.feed(READ_ALL)
    assert frame[:2] == b"\x4e\x57" and int.from_bytes(frame[2:4]) + 2 == len(frame)
    assert frame[8:15].hex() == "060001790c010c"  # CMD echoed, SRC 0, TYPE 1, 4 cells
    assert frame[-4:] == (sum(frame[:-4]) & 0xFFFF).to_bytes(4)
    assert frame[-11:-4].hex() == "c0010000000068"  # version 1, record 0, end flag
    fields = plugin.parse(frame)[1]
    assert fields["current_raw"] == 250 and fields["cell_numbers"] == [1, 2, 3, 4]
    (read,) = sim.feed(pack_frame(0x03, b"\x00"))  # powermon's read with ID 0
    assert read[8] == 0x03 and plugin.parse(read)[0] == "all"
    assert sim.feed(pack_frame(0x03, b"\x85")) == []  # a single-ID read: not simulated
    assert sim.feed(b"\x4e\x00\x68" + READ_ALL[:-1] + b"\x00") == []  # bad check: ignored


@pytest.mark.parametrize("amps_", [25.0, -25.0, 0.0])
def test_simulator_version_0_and_cold(plugin: Plugin, amps_: float) -> None:
    pack = BatteryModel(current=amps_, temperatures=[-5.0, -12.0], mosfet_temperature=-3.0)
    sim = JkSimulator({1: pack}, protocol_version=0)
    state = poll(plugin, sim, 1)
    assert state["current"] == pytest.approx(amps_)
    assert state["temperatures"] == [-5.0, -12.0] and state["mosfet_temperature"] == -3.0
    assert sim.feed(READ_ALL)[0][-9 - 16] == 0xB7  # the software version is last: no 0xC0


def test_simulator_fets_alarms_and_one_pack_only(plugin: Plugin) -> None:
    sim = JkSimulator({1: BatteryModel(charge_fet=False, faults={"low_soc", "cell_imbalance"})})
    state = poll(plugin, sim, 1)
    assert not state["charge_fet"] and state["discharge_fet"]
    assert {n for n, level in state["alarms"].items() if level} == {"low_soc", "cell_imbalance"}
    assert state["bms_ccl"] == 100.0 and state["bms_dcl"] == 150.0
    with pytest.raises(ValueError):
        JkSimulator({1: BatteryModel(), 2: BatteryModel()})


def test_the_manufacturer_id_is_the_serial_number():
    """0xBA is the id dbus-serialbattery tells JK packs apart by; the factory text means none."""
    from bmsbank.services.poller.plugins import load
    from bmsbank.services.poller.plugins.jkbms.family import serial_of

    plugin = load("jkbms", {})
    part, fields = plugin.parse(A)
    assert plugin.state({part: fields})["serial"] == "BT3072020120000200521001"
    assert serial_of("Input Userdata") == "" and serial_of("  JK42  ") == "JK42"
