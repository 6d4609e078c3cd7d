"""Daren 485 plugin and simulator: captured frames, reply identification, malformed input, a bus."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bmsbank.config import parse
from bmsbank.errors import FrameError
from bmsbank.schema import ALARMS, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, length_field
from bmsbank.services.poller.plugins.daren_485.family import (
    ALARM_WORDS,
    INFO_AT,
    frame,
)
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from bmsbank.state import make_state
from tests.plugin_contract import Captured, MultidropContract, SimLink, extract_all, poll

CPT = "cpttinkering/daren-485 README.md (RS485 tap of DR48100JC-03-V2 packs, address 1)"
M5 = "m0n5t3r/esphome-daren-bms tests.cpp payloads[] (a Nielftor NIE-JC48100 at 9600 Bd)"
TIAN = "wire67/esphome_sacredsun_rs485 README.md 'Captured Sample Frame Response' (15S, joined)"
TR = ("a tr1363 parser's test fixture, tests test_status_frame (find_string 63035539093; "
      "its repository is not named in the index)")  # fmt: skip
REC = ("a BMS recorder's canned reply BMS_DEV_REPONSE (find_string 32509491356; its repository "
       "is not named in the index)")  # fmt: skip

# the requests, as CPT captured them (also DSB's create_command_* docstrings)
R42, R47, R51 = "~22014A42E00201FD28\r", "~22014A47E00201FD23\r", "~22014A510000FDA0\r"
RB3, RB4 = "~22014AB0600A010103FF00FB6C\r", "~22014AB0600A010104FF00FB6B\r"


def cap(source: str, text: str, part: str, expect: dict, request: str) -> Captured:
    """A captured ASCII frame (as published, without its CR) and the request it answers."""
    return Captured(source, (text + "\r").encode().hex(), part, expect, request.encode().hex())


def mv(*values: int) -> list[float]:
    return [v / 1000 for v in values]


CAPTURED = [
    # 0: 0x42 at rest: SoC 67.00 %, 53.12 V, 16 cells 3.291-3.330 V, ambient 27.0, pack 26.0,
    # MOS 27.0 °C, four sensors 26.0 °C, 0.00 A, SoH 80 %, 53.60 of 80.00 Ah, 204 cycles, FET
    # status 0x0023 (both FETs on), no alarm; newer firmware's 13 bytes follow (all 0).
    cap(CPT, "~22014A00E0C6001A2C14C0100D010D010CDB0D010D010D000D020CE60CF80D020D010CDF0D020D020D0"
        "00CE0010E0104010E040104010401040104000000000050011F4014F000CC00000000000000000023000"
        "0000000000000000000000000000000000000000000D582", "realtime", {
            "soc": 67.0, "voltage": 53.12, "cell_count": 16,
            "cells": mv(3329, 3329, 3291, 3329, 3329, 3328, 3330, 3302, 3320, 3330, 3329, 3295,
                        3330, 3330, 3328, 3296),
            "ambient_temperature": 27.0, "pack_temperature": 26.0, "mosfet_temperature": 27.0,
            "temperatures": [26.0] * 4, "current": 0.0, "soh": 80, "capacity": 80.0,
            "remaining": 53.6, "cycles": 204, "fet_status": 0x23, "alarm_status": 0,
            "balancing": 0, "tail": [0] * 13}, R42),
    # 1: 0x42 while discharging: current 0xFBA4 = -11.16 A and current status 0x0002 (bit 1
    # "discharging"): + = charge as BASEN says. 52.29 V, SoC 57.70 %, 92.32 of 160.00 Ah, 237
    # cycles, ambient 14.0, pack 16.0, MOS 15.0, sensors 17.0 17.0 15.0 16.0 °C.
    cap(REC, "~22014A00E0C600168A146D100CC90CC70CC70CC70C9F0CC90CC60CCA0CC60CCB0CC20CC90CC10CC"
        "90CC60CC8008C00A000960400AA00AA009600A0FBA400000061013E80241000ED0000000200000000002300"
        "00000000000000000000000000000000000000000000D3F4", "realtime", {
            "soc": 57.7, "voltage": 52.29, "current": -11.16, "current_status": 0x0002,
            "cells": mv(3273, 3271, 3271, 3271, 3231, 3273, 3270, 3274, 3270, 3275, 3266, 3273,
                        3265, 3273, 3270, 3272),
            "ambient_temperature": 14.0, "pack_temperature": 16.0, "mosfet_temperature": 15.0,
            "temperatures": [17.0, 17.0, 15.0, 16.0], "soh": 97, "capacity": 160.0,
            "remaining": 92.32, "cycles": 237}, R42),
    # 2: 0x42 charging at the top: +1.19 A with current status 0x0001 (bit 0 "charging"), SoC
    # 100 %, 54.26 V, cell 16 at 3.694 V: voltage status 0x0110 (cell over-voltage alarm, cell
    # difference alarm), alarm status 0x0001 (cell difference), cell 16 balancing (0x8000).
    cap(TR, "~22014A00E0C60027101532100D2B0D2C0D2A0D290D2C0D2A0D2B0D2C0D2A0D2A0D2E0D2B0D2D0D2B"
        "0D2C0E6E0122011801220401180122012201220077000000610157C357C300DA01100001000000010023000"
        "0000000000000800000000000000000000000000000D4FD", "realtime", {
            "soc": 100.0, "voltage": 54.26, "current": 1.19, "current_status": 0x0001,
            "voltage_status": 0x0110, "alarm_status": 0x0001, "balance_low": 0x8000,
            "balancing": 0x8000, "capacity": 224.67, "remaining": 224.67, "cycles": 218,
            "temperatures": [28.0, 29.0, 29.0, 29.0]}, R42),
    # 3: 0x42 of a NIE-JC48100: SoC 96.82 %, 53.26 V, ambient 16.0, pack 12.9, MOS 13.9 °C,
    # sensors 13.1 13.3 12.5 12.8 °C, 99.65 of 102.92 Ah, 1 cycle, FET status 0x1023 (bit 12:
    # beeper enabled), I/O status 0x4000 at the end.
    cap(M5, "~22014A00E0C60025D214CE100D010D010D010D010D020D020D010D010D010D010D010D010D020D010"
        "D010D0100A00081008B0400830085007D008000000000006401283426ED000100000000000000001023000"
        "0000000000000000000000000000000000000004000D5EF", "realtime", {
            "soc": 96.82, "voltage": 53.26, "ambient_temperature": 16.0,
            "pack_temperature": 12.9, "mosfet_temperature": 13.9,
            "temperatures": [13.1, 13.3, 12.5, 12.8], "capacity": 102.92, "remaining": 99.65,
            "cycles": 1, "soh": 100, "fet_status": 0x1023, "tail": [0] * 11 + [0x40, 0]}, R42),
    # 4: 0x42 of a 15-cell SacredSun (Tian) pack: SoC 82.20 %, 50.02 V, cells 3.335-3.336 V,
    # ambient/pack/MOS 31.0 °C, sensors 32.0 31.0 31.0 31.0 °C, 82.83 of 100.76 Ah, 38 cycles.
    cap(TIAN, "~22014A0020C200201C138A0F0D070D070D070D070D080D070D070D070D070D070D070D070D070D0"
        "70D0701360136013604014001360136013600000000006401275C205B0026000000000000000010230000"
        "000000000000000000000000000000000000000000D6B8", "realtime", {
            "soc": 82.2, "voltage": 50.02, "cell_count": 15,
            "cells": mv(3335, 3335, 3335, 3335, 3336, *[3335] * 10),
            "temperatures": [32.0, 31.0, 31.0, 31.0], "mosfet_temperature": 31.0,
            "capacity": 100.76, "remaining": 82.83, "cycles": 38, "soh": 100}, R42),
    # 5: 0x47: cells 3.65/2.50 V, charge current limit 120.00 A, 16 cells, design 80.00 Ah, no
    # product barcode (0xFF), BMS barcode "DJM2205180061" (space padded).
    cap(CPT, "~22014A006082000E4209C40073002D2EE00E4209C400102EE01F4005A00000FFFFFFFFFFFFFFFFFF"
        "FFFFFFFFFFFFFFFFFFFFFF444A4D3232303531383030363120202020202020E02C", "params", {
            "cell_high_limit": 3.65, "cell_low_limit": 2.5, "charge_current_limit": 120.0,
            "param_cells": 16, "design_capacity": 80.0, "product_barcode": "",
            "bms_barcode": "DJM2205180061"}, R47),
    # 6: 0x47 of the NIE pack: 120.00 A, design 102.92 Ah, barcodes NUL padded.
    cap(M5, "~22014A006082000E4209C4003CFFFB2EE00E4209C400102EE0283405A00000494E2D45434A38343031"
        "00300000000000000000494E2D45434A3834303132304335303337320036E2A7", "params", {
            "charge_current_limit": 120.0, "design_capacity": 102.92,
            "product_barcode": "IN-ECJ8401", "bms_barcode": "IN-ECJ840120C50372"}, R47),
    # 7: 0x51: hardware type "T1_G", product "HUANY04", project "16S100A", software 01.00.02,
    # boot version 01 01 (35 bytes).
    cap(CPT, "~22014A00604654315F472020202020204855414E593034202020313653313030412020200100020101"
        "EFB6", "maker", {
            "hardware_type": "T1_G", "product_code": "HUANY04", "project_code": "16S100A",
            "software": [1, 0, 2], "version": "01.00.02"}, R51),
    # 8: 0x51 of the NIE pack (37 bytes): "T1", "STD08", "16S100JC25", software 01.05.05.
    cap(M5, "~22014A00204A54310000000000000000535444303800000000003136533130304A4332350105050215"
        "4843EF0D", "maker", {
            "hardware_type": "T1", "product_code": "STD08", "project_code": "16S100JC25",
            "version": "01.05.05"}, R51),
    # 9: B0 module 3: pack serial "JD2M02150860 1" (then spaces and 0xFF), the rest 0xFF.
    cap(CPT, "~22014A0040EEB0010103FF714A44324D30323135303836302031202020202020" + "FF" * 92
        + "00C043", "serial", {
            "module": 3, "pack_serial": "JD2M02150860 1", "product_id": "", "bms_id": "",
            "born": [0xFF] * 3, "manufacturer": ""}, RB3),
    # 10: B0 module 3 of the NIE pack: serial and BMS id "NIE-JC4810025C30276", product
    # "NIE-JC48100", born 2025-09-24, manufacturer "NIE".
    cap(M5, "~22014A0040EEB0010103FF714E49452D4A4334383130303235433330323736000000000000000000000"
        "04E49452D4A433438313030000000000000000000000000000000000000004E49452D4A4334383130303"
        "23543333032373600000000000000000000001909184E49450000000000000000000000000000000000C"
        "E61",
        "serial", {
            "pack_serial": "NIE-JC4810025C30276", "product_id": "NIE-JC48100",
            "bms_id": "NIE-JC4810025C30276", "born": [25, 9, 24], "manufacturer": "NIE"}, RB3),
    # 11: B0 module 4: 53.60 of 80.00 Ah, design 100.00 Ah, 15239 Ah charged, 14032 Ah
    # discharged in all (energy words 0x44E1 / 0x39C3).
    cap(CPT, "~22014A00D030B0010104FF0014F01F40271000003B87000036D044E139C3F38A", "capacity", {
            "module": 4, "remaining": 53.6, "capacity": 80.0, "design_capacity": 100.0,
            "charged_total": 15239, "discharged_total": 14032}, RB4),
    # 12: B0 module 4 of the NIE pack (function length 0x12): 99.65 of 102.92 Ah, design 100 Ah,
    # 237 Ah / 12.9 kWh charged, 153 Ah / 8.0 kWh discharged.
    cap(M5, "~22014A00D030B0010104FF1226ED28342710000000ED0000009900810050F3B3", "capacity", {
            "remaining": 99.65, "capacity": 102.92, "design_capacity": 100.0,
            "charged_total": 237, "discharged_total": 153, "charged_energy": 12.9,
            "discharged_energy": 8.0}, RB4),
]  # fmt: skip

RT_CPT, RT_DISCHARGING, RT_ALARMS, RT_15S = (CAPTURED[i].raw for i in (0, 1, 2, 4))


def _framed(text: bytes, soi: bytes = b"~") -> bytes:
    """``text`` (VER .. INFO as ASCII hex) between SOI and a correct CHKSUM and EOI."""
    return soi + text + b"%04X\r" % ((0x10000 - sum(text)) & 0xFFFF)


def _set(raw: bytes, index: int, char: bytes) -> bytes:
    return raw[:index] + char + raw[index + 1 :]


def info_of(raw: bytes) -> bytearray:
    """The INFO bytes of a captured frame."""
    return bytearray.fromhex(raw[1 + 2 * INFO_AT : -5].decode())


def realtime_with(raw: bytes, **words: int) -> bytes:
    """A captured 16-cell, 4-sensor realtime reply with some status words replaced."""
    info = info_of(raw)
    at = {"voltage_status": 66, "current_status": 68, "temperature_status": 70,
          "alarm_status": 72, "fet_status": 74}  # fmt: skip
    for name, value in words.items():
        info[at[name] : at[name] + 2] = value.to_bytes(2, "big")
    return frame(b"~", 1, 0x4A, 0, bytes(info))


class TestDaren485(MultidropContract):
    plugin_name = "daren_485"
    address = 1
    captured = CAPTURED
    requests = {"realtime": R42.encode().hex(), "params": R47.encode().hex(),
                "capacity": RB4.encode().hex(), "serial": RB3.encode().hex(),
                "maker": R51.encode().hex()}  # fmt: skip

    def checksum_index(self, length: int) -> int:
        return length - 5  # the first CHKSUM digit (the frame ends with CR)


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("daren_485")


def parts_of(plugin: Plugin, *indices: int) -> dict[str, dict]:
    return dict(plugin.parse(CAPTURED[i].raw, CAPTURED[i].request_bytes, 1) for i in indices)


def state_of(plugin: Plugin, parts: dict) -> dict:
    return validate_state(make_state("ttyUSB0", 1, plugin.name, 0, plugin.state(parts), {}))


def test_metadata(plugin: Plugin) -> None:
    assert (plugin.baudrate, plugin.multidrop, plugin.default_address) == (9600, True, 1)
    assert plugin.addresses == range(32) and not plugin.controls
    assert [o.name for o in plugin.info.options] == ["swap_fets"]


@pytest.mark.parametrize(("address", "expect"), [
    (2, "~22024A42E00201FD27\r"),  # Tian notes: "Address 2"
    (15, "~220F4A42E00201FD13\r"),
], ids=["adr-2", "adr-15"])  # fmt: skip
def test_realtime_request_keeps_command_group_01(plugin: Plugin, address, expect) -> None:
    assert plugin.queries(address)[0].request == expect.encode()
    assert plugin.queries(address)[3].request.startswith(
        b"~22%02X4AB0600A%02X0103FF00" % (address, address)
    )  # B0: the group is the address (CPT, DSB)


def test_length_field() -> None:
    assert length_field(0x12) == 0xD012 and length_field(0xC6) == 0xE0C6  # BASEN §4.2, CPT
    assert length_field(0xEE) == 0x40EE and length_field(0) == 0


def test_bare_replies_are_identified_by_shape(plugin: Plugin) -> None:
    for c in CAPTURED:
        assert plugin.parse(c.raw) == plugin.parse(c.raw, c.request_bytes), c.source


@pytest.mark.parametrize(("index", "request_"), [
    (5, R42), (0, R47), (11, RB3), (9, RB4), (7, RB4), (0, R51),
], ids=["params-to-realtime", "realtime-to-params", "capacity-to-serial", "serial-to-capacity",
        "maker-to-capacity", "realtime-to-maker"])  # fmt: skip
def test_reply_of_another_part_is_unexpected(plugin: Plugin, index: int, request_: str) -> None:
    with pytest.raises(FrameError) as err:
        plugin.parse(CAPTURED[index].raw, request_.encode())
    assert err.value.kind == "unexpected"


def test_responder_is_the_adr(plugin: Plugin) -> None:
    plugin.parse(RT_CPT, R42.encode(), 1)
    with pytest.raises(FrameError) as err:
        plugin.parse(RT_CPT, R42.encode(), 2)
    assert err.value.kind == "address"


def _odd_lenid(raw: bytes) -> bytes:
    """LENID 0x0C5 with its right LCHKSUM, CHKSUM recomputed: only the odd length is wrong."""
    return _framed(raw[1:9] + b"%04X" % length_field(0xC5) + raw[13:-5])


MALFORMED = [
    ("non-hex-in-info", _set(RT_CPT, 40, b"G"), "hex"),
    ("non-hex-in-header", _set(RT_CPT, 3, b"g"), "hex"),
    ("wrong-lchksum", _set(RT_CPT, 9, b"D"), "length_check"),
    ("wrong-chksum", _set(RT_CPT, len(RT_CPT) - 3, b"0"), "checksum"),
    ("odd-lenid", _odd_lenid(RT_CPT), "malformed"),
    ("no-cr", _set(RT_CPT, len(RT_CPT) - 1, b"\n"), "malformed"),
    ("lenid-beyond-bytes-then-garbage", RT_CPT[:40] + b"\r" * 3, None),
]


@pytest.mark.parametrize(("raw", "kind"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_frames_are_counted_and_skipped(plugin: Plugin, raw: bytes, kind) -> None:
    frames, errors, _ = extract_all(plugin, raw)
    assert not frames
    if kind is None:  # a frame cut short waits for the rest: no error yet
        assert not errors
    else:
        assert errors and errors[0].kind == kind
        # with a good reply behind it, the scanner resynchronises on that one
        frames, _, stats = extract_all(plugin, raw + RT_CPT)
        assert frames == [RT_CPT] and stats.noise_bytes >= len(raw) - 1


@pytest.mark.parametrize(("rtn", "meaning"), [
    (0x04, "CID2 invalid"), (0x90, "ADR error"), (0x77, "unknown code"),
], ids=["rtn-04", "rtn-90", "rtn-77"])  # fmt: skip
def test_error_rtn_reply_is_rejected(plugin: Plugin, rtn: int, meaning: str) -> None:
    (got,), errors, _ = extract_all(plugin, frame(b"~", 1, 0x4A, rtn))
    assert not errors  # well framed: the scanner passes it, parsing refuses it
    with pytest.raises(FrameError) as err:
        plugin.parse(got, R42.encode())
    assert err.value.kind == "malformed" and meaning in err.value.reason


@pytest.mark.parametrize(("raw", "kind"), [
    (frame(b"~", 1, 0x4A, 0), "malformed"),  # RTN 00 with empty INFO
    (frame(b"~", 1, 0x4A, 0, bytes(info_of(RT_CPT)[:85])), "malformed"),  # a status byte short
    (frame(b"~", 1, 0x4A, 0, bytes(info_of(CAPTURED[5].raw)[:64])), "malformed"),  # 0x47 short
    (frame(b"~", 1, 0x4A, 0, bytes(info_of(CAPTURED[11].raw)[:23])), "malformed"),  # B0 short
    (R42.encode(), "malformed"),  # the echoed request: CID2 0x42 reads as an RTN
    (_framed(b"22014600" + RT_CPT[9:-5]), "unexpected"),  # CID1 0x46: a Pylon/Seplos reply
    (_framed(b"20014A00" + RT_CPT[9:-5]), "unexpected"),  # VER 0x20
], ids=["empty-info", "realtime-short", "params-short", "capacity-short", "echoed-request",
        "cid1-46", "ver-20"])  # fmt: skip
def test_inconsistent_replies_are_rejected(plugin: Plugin, raw: bytes, kind: str) -> None:
    for request in (None, R42.encode(), R47.encode(), RB4.encode()):
        with pytest.raises(FrameError) as err:
            plugin.parse(raw, request)
        assert err.value.kind in (kind, "unexpected"), (request, err.value)
    with pytest.raises(FrameError) as err:
        plugin.parse(raw)
    assert err.value.kind == kind


def test_soc_above_100_is_malformed(plugin: Plugin) -> None:
    info = info_of(RT_CPT)
    info[1:3] = (10001).to_bytes(2, "big")
    with pytest.raises(FrameError) as err:
        plugin.parse(frame(b"~", 1, 0x4A, 0, bytes(info)), R42.encode())
    assert err.value.kind == "malformed" and "SoC 100.01" in err.value.reason


def test_a_reply_to_an_unknown_request_is_unexpected(plugin: Plugin) -> None:
    with pytest.raises(FrameError) as err:
        plugin.parse(RT_CPT, b"~22014A4F0000FD8C\r")  # 0x4F: protocol version (CPT)
    assert err.value.kind == "unexpected"


def test_captured_poll_cycle_builds_state(plugin: Plugin) -> None:
    state = state_of(plugin, parts_of(plugin, 1, 5, 7, 9, 11))
    assert state["voltage"] == pytest.approx(52.29) and state["current"] == pytest.approx(-11.16)
    assert state["soc"] == pytest.approx(57.7) and state["soh"] == 97.0
    assert (state["capacity"], state["remaining"], state["cycles"]) == pytest.approx(
        (160.0, 92.32, 237)
    )
    assert state["temperatures"] == pytest.approx([17.0, 17.0, 15.0, 16.0])
    assert state["mosfet_temperature"] == pytest.approx(15.0)
    assert state["charge_fet"] and state["discharge_fet"] and state["bms_ccl"] == 120.0
    assert state["serial"] == "JD2M02150860 1"
    assert state["hardware"] == "Daren 485 HUANY04 16S100A T1_G fw 01.00.02"
    assert not any(state["alarms"].values()) and state["balancing"] == [0] * 16


def test_realtime_alone_is_a_state_and_the_serial_falls_back(plugin: Plugin) -> None:
    state = state_of(plugin, parts_of(plugin, 0))
    assert state["serial"] == "" and state["hardware"] == "Daren 485"
    assert state["bms_ccl"] is None and len(state["cells"]) == 16
    assert state_of(plugin, parts_of(plugin, 0, 5))["serial"] == "DJM2205180061"
    assert state_of(plugin, parts_of(plugin, 3, 10))["serial"] == "NIE-JC4810025C30276"
    with pytest.raises(FrameError) as err:
        plugin.state(parts_of(plugin, 5, 7))
    assert err.value.kind == "truncated"


def test_captured_alarms_and_balancing(plugin: Plugin) -> None:
    state = state_of(plugin, parts_of(plugin, 2))
    raised = {name: level for name, level in state["alarms"].items() if level}
    assert raised == {"high_cell_voltage": 1, "cell_imbalance": 1}  # alarms, not protections
    assert [i + 1 for i, f in enumerate(state["balancing"]) if f] == [16]
    assert max(state["cells"]) == pytest.approx(3.694)


def test_fifteen_cells(plugin: Plugin) -> None:
    state = state_of(plugin, {"realtime": plugin.parse(RT_15S)[1]})
    assert len(state["cells"]) == 15 and state["voltage"] == pytest.approx(50.02)


@pytest.mark.parametrize(("fets", "swap", "charge", "discharge"), [
    (0x0001, False, False, True), (0x0002, False, True, False),
    (0x0001, True, True, False), (0x0002, True, False, True), (0x0000, False, False, False),
], ids=["bit0", "bit1", "bit0-swapped", "bit1-swapped", "none"])  # fmt: skip
def test_fet_bits_and_swap_option(fets: int, swap: bool, charge: bool, discharge: bool) -> None:
    plugin = plugins.load("daren_485", {"swap_fets": swap})
    state = plugin.state({"realtime": plugin.parse(realtime_with(RT_CPT, fet_status=fets))[1]})
    assert (state["charge_fet"], state["discharge_fet"]) == (charge, discharge)


@pytest.mark.parametrize(("word", "bit", "expect"), [
    ("voltage_status", 0, {"high_cell_voltage": 2}),
    ("voltage_status", 7, {"low_voltage": 1}),
    ("voltage_status", 13, {"internal_failure": 2}),  # blown fuse (DSB)
    ("voltage_status", 15, {}),  # going to sleep: not an alarm
    ("current_status", 0, {}),  # charging: not an alarm
    ("current_status", 3, {"short_circuit": 2}),
    ("current_status", 5, {"high_discharge_current": 2}),
    ("temperature_status", 1, {"low_charge_temperature": 2}),
    ("temperature_status", 14, {"high_internal_temperature": 1}),
    ("alarm_status", 5, {}),  # LED alarm enabled: a setting
    ("alarm_status", 6, {}),  # buzzer enabled: a setting
    ("alarm_status", 7, {"low_soc": 2}),
    ("alarm_status", 13, {"internal_failure": 2}),  # NTC failure
], ids=lambda v: str(v))  # fmt: skip
def test_status_bits(plugin: Plugin, word: str, bit: int, expect: dict) -> None:
    raw = realtime_with(RT_CPT, **{word: 1 << bit})
    alarms = plugin.state({"realtime": plugin.parse(raw)[1]})["alarms"]
    assert {name: level for name, level in alarms.items() if level} == expect


def test_alarm_tables_use_schema_names() -> None:
    for protections, warnings in ALARM_WORDS.values():
        assert set(protections.values()) | set(warnings.values()) <= set(ALARMS)
        assert not set(protections) & set(warnings)


# -- simulator ------------------------------------------------------------------------------
def test_simulator_answers_only_its_own_requests(plugin: Plugin) -> None:
    sim = simulators.create("daren_485", {1: BatteryModel()})
    (reply,) = sim.feed(b"~22014A990000FD94\r")  # an unknown service of this family
    assert reply == frame(b"~", 1, 0x4A, 0x04)
    for request in (
        "~22024A42E00201FD27\r",  # address 2: nobody there
        "~22014A42E00202FD27\r",  # COMMAND GROUP 02 instead of 01
        "~20014642E00201FD35\r",  # a Seplos V2 request at address 1
        ">220142420000FDAF\r",  # a KS48100 request at address 1
        "~25014642E00201FD30\r",  # a Pace (VER 25) request
    ):
        assert sim.feed(request.encode()) == [], request
    reply = SimLink(sim).exchange(R42.encode(), lambda buf: plugin.extract(buf, LinkStats()))
    assert plugin.parse(reply, R42.encode(), 1)[0] == "realtime"


def test_simulated_pack_with_many_cells_and_sensors(plugin: Plugin) -> None:
    model = BatteryModel(cells=20, soc=99.0, imbalance=0.05,
                         temperatures=[10.0, 11.0, 12.0, 13.0, 14.0, 15.0])  # fmt: skip
    state = poll(plugin, simulators.create("daren_485", {7: model}), 7)
    assert len(state["cells"]) == 20 and state["temperatures"] == pytest.approx(model.temperatures)
    assert state["balancing"] == model.balancing and any(state["balancing"][16:])
    assert state["serial"] == "DAREN_485-0007"


def test_poller_reads_two_packs_on_one_pty_bus(tmp_path) -> None:
    models = {1: BatteryModel(cells=16, soc=40.0, current=30.5, temperatures=[20.0, 21.0]),
              5: BatteryModel(cells=15, soc=90.0, current=-7.4, temperatures=[-2.5])}  # fmt: skip
    server = PtyServer(simulators.create("daren_485", models), link=str(tmp_path / "tty"),
                       model_wire=True).start()  # fmt: skip
    try:
        port = parse({"ports": [{"name": "p", "device": server.device, "bms": "daren_485",
                                 "addresses": [1, 5]}]}, "test").ports[0]  # fmt: skip
        sent: list[dict] = []
        poller = Poller(port, sent.append)
        for _ in range(2):
            poller.poll_once()
        poller.close()
    finally:
        server.stop()
    assert [s["pack"] for s in sent] == ["p:1", "p:5"] * 2
    for s in sent:
        model = models[s["address"]]
        validate_state(s)
        assert s["current"] == pytest.approx(model.current, abs=0.01)  # + = charge
        assert s["voltage"] == pytest.approx(model.voltage, abs=0.01)
        assert s["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert s["temperatures"] == pytest.approx(model.temperatures)
        assert s["serial"] == f"DAREN_485-{s['address']:04d}"
        assert s["hardware"].startswith("Daren 485 ") and s["link"]["timeout"] == 0
    assert poller.links[5].stats.ok == 2


def bmsbank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_decodes_a_captured_poll_cycle() -> None:
    out = bmsbank("decode", "daren_485", *(CAPTURED[i].hex for i in (1, 5, 7, 9)),
                  "--address", "1")  # fmt: skip
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["bms"] == "daren_485" and state["current"] == pytest.approx(-11.16)
    assert state["serial"] == "JD2M02150860 1" and state["bms_ccl"] == 120.0
    out = bmsbank("decode", "daren_485", CAPTURED[0].hex, "--address", "2")
    assert out.returncode == 1 and "rejected (address)" in out.stderr
