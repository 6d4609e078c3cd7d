"""Seplos V2 plugin and simulator: captured frames, reply identification, malformed input."""

from __future__ import annotations

import pytest

from bmsbank.errors import FrameError
from bmsbank.schema import ALARMS, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, length_field
from bmsbank.services.poller.plugins.seplos.family import (
    PROTECTIONS,
    WARNINGS,
    frame,
)
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, MultidropContract, SimLink, extract_all

ESPH = "syssi/esphome-seplos-bms README.md (also tests/components/seplos_bms/frames.h)"
ICH = "ichernev/seplos-bms-tool notes.md (pcap of the vendor software, lines joined)"
KSC = "kscholty/SolarControl src/seplosbms_impl.cpp (comment; '$' there is the CR)"
OBM = "privatecoder/openbms-monitor crates/openbms-proto/tests/captures.rs (fw 16.06)"
FLIP = "flip555/bms_connector custom_components/bms_connector/modules/bms/seplos/v2.py"
RUDOC = "protocol-485.md §10, Enjie EMU1101 (Seplos-derived) RS485 notes (find_string 71071203895)"

T0, T1, T3 = "~20004642E00200FD37\r", "~20014642E00201FD35\r", "~20034642E00203FD31\r"
S0, S1 = "~20004644E00200FD35\r", "~20014644E00201FD33\r"


def cap(source: str, text: str, part: str, expect: dict, request: str) -> Captured:
    """A captured ASCII frame (as published, without its CR) and the request it answers."""
    return Captured(source, (text + "\r").encode().hex(), part, expect, request.encode().hex())


def mv(*values: int) -> list[float]:
    return [v / 1000 for v in values]


CAPTURED = [
    # A: 0x42, 16 cells 3.286-3.316 V, sensors 25.1 24.5 23.6 25.1 / ambient 25.0 / MOSFET 24.7,
    # current 0xFD5C = -6.76 A (discharge), 52.80 V, 133.90 of 170.00 Ah, SoC 78.7 %, 70 cycles
    # (esphome-seplos-bms asserts exactly these values in its own test).
    cap(ESPH, "~2000460010960001100CD70CE90CF40CD60CEF0CE50CE10CDC0CE90CF00CE80CEF0CEA0CDA0CDE0"
        "CD8060BA60BA00B970BA60BA50BA2FD5C14A0344E0A426803134650004603E8149F0000000000000000DC6C",
        "telemetry", {
            "cells": mv(3287, 3305, 3316, 3286, 3311, 3301, 3297, 3292, 3305, 3312, 3304, 3311,
                        3306, 3290, 3294, 3288),
            "temperatures": [25.1, 24.5, 23.6, 25.1], "ambient_temperature": 25.0,
            "mosfet_temperature": 24.7, "current": -6.76, "voltage": 52.80, "remaining": 133.90,
            "capacity": 170.0, "soc": 78.7, "rated_capacity": 180.0, "cycles": 70, "soh": 100.0,
            "port_voltage": 52.79, "extension": [0, 0, 0, 0]}, T0),
    # B: 0x42 at rest: 0.00 A, 53.26 V, SoC 46.4 %, 74.36 of 160.00 Ah, 1 cycle, 11.5 10.5 10.2
    # 11.8 / 15.4 / 11.7 °C; newer firmware fills the "reserved" words (-5, -3 mA, 10.3, 1.1 kWh).
    cap(ICH, "~2000460010960000100D010D020D010D010D000D000CFF0D000D010D020D020D010D000D020D000D"
        "00060B1E0B140B110B210B450B20000014CE1D0C0A3E8001D03E80000103E814CEFFFBFFFD0067000BDD9C",
        "telemetry", {
            "cells": mv(3329, 3330, 3329, 3329, 3328, 3328, 3327, 3328, 3329, 3330, 3330, 3329,
                        3328, 3330, 3328, 3328),
            "temperatures": [11.5, 10.5, 10.2, 11.8], "ambient_temperature": 15.4,
            "mosfet_temperature": 11.7, "current": 0.0, "voltage": 53.26, "soc": 46.4,
            "remaining": 74.36, "capacity": 160.0, "cycles": 1, "port_voltage": 53.26,
            "extension": [0xFFFB, 0xFFFD, 103, 11]}, T0),
    # C: 0x42 of a bench board: cells 7-16 dead, sensors 3 and 4 unplugged read 2231 = -50.0 °C
    # exactly, 17.96 V, 0 A, SoC 49.9 %, port voltage 0 (output off).
    cap(KSC, "~2000460010960001100D450D0C0CBB0C570B1107A30018000000000000000000000000000000000"
        "000060BA90BA908B708B70BB30BAE000007041D4B0A3A9801F33A98000103E800000000000000000000DEE5",
        "telemetry", {
            "cells": mv(3397, 3340, 3259, 3159, 2833, 1955, 24, *[0] * 9),
            "temperatures": [25.4, 25.4, -50.0, -50.0], "ambient_temperature": 26.4,
            "mosfet_temperature": 25.9, "current": 0.0, "voltage": 17.96, "soc": 49.9,
            "remaining": 74.99, "capacity": 150.0, "port_voltage": 0.0}, T0),
    # D: 0x42 from ADR 1: 3.333-3.335 V, 12.4 11.7 11.8 12.4 / 17.3 / 13.3 °C, 0 A, 53.34 V,
    # SoC 79.1 %, 221.70 of 280.00 Ah, 7 cycles (openbms-monitor asserts these in its test).
    cap(OBM, "~2001460010960001100D050D050D060D050D050D070D060D060D060D060D060D060D060D060D070D"
        "07060B270B200B210B270B580B30000014D6569A0A6D6003176D60000703E814D9FFF3FF770359027FDDB1",
        "telemetry", {
            "cells": mv(3333, 3333, 3334, 3333, 3333, 3335, 3334, 3334, 3334, 3334, 3334, 3334,
                        3334, 3334, 3335, 3335),
            "temperatures": [12.4, 11.7, 11.8, 12.4], "ambient_temperature": 17.3,
            "mosfet_temperature": 13.3, "current": 0.0, "voltage": 53.34, "soc": 79.1,
            "remaining": 221.70, "capacity": 280.0, "cycles": 7, "port_voltage": 53.37}, T1),
    # E: 0x42 from ADR 3: current 0xF8EE = -18.10 A, 52.79 V, SoC 93.5 %, 284.36 of 304.00 Ah.
    cap(FLIP, "~2003460010960003100CE40CE10CE40CE20CE40CE10CE30CE30CE30CE50CE20CE50CE40CE50CE2"
        "0CE5060B360B320B340B310B6B0B44F8EE149F6F140A76C003A776C0000603E8149F00380000029B021ADC9E",
        "telemetry", {
            "cells": mv(3300, 3297, 3300, 3298, 3300, 3297, 3299, 3299, 3299, 3301, 3298, 3301,
                        3300, 3301, 3298, 3301),
            "temperatures": [13.9, 13.5, 13.7, 13.4], "ambient_temperature": 19.2,
            "mosfet_temperature": 15.3, "current": -18.10, "voltage": 52.79, "soc": 93.5,
            "remaining": 284.36, "capacity": 304.0, "cycles": 6}, T3),
    # F: 0x42 of the Enjie variant while discharging (its 0x44, J below, says system state 1):
    # current 0xFB96 = -11.30 A, 52.08 V, SoC 29.6 %, 92.98 of 314.00 Ah.
    cap(RUDOC, "~2000460010960000100CB80CB60CB80CB80CB70CB70CB70CB80CB30CB70CB80CB80CB50CB70CB6"
        "0CB6060B9E0B950B920BA00BC80BA9FB96145824520A7AA801287AA8000503E8145A00280000030802C0DC99",
        "telemetry", {
            "cells": mv(3256, 3254, 3256, 3256, 3255, 3255, 3255, 3256, 3251, 3255, 3256, 3256,
                        3253, 3255, 3254, 3254),
            "temperatures": [24.3, 23.4, 23.1, 24.5], "ambient_temperature": 28.5,
            "mosfet_temperature": 25.4, "current": -11.30, "voltage": 52.08, "soc": 29.6,
            "remaining": 92.98, "capacity": 314.0, "cycles": 5}, T0),
    # G: 0x44, no alarm, switch byte 03 (both FETs on), system state 0x10 standby.
    cap(ICH, "~2000460080620000100000000000000000000000000000000006000000000000000014000000000000"
        "0300001000000000000000000010EB33", "status", {
            "cell_alarms": [0] * 16, "sensor_alarms": [0] * 6, "custom_count": 20,
            "events": [0] * 6, "switches": 3, "charge_fet": True, "discharge_fet": True,
            "balance": [0, 0], "system_state": 0x10, "event_bits": 0}, S0),
    # H: 0x44 of board C: cells 5-16 and sensors 3-4 low (01), pack voltage low; events 12 48 80
    # 00 00 10 = temperature-sensor and cell-difference faults, cell UV protection, pack low-V
    # alarm, discharge under-temperature protection, charging forbidden (cell low); FETs off.
    cap(KSC, "~2000460080620001100000000001010101010101010101010106000001010000000114124880000010"
        "0000001000000000000000000010EB0E", "status", {
            "cell_alarms": [0] * 4 + [1] * 12, "sensor_alarms": [0, 0, 1, 1, 0, 0],
            "current_alarm": 0, "voltage_alarm": 1, "events": [0x12, 0x48, 0x80, 0, 0, 0x10],
            "switches": 0, "charge_fet": False, "discharge_fet": False, "system_state": 0x10}, S0),
    # I: 0x44 from ADR 1 while charging: no alarm, both FETs on, system state 0x02.
    cap(OBM, "~2001460080620001100000000000000000000000000000000006000000000000000014000000000000"
        "0300000200000000000000000002EB2F", "status", {
            "switches": 3, "charge_fet": True, "discharge_fet": True, "system_state": 0x02,
            "balance": [0, 0], "event_bits": 0}, S1),
    # J: 0x44 of the Enjie variant, polled with F: system state 0x01 discharging.
    cap(RUDOC, "~200046008062000010000000000000000000000000000000000600000000000000001400000000"
        "00000300000100000000000000000001EB33", "status", {
            "switches": 3, "system_state": 0x01, "event_bits": 0}, S0),
]  # fmt: skip

TELE_A, STATUS_G, STATUS_H = CAPTURED[0].raw, CAPTURED[6].raw, CAPTURED[7].raw


class TestSeplos(MultidropContract):
    plugin_name = "seplos"
    address = None  # the captures come from ADR 0, 1 and 3 (see test_responder_is_the_adr)
    captured = CAPTURED
    requests = {"telemetry": T0.encode().hex(), "status": S0.encode().hex()}

    def checksum_index(self, length: int) -> int:
        # the first CHKSUM digit (D or E in every capture: flipping bit 0 keeps it hex, which
        # the contract's 8/9 branch would not)
        return length - 5


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("seplos")


def test_metadata(plugin: Plugin) -> None:
    assert (plugin.baudrate, plugin.multidrop, plugin.default_address) == (19200, True, 0)
    assert plugin.addresses == range(16) and not plugin.controls


@pytest.mark.parametrize(
    ("address", "telemetry", "status"),
    [(1, T1, S1), (15, "~200F4642E0020FFD0B\r", "~200F4644E0020FFD09\r")],
    ids=["adr-1", "adr-15"],
)  # PDF20 Tables 7 and 10
def test_requests_for_other_addresses(plugin: Plugin, address, telemetry, status) -> None:
    assert [q.request for q in plugin.queries(address)] == [telemetry.encode(), status.encode()]


def test_length_field() -> None:
    assert length_field(0x12) == 0xD012 and length_field(150) == 0x1096  # PDF20 §3.2.3, captures
    assert length_field(0) == 0 and length_field(2) == 0xE002


def test_bare_replies_are_identified_by_shape(plugin: Plugin) -> None:
    for c in CAPTURED:
        assert plugin.parse(c.raw) == plugin.parse(c.raw, c.request_bytes), c.source


def test_reply_of_the_other_shape_is_unexpected(plugin: Plugin) -> None:
    with pytest.raises(FrameError) as err:
        plugin.parse(STATUS_G, T0.encode())
    assert err.value.kind == "unexpected"
    with pytest.raises(FrameError) as err:
        plugin.parse(TELE_A, S0.encode())
    assert err.value.kind == "unexpected"


def test_responder_is_the_adr(plugin: Plugin) -> None:
    for c, adr in zip(CAPTURED, (0, 0, 0, 1, 3, 0, 0, 0, 1, 0), strict=True):
        plugin.parse(c.raw, c.request_bytes, adr)
        with pytest.raises(FrameError) as err:
            plugin.parse(c.raw, c.request_bytes, adr + 1)
        assert err.value.kind == "address"


def _set(raw: bytes, index: int, char: bytes) -> bytes:
    return raw[:index] + char + raw[index + 1 :]


def _framed(text: bytes) -> bytes:
    """``text`` (VER .. INFO as ASCII hex) between SOI and a correct CHKSUM and EOI."""
    return b"~" + text + b"%04X\r" % ((0x10000 - sum(text)) & 0xFFFF)


def _odd_lenid(raw: bytes) -> bytes:
    """LENID 0x095 with its right LCHKSUM (2), CHKSUM recomputed: only the odd length is wrong."""
    return _framed(raw[1:9] + b"2095" + raw[13:-5])


MALFORMED = [
    ("non-hex-in-info", _set(TELE_A, 40, b"G"), "hex"),
    ("non-hex-in-header", _set(TELE_A, 3, b"g"), "hex"),
    ("wrong-lchksum", _set(TELE_A, 9, b"2"), "length_check"),
    ("wrong-chksum", _set(TELE_A, len(TELE_A) - 3, b"0"), "checksum"),
    ("odd-lenid", _odd_lenid(TELE_A), "malformed"),
    ("no-cr", _set(TELE_A, len(TELE_A) - 1, b"\n"), "malformed"),
]


@pytest.mark.parametrize(("raw", "kind"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_frames_are_rejected(plugin: Plugin, raw: bytes, kind: str) -> None:
    frames, errors, _ = extract_all(plugin, raw)
    assert not frames and errors and errors[0].kind == kind


@pytest.mark.parametrize(
    ("rtn", "meaning"),
    [(0x02, "CHKSUM error"), (0x04, "CID2 invalid"), (0x90, "unknown code")],
    ids=["rtn-02", "rtn-04", "rtn-90"],
)
def test_error_rtn_reply_is_rejected(plugin: Plugin, rtn: int, meaning: str) -> None:
    reply = frame(0, rtn)
    if rtn == 0x04:
        assert reply == b"~200046040000FDB0\r"  # the shape of the RTN 00 empty replies (ICH)
    (got,), errors, _ = extract_all(plugin, reply)
    assert not errors  # well framed: the scanner passes it, parsing refuses it
    with pytest.raises(FrameError) as err:
        plugin.parse(got, T0.encode())
    assert err.value.kind == "malformed" and meaning in err.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"~200046000000FDB4\r",  # RTN 00 with empty INFO (the 0x4F reply, ICH): no part
        frame(0, 0, bytes.fromhex(TELE_A[13:-5].decode()) + b"\0\0"),  # P says 10, 11 present
        frame(0, 0, bytes.fromhex(STATUS_G[13:-5].decode())[:-1]),  # one byte short
        frame(0, 0x42, b"\0"),  # CID2 0x42: an echoed request is not a reply
        _framed(b"200047000000"),  # CID1 0x47: not a battery BMS reply
    ],
    ids=["empty-info", "extra-words", "status-short", "echoed-request", "other-cid1"],
)
def test_inconsistent_replies_are_rejected(plugin: Plugin, raw: bytes) -> None:
    with pytest.raises(FrameError):
        plugin.parse(raw)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 8])
def test_sensor_count_other_than_six(plugin: Plugin, count: int) -> None:
    models = {0: BatteryModel(temperatures=[20.0 + i for i in range(count)])}
    raw = simulators.create("seplos", models).feed(T0.encode())[0]
    fields = plugin.parse(raw)[1]
    assert fields["sensor_count"] == count + 2
    assert fields["temperatures"] == pytest.approx(models[0].temperatures, abs=0.01)
    assert fields["ambient_temperature"] == pytest.approx(25.0)
    info = bytes.fromhex(raw[13:-5].decode())
    short = frame(0, 0, info[:35] + b"\x01" + info[36:38] + info[36 + 2 * (count + 2) :])
    one = plugin.parse(short)[1]  # K = 1: no ambient and no MOSFET reading
    assert len(one["temperatures"]) == 1 and one["mosfet_temperature"] is None


def state_of(plugin: Plugin, *frames: bytes) -> dict:
    parts = dict(plugin.parse(f) for f in frames)
    return validate_state(make_state("ttyUSB0", 0, "seplos", 0, plugin.state(parts), {}))


def test_captured_pair_builds_state(plugin: Plugin) -> None:
    state = state_of(plugin, TELE_A, STATUS_G)
    assert state["voltage"] == pytest.approx(52.80) and state["current"] == pytest.approx(-6.76)
    assert state["soc"] == pytest.approx(78.7) and state["capacity"] == pytest.approx(170.0)
    assert state["temperatures"] == pytest.approx([25.1, 24.5, 23.6, 25.1])
    assert state["mosfet_temperature"] == pytest.approx(24.7)
    assert state["balancing"] == [0] * 16 and state["charge_fet"] and state["discharge_fet"]
    assert not any(state["alarms"].values())


def test_captured_alarms(plugin: Plugin) -> None:
    alarms = state_of(plugin, CAPTURED[2].raw, STATUS_H)["alarms"]
    raised = {name: level for name, level in alarms.items() if level}
    assert raised == {"internal_failure": 2, "cell_imbalance": 2, "low_cell_voltage": 2,
                      "low_voltage": 1, "low_temperature": 2}  # fmt: skip


def test_alarm_tables_use_schema_names() -> None:
    assert set(WARNINGS.values()) <= set(PROTECTIONS.values()) <= set(ALARMS)
    assert not set(WARNINGS) & set(PROTECTIONS)


def test_balancing_bits(plugin: Plugin) -> None:
    info = bytearray.fromhex(STATUS_G[13:-5].decode())
    info[36], info[37] = 0b0000_0101, 0b1000_0000  # cells 1, 3 and 16
    state = state_of(plugin, TELE_A, frame(0, 0, bytes(info)))
    assert [i + 1 for i, f in enumerate(state["balancing"]) if f] == [1, 3, 16]


def test_simulator_refuses_other_commands_and_ignores_absent_packs(plugin: Plugin) -> None:
    sim = simulators.create("seplos", {0: BatteryModel()})
    (reply,) = sim.feed(frame(0, 0x47, b"\0"))
    assert reply == b"~200046040000FDB0\r"
    assert sim.feed(T1.encode()) == []
    reply = SimLink(sim).exchange(T0.encode(), lambda buf: plugin.extract(buf, LinkStats()))
    assert plugin.parse(reply)[0] == "telemetry"
