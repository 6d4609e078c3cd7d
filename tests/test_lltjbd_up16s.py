"""JBD UP16S plugin and simulator: dbus-serialbattery's frames, master limits, bad input."""

from __future__ import annotations

import pytest

from bmsbank.errors import FrameError
from bmsbank.schema import ALARMS, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import Plugin, modbus_frame
from bmsbank.services.poller.plugins.lltjbd_up16s.family import PROTECTIONS, WARNINGS
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, MultidropContract, extract_all

DSB = "mr-manuel/venus-os_dbus-serialbattery tests/bms/test_lltjbd_up16s.py"

# The driver's test frames, without address and CRC (DSB PACK_STATUS_RESPONSE ...): the driver's
# tests decode them to the values noted below; the CRCs are DSB's, and every one checks.
STATUS_BODY = (
    "78 1000 10a0 009c"  # fn, start, end, n = 156
    "14c2 0000 00049518"  # 53.14 V, a u16, current 300312 = +3.12 A
    "1838 4d18 7d00 7aa8"  # SoC 62.00 %, remaining 197.36, full 320.00, rated 314.00 Ah
    "027a 0283 0001 0064"  # MOSFET 13.4 °C, ambient 14.3 °C, operation status 1, SoH 100 %
    "00000001 00000004 0001 0004"  # faults: cell over-V; alarms: pack over-V; discharge FET on
    "0003 000a 0cfb 0001 0cf6 0cf9"  # 3 cycles, cell 10 max 3.323 V, cell 1 min 3.318 V, avg 3.321
    "0001 0271 0004 026d 026f"  # sensor 1 max 12.5 °C, sensor 4 min 12.1 °C, avg 12.3 °C
    "0240 0960 01b0 157c"  # 57.6 V, 240.0 A (the bank's: this is the master), 43.2 V, 550.0 A
    "0010"  # 16 cells
    "0cf6 0cf9 0cfa 0cfa 0cf9 0cf8 0cfa 0cfa 0cf9 0cfb 0cfa 0cfb 0cf9 0cfb 0cfa 0cf9"
    "0004 0271 026f 026f 026d"  # 4 sensors: 12.5 12.3 12.3 12.1 °C
    "0000 0004 0c01"  # a u16, balancing: cell 3, firmware 12.1
    "4a4244383736353433323100"  # pack serial "JBD87654321", NUL padded
    "000000000000000000000000000000000000"
    "0003 0007 0000 0004 0000"  # fields DSB does not name
)  # fmt: skip
STATUS_OTHER_BODY = (
    "78 1000 10a0 009c"
    "1422 0000 00049510 1220 3d00 7d00 7aa8"  # 51.54 V, +3.04 A, SoC 46.40 %, 156.16 Ah
    "0270 0280 0000 0063 00000000 00000000 0000 0000"  # SoH 99 %, no flags, both FETs off
    "0002 000b 0cf0 0003 0ce0 0ce5 0002 0270 0003 0265 026e 0242 0900 01b5 1000"  # 2 cycles
    "0010 0cf0 0ce5 0ce0 0ce5 0ce5 0ce5 0ce5 0ce5 0ce8 0cf0 0cf0 0cf0 0cf0 0cf0 0cf0 0cf0"
    "0004 026f 0270 0265 026d 0000 00ff 0c01"  # balancing: cells 1-8
    "4a4244383736353433323100" "000000000000000000000000000000000000"
    "0002 0004 0000 0004 0000"
)  # fmt: skip
INDIVIDUAL_BODY = (
    "45 0000 0054 0074"
    "00 10 0c f7 0c f9 0c fa 0c fa 0c f9 0c f8 0c fa 0c fa 0c fa 0c fb 0c fa 0c fb 0c f9 0c fb"
    "0c fa 0c f9 0c fb 0c f7 14 c2 00 00 01 33 0b 28 0b 25 7a a8 4d 19 00 03 00 3e 00 64 00 00"
    "00 00 00 0b 00 00 42 4a 38 44 36 37 34 35 32 33 00 31 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "03 e8 07 d0"  # this pack's own limits: 100.0 A charge, 200.0 A discharge
    "00 07 0b 31 0b 3b 04 01 0b 28 0b 25 0b 25 0b 25"
)  # fmt: skip
PARAMS1_BODY = (
    "78 1c00 1ca0 0086"
    "00 00 00 00 0d 16 00 0f 01 f4 02 58 15 90 07 d0"
    "55 50 31 36 53 30 31 35 30 30 30 30 30 30 30 30"  # BMS "UP16S015000000000000000000"
    "30 30 30 30 30 30 30 30 30 30 00 00 00 00"
    "07 e9 00 05 00 07"  # 2025-05-07
    "4a 42 44 38 37 36 35 34 33 32 31 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "07 e9 00 04 00 06"  # 2025-04-06
    "38 38 38 38 38 38 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 04 0b b8 0b 40 00 01 00 00 00 00 00 00 00 0a"
)  # fmt: skip
PARAMS2_BODY = (
    "78 2000 2050 0040"
    "7a a8 7a a8 4d 18 18 8d"  # high-resolution SoC 62.85 %
    "00 64 00 03 00 96 00 50 00 00 19 74 00 00 1e ea"  # charged 651.6 Ah, discharged 791.4 Ah
    "00 19 0c 1c 00 14 0c 80 00 1e 0d 7a 00 50 0d de 00 5a 02 40 03 e8 01 b0 07 d0 00 10 00 42"
    "00 04 05 db 00 7d 00 05 00 00"
)  # fmt: skip
PRODUCT_BODY = (
    "78 2810 283c 002c 0021 0003 000c 0001 0007 0024"  # model 33, hw rev 3, firmware 12.1.7
    "55 50 31 36 53 30 31 35 2e 31 36 53 32 30 30 41"  # "UP16S015.16S200A"
    "4a 42 44 00 00 00 00 00 00 00 00 00 00 00 00 00"  # "JBD"
)  # fmt: skip

REQUESTS = {  # DSB *_ADDR1_REQUEST / *_ADDR2_REQUEST
    1: {"status": "01 78 1000 10a0 0000 7fb2", "params2": "01 78 2000 2050 0000 7571",
        "individual": "01 45 0000 0054 0000 d4d3", "params1": "01 78 1c00 1ca0 0000 7c2e",
        "product": "01 78 2810 283c 0000 7787"},
    2: {"status": "02 78 1000 10a0 0000 3fa7", "params2": "02 78 2000 2050 0000 3564",
        "params1": "02 78 1c00 1ca0 0000 3c3b", "product": "02 78 2810 283c 0000 3792"},
}  # fmt: skip


def reply(address: int, body: str, crc: str) -> str:
    """A reply as DSB builds it: address, body, CRC (low byte first)."""
    return f"{address:02x}" + "".join(body.split()) + crc


def req(address: int, part: str) -> str:
    return "".join(REQUESTS[address][part].split())


def mv(*values: int) -> list[float]:
    return [v / 1000 for v in values]


CAPTURED = [
    Captured(DSB, reply(1, STATUS_BODY, "52e7"), "status", {
        "voltage": 53.14, "current": 3.12, "status_soc": 62.0, "remaining": 197.36,
        "capacity": 320.0, "rated_capacity": 314.0, "mosfet_temperature": 13.4,
        "ambient_temperature": 14.3, "soh": 100, "fault_flags": 1, "alarm_flags": 4,
        "charge_fet": False, "discharge_fet": True, "cycles": 3, "max_cell_voltage": 3.323,
        "min_cell_voltage": 3.318, "charge_voltage_limit": 57.6, "charge_current_limit": 240.0,
        "discharge_voltage_limit": 43.2, "discharge_current_limit": 550.0,
        "cells": mv(3318, 3321, 3322, 3322, 3321, 3320, 3322, 3322, 3321, 3323, 3322, 3323,
                    3321, 3323, 3322, 3321),
        "temperatures": [12.5, 12.3, 12.3, 12.1], "balancing": 4, "firmware": 0x0C01,
        "pack_serial": "JBD87654321", "address": 1}, req(1, "status")),
    Captured(DSB, reply(2, STATUS_BODY, "86ff"), "status",
             {"voltage": 53.14, "address": 2}, req(2, "status")),
    Captured(DSB, reply(2, STATUS_OTHER_BODY, "c3cf"), "status", {
        "voltage": 51.54, "current": 3.04, "status_soc": 46.40, "remaining": 156.16,
        "soh": 99, "charge_fet": False, "discharge_fet": False, "cycles": 2,
        "balancing": 0xFF, "charge_current_limit": 230.4, "discharge_current_limit": 409.6},
        req(2, "status")),
    Captured(DSB, reply(1, INDIVIDUAL_BODY, "5927"), "individual",
             {"charge_current_limit": 100.0, "discharge_current_limit": 200.0},
             req(1, "individual")),
    Captured(DSB, reply(1, PARAMS1_BODY, "7b2d"), "params1", {
        "bms_serial": "UP16S015000000000000000000", "bms_date": [2025, 5, 7],
        "pack_serial": "JBD87654321", "pack_date": [2025, 4, 6]}, req(1, "params1")),
    Captured(DSB, reply(2, PARAMS1_BODY, "0bc8"), "params1",
             {"bms_serial": "UP16S015000000000000000000"}, req(2, "params1")),
    Captured(DSB, reply(1, PARAMS2_BODY, "9c67"), "params2",
             {"soc": 62.85, "charged_total": 651.6, "discharged_total": 791.4},
             req(1, "params2")),
    Captured(DSB, reply(2, PARAMS2_BODY, "d892"), "params2", {"soc": 62.85}, req(2, "params2")),
    Captured(DSB, reply(1, PRODUCT_BODY, "dd99"), "product", {
        "model_id": 33, "hardware_revision": 3, "firmware": [12, 1, 7],
        "model": "UP16S015.16S200A", "project": "JBD"}, req(1, "product")),
]  # fmt: skip

STATUS_1, STATUS_2 = CAPTURED[0].raw, CAPTURED[1].raw
STATUS_2_OTHER, INDIVIDUAL_1 = CAPTURED[2].raw, CAPTURED[3].raw
PARAMS1_1, PARAMS2_1, PRODUCT_1 = CAPTURED[4].raw, CAPTURED[6].raw, CAPTURED[8].raw


class TestLltJbdUp16s(MultidropContract):
    plugin_name = "lltjbd_up16s"
    address = None  # the frames answer packs 1 and 2 (see test_responder_is_the_address)
    captured = CAPTURED
    requests = {part: req(1, part) for part in REQUESTS[1]}


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("lltjbd_up16s")


def state_of(plugin: Plugin, *frames: bytes) -> dict:
    parts = dict(plugin.parse(f) for f in frames)
    address = parts["status"]["address"]
    return validate_state(make_state("ttyUSB0", address, plugin.name, 0, plugin.state(parts), {}))


def test_metadata(plugin: Plugin) -> None:
    assert (plugin.baudrate, plugin.multidrop, plugin.default_address) == (9600, True, 1)
    assert plugin.addresses == range(1, 16) and not plugin.controls
    assert plugin.queries(1)[0].part == "status"  # the read bmsbank scan identifies with


def test_slaves_are_not_asked_for_the_individual_status() -> None:
    everyone = plugins.load("lltjbd_up16s", {"extended_reads": "all"})
    sent = {q.part: q.request.hex() for q in everyone.queries(2)}
    assert sent == {part: req(2, part) for part in REQUESTS[2]}  # DSB's slave requests


@pytest.mark.parametrize(
    ("wanted", "master", "slave"),
    [("master", 5, 1), ("all", 5, 4), ("none", 1, 1)],
    ids=["master", "all", "none"],
)
def test_extended_reads_option(wanted: str, master: int, slave: int) -> None:
    plugin = plugins.load("lltjbd_up16s", {"extended_reads": wanted})
    assert (len(plugin.queries(1)), len(plugin.queries(2))) == (master, slave)
    assert plugin.queries(2)[0].request.hex() == req(2, "status")
    with pytest.raises(ValueError):
        plugins.load("lltjbd_up16s", {"extended_reads": "slaves"})


def test_master_state_takes_its_own_limits_and_the_fine_soc(plugin: Plugin) -> None:
    state = state_of(plugin, STATUS_1, PARAMS2_1, INDIVIDUAL_1, PARAMS1_1, PRODUCT_1)
    assert state["voltage"] == pytest.approx(53.14) and state["current"] == pytest.approx(3.12)
    assert state["soc"] == pytest.approx(62.85) and state["remaining"] == pytest.approx(197.36)
    assert (state["bms_ccl"], state["bms_dcl"]) == pytest.approx((100.0, 200.0))
    assert state["bms_cvl"] == pytest.approx(57.6)
    assert state["temperatures"] == pytest.approx([12.5, 12.3, 12.3, 12.1])
    assert state["mosfet_temperature"] == pytest.approx(13.4)
    assert not state["charge_fet"] and state["discharge_fet"]
    assert [i + 1 for i, b in enumerate(state["balancing"]) if b] == [3]
    raised = {name: level for name, level in state["alarms"].items() if level}
    assert raised == {"high_cell_voltage": 2, "high_voltage": 1}  # as DSB's test asserts
    assert state["serial"] == "JBD87654321"
    assert state["hardware"] == "JBD UP16S015.16S200A fw 12.1.7 (BMS UP16S015000000000000000000)"


def test_master_without_individual_status_reports_no_current_limits(plugin: Plugin) -> None:
    state = state_of(plugin, STATUS_1)
    assert state["bms_ccl"] is None and state["bms_dcl"] is None  # 240/550 A are the bank's
    assert state["soc"] == pytest.approx(62.0) and state["hardware"] == "JBD UP16S 16S fw 12.1"


def test_slave_limits_come_from_its_status(plugin: Plugin) -> None:
    state = state_of(plugin, STATUS_2)
    assert (state["bms_ccl"], state["bms_dcl"]) == pytest.approx((240.0, 550.0))


def test_fine_soc_far_from_the_status_soc_is_not_used(plugin: Plugin) -> None:
    state = state_of(plugin, STATUS_2_OTHER, CAPTURED[7].raw)  # 46.40 % and a stale 62.85 %
    assert state["soc"] == pytest.approx(46.40)
    assert (
        not state["charge_fet"] and not state["discharge_fet"] and state["balancing"][:8] == [1] * 8
    )


def test_responder_is_the_address(plugin: Plugin) -> None:
    for c, address in zip(CAPTURED, (1, 2, 2, 1, 1, 2, 1, 2, 1), strict=True):
        plugin.parse(c.raw, c.request_bytes, address)
        with pytest.raises(FrameError) as err:
            plugin.parse(c.raw, c.request_bytes, address + 1)
        assert err.value.kind == "address"


def test_reply_to_another_window_is_unexpected(plugin: Plugin) -> None:
    with pytest.raises(FrameError) as err:
        plugin.parse(PARAMS2_1, bytes.fromhex(req(1, "status")))
    assert err.value.kind == "unexpected"


def _frame(body_hex: str) -> bytes:
    return modbus_frame(bytes.fromhex(body_hex))


def _status(**changes: str) -> bytes:
    """The address-1 status with bytes replaced: {"at_<data offset>": hex}."""
    data = bytearray(bytes.fromhex("".join(STATUS_BODY.split()))[7:])
    for key, value in changes.items():
        at = int(key.split("_")[1])
        data[at : at + len(value) // 2] = bytes.fromhex(value)
    return _frame("01781000 10a0" + len(data).to_bytes(2, "big").hex() + data.hex())


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (_frame("0178300030100000"), "unexpected"),  # a window the family does not read
        (_frame("01781000 10a0 0000"), "malformed"),  # no data: an echoed request
        (_frame("01781000 10a0 0010" + "00" * 16), "malformed"),  # cut short
        (_status(at_66="0000"), "malformed"),  # no cells
        (_status(at_8="2AF8"), "malformed"),  # SoC 110.00 %
    ],
    ids=["unknown-window", "empty", "short", "no-cells", "soc-above-100"],
)
def test_inconsistent_replies_are_rejected(plugin: Plugin, raw: bytes, kind: str) -> None:
    (frame,), errors, _ = extract_all(plugin, raw)
    assert not errors  # well framed: parsing refuses it
    with pytest.raises(FrameError) as err:
        plugin.parse(frame, bytes.fromhex(req(1, "status")))
    assert err.value.kind == kind


def _with(raw: bytes, index: int, value: int) -> bytes:
    return raw[:index] + bytes((value,)) + raw[index + 1 :]


MALFORMED = [
    ("bad-crc", _with(STATUS_1, len(STATUS_1) - 2, STATUS_1[-2] ^ 0x10), "checksum"),
    ("corrupt-data", _with(STATUS_1, 40, STATUS_1[40] ^ 0x01), "checksum"),
]


@pytest.mark.parametrize(("raw", "kind"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_frames_are_rejected(plugin: Plugin, raw: bytes, kind: str) -> None:
    frames, errors, _ = extract_all(plugin, raw)
    assert not frames and errors and errors[0].kind == kind


@pytest.mark.parametrize(
    "raw",
    [_with(STATUS_1, 6, 0x0F), _with(STATUS_1, 7, STATUS_1[7] - 2)],
    ids=["length-beyond-any-frame", "length-two-short"],
)
def test_wrong_length_is_skipped_as_noise(plugin: Plugin, raw: bytes) -> None:
    # Like every Modbus-style reply without a header: a start whose length leads nowhere is
    # noise, and the next good frame is still found.
    frames, _, stats = extract_all(plugin, raw + STATUS_1)
    assert frames == [STATUS_1] and stats.noise_bytes >= len(raw) - 2


def test_standard_modbus_replies_are_not_frames(plugin: Plugin) -> None:
    fc03 = modbus_frame(bytes.fromhex("010304000a0014"))  # another family on the bus
    frames, errors, stats = extract_all(plugin, fc03 + STATUS_1)
    assert frames == [STATUS_1] and stats.noise_bytes >= len(fc03) - 1


def test_alarm_tables_use_schema_names() -> None:
    assert set(WARNINGS.values()) <= set(PROTECTIONS.values()) <= set(ALARMS)
    assert not set(WARNINGS) & set(PROTECTIONS)


def test_simulator_is_silent_for_other_requests() -> None:
    sim = simulators.create("lltjbd_up16s", {1: BatteryModel(), 2: BatteryModel()})
    assert sim.feed(modbus_frame(bytes.fromhex("010313880010"))) == []  # Modbus FC03 to pack 1
    assert sim.feed(modbus_frame(bytes.fromhex("03781000 10a0 0000"))) == []  # no pack at 3
    assert sim.feed(modbus_frame(bytes.fromhex("02450000 0054 0000"))) == []  # 0x45: master only
    assert sim.feed(modbus_frame(bytes.fromhex("01781000 1010 0000"))) == []  # another window
    assert sim.feed(modbus_frame(bytes.fromhex("01792006 2008 0006 114a42442710"))) == []  # write
    (status,) = sim.feed(bytes.fromhex(req(2, "status")))
    assert len(status) == 10 + 156 and status[:6] == bytes.fromhex(req(2, "status"))[:6]


def test_simulated_master_reports_the_bank_limits_in_its_status(plugin: Plugin) -> None:
    models = {1: BatteryModel(capacity=100.0), 2: BatteryModel(capacity=200.0)}
    sim = simulators.create("lltjbd_up16s", models)
    status = plugin.parse(sim.feed(bytes.fromhex(req(1, "status")))[0])[1]
    assert status["charge_current_limit"] == pytest.approx(150.0)  # 0.5 C of both packs
    (individual,) = sim.feed(bytes.fromhex(req(1, "individual")))
    assert plugin.parse(individual)[1]["charge_current_limit"] == pytest.approx(50.0)
