"""Pace plugin and simulator: captured frames, reply identification, MOSFET switches, bad input."""

from __future__ import annotations

import pytest

from bmsbank.errors import ControlError, FrameError
from bmsbank.schema import ALARMS, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.plugins.pace.family import (
    PROTECTIONS,
    WARNINGS,
    frame,
    switch_request,
)
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, MultidropContract, SimLink, extract_all

NK = ("nkinnan/esphome-pace-bms components/pace_bms/pace_bms_protocol_v25.cpp "
      "(example*V25; also 'Test PACE BMS/Test PACE BMS.cpp')")  # fmt: skip

A1, S1 = "~25014642E00201FD30\r", "~25014644E00201FD2E\r"  # NK, pack at ADR 1
H1, N1 = "~250146C10000FD9A\r", "~250146C20000FD99\r"


def cap(text: str, part: str, expect: dict, request: str) -> Captured:
    """A captured ASCII reply (as published, without its CR) and the request it answers."""
    return Captured(NK, (text + "\r").encode().hex(), part, expect, request.encode().hex())


def mv(*values: int) -> list[float]:
    return [v / 1000 for v in values]


CAPTURED = [
    # A: 0x42 of a 16-cell pack at ADR 1: cells 3.269-3.272 V, sensors 0x0B9B.. = 24.1 23.9 23.9
    # 23.9 °C (cells), 26.5 °C (MOSFET), 27.4 °C (environment), current 0xFF1F = -2.25 A
    # (discharging: the 0x44 reply S of the same session says so), 52.429 V, 48.19 of 103.46 Ah
    # (SoC 46.58 %), user-defined 3, 140 cycles, design 100.00 Ah.
    cap("~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC60CC706"
        "0B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4", "analog", {
            "group": 1, "cell_count": 16,
            "cells": mv(3271, 3272, 3271, 3271, 3271, 3269, 3270, 3271, 3271, 3270, 3271, 3270,
                        3270, 3271, 3270, 3271),
            "sensor_count": 6, "temperatures": [24.1, 23.9, 23.9, 23.9],
            "mosfet_temperature": 26.5, "ambient_temperature": 27.4, "current": -2.25,
            "voltage": 52.429, "remaining": 48.19, "user_defined": 3, "capacity": 103.46,
            "cycles": 140, "design_capacity": 100.0, "soc": 100 * 48.19 / 103.46, "soh": 100.0,
            "extension": []}, A1),
    # S: 0x44 at ADR 1: no warning, protection or fault; system status 0x0E = charge MOSFET on,
    # discharge MOSFET on, discharging; no cell balancing.
    cap("~25014600004C000110000000000000000000000000000000000600000000000000000000000E0000000000"
        "00EF3A", "status", {
            "cell_alarms": [0] * 16, "sensor_alarms": [0] * 6, "protection1": 0,
            "protection2": 0, "system": 0x0E, "configuration": 0, "fault": 0, "balance": 0,
            "warning1": 0, "warning2": 0, "event_bits": 0, "charge_fet": True,
            "discharge_fet": True}, S1),
    # H: 0xC1 hardware version, 20 bytes "P16S100A-1812-1.00 " + NUL.
    cap("~25014600602850313653313030412D313831322D312E30302000F58E", "hardware",
        {"text": "P16S100A-1812-1.00"}, H1),
    # N: 0xC2 serial number, 40 bytes "1812101380309D" padded with spaces.
    cap("~25014600B05031383132313031333830333039442020202020202020202020202020202020202020202020"
        "202020EE0F", "serial", {"text": "1812101380309D"}, N1),
]  # fmt: skip

ANALOG_A, STATUS_S = CAPTURED[0].raw, CAPTURED[1].raw


class TestPace(MultidropContract):
    plugin_name = "pace"
    address = 1
    captured = CAPTURED
    requests = {"analog": A1.encode().hex(), "status": S1.encode().hex(),
                "hardware": H1.encode().hex(), "serial": N1.encode().hex()}  # fmt: skip

    def checksum_index(self, length: int) -> int:
        return length - 5  # the first CHKSUM digit (before the last three and the CR)


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("pace")


def info_of(raw: bytes) -> bytearray:
    """The INFO bytes of an ASCII frame."""
    return bytearray.fromhex(raw[13:-5].decode())


def state_of(plugin: Plugin, *frames: bytes) -> dict:
    parts = dict(plugin.parse(f) for f in frames)
    return validate_state(make_state("ttyUSB0", 1, "pace", 0, plugin.state(parts), {}))


def test_metadata(plugin: Plugin) -> None:
    assert (plugin.baudrate, plugin.multidrop, plugin.default_address) == (9600, True, 1)
    assert plugin.addresses == range(16) and plugin.controls == {"charge", "discharge"}
    assert plugin.queries(1)[0].part == "analog"  # the read bmsbank scan identifies with


def test_captured_replies_build_the_state(plugin: Plugin) -> None:
    state = state_of(plugin, *(c.raw for c in CAPTURED))
    assert state["voltage"] == pytest.approx(52.429) and state["current"] == pytest.approx(-2.25)
    assert state["soc"] == pytest.approx(46.578, abs=0.001)
    assert state["capacity"] == pytest.approx(103.46) and state["cycles"] == 140
    assert state["temperatures"] == pytest.approx([24.1, 23.9, 23.9, 23.9])
    assert state["mosfet_temperature"] == pytest.approx(26.5)
    assert state["charge_fet"] and state["discharge_fet"] and state["balancing"] == [0] * 16
    assert not any(state["alarms"].values())
    assert state["serial"] == "1812101380309D"
    assert state["hardware"] == "Pace P16S100A-1812-1.00"


def test_bare_replies_are_identified_by_shape(plugin: Plugin) -> None:
    for c in CAPTURED:
        assert plugin.parse(c.raw) == plugin.parse(c.raw, c.request_bytes), c.part


def test_reply_of_another_part_is_unexpected(plugin: Plugin) -> None:
    for raw, request in ((STATUS_S, A1), (ANALOG_A, S1), (CAPTURED[2].raw, A1)):
        with pytest.raises(FrameError) as err:
            plugin.parse(raw, request.encode())
        assert err.value.kind == "unexpected"


def test_responder_is_the_adr(plugin: Plugin) -> None:
    for c in CAPTURED:
        plugin.parse(c.raw, c.request_bytes, 1)
        with pytest.raises(FrameError) as err:
            plugin.parse(c.raw, c.request_bytes, 2)
        assert err.value.kind == "address"


def test_vendor_bytes_after_the_documented_fields(plugin: Plugin) -> None:
    info = info_of(ANALOG_A) + b"\x12\x34"
    longer = frame(1, 0, bytes(info))
    fields = plugin.parse(longer, A1.encode())[1]
    assert fields["extension"] == [0x12, 0x34] and fields["cycles"] == 140
    with pytest.raises(FrameError):  # without the request, only exact shapes are recognised
        plugin.parse(longer)


def _set(raw: bytes, index: int, char: bytes) -> bytes:
    return raw[:index] + char + raw[index + 1 :]


def _framed(text: bytes) -> bytes:
    """``text`` (VER .. INFO as ASCII hex) between SOI and a correct CHKSUM and EOI."""
    return b"~" + text + b"%04X\r" % ((0x10000 - sum(text)) & 0xFFFF)


MALFORMED = [
    ("non-hex-in-info", _set(ANALOG_A, 40, b"G"), "hex"),
    ("non-hex-in-header", _set(ANALOG_A, 3, b"x"), "hex"),
    ("wrong-lchksum", _set(ANALOG_A, 9, b"2"), "length_check"),
    ("wrong-chksum", _set(ANALOG_A, len(ANALOG_A) - 2, b"0"), "checksum"),
    ("odd-lenid", _framed(ANALOG_A[1:9] + b"0079" + ANALOG_A[13:-5]), "malformed"),
    ("no-cr", _set(ANALOG_A, len(ANALOG_A) - 1, b"\n"), "malformed"),
]


@pytest.mark.parametrize(("raw", "kind"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_frames_are_rejected(plugin: Plugin, raw: bytes, kind: str) -> None:
    frames, errors, _ = extract_all(plugin, raw)
    assert not frames and errors and errors[0].kind == kind


@pytest.mark.parametrize(
    ("rtn", "meaning"),
    [(0x02, "CHKSUM error"), (0x04, "CID2 invalid"), (0x90, "ADR error"), (0x77, "unknown")],
    ids=["rtn-02", "rtn-04", "rtn-90", "rtn-77"],
)
def test_error_rtn_reply_is_rejected(plugin: Plugin, rtn: int, meaning: str) -> None:
    (got,), errors, _ = extract_all(plugin, frame(1, rtn))
    assert not errors  # well framed: the scanner passes it, parsing refuses it
    with pytest.raises(FrameError) as err:
        plugin.parse(got, A1.encode())
    assert err.value.kind == "malformed" and meaning in err.value.reason


def _no_cells() -> bytes:
    info = info_of(ANALOG_A)
    return frame(1, 0, bytes(info[:2] + b"\x00" + info[35:]))


def _capacity(full: int) -> bytes:
    info = info_of(ANALOG_A)
    info[-6:-4] = full.to_bytes(2, "big")
    return frame(1, 0, bytes(info))


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (frame(1, 0), "malformed"),  # RTN 00, empty INFO (the reply to a write)
        (frame(1, 0, bytes(info_of(ANALOG_A)[:-1])), "malformed"),  # one byte short
        (frame(1, 0, bytes(info_of(STATUS_S)[:-3])), "malformed"),
        (_no_cells(), "malformed"),
        (_capacity(0), "malformed"),  # full capacity 0: no SoC
        (_framed(b"200146000000"), "unexpected"),  # VER 0x20: a Seplos V2 reply
        (_framed(b"25014A000000"), "unexpected"),  # CID1 0x4A: not this family's
    ],
    ids=[
        "empty-info",
        "analog-short",
        "status-short",
        "no-cells",
        "no-capacity",
        "ver-20",
        "cid1-4a",
    ],
)
def test_inconsistent_replies_are_rejected(plugin: Plugin, raw: bytes, kind: str) -> None:
    with pytest.raises(FrameError) as err:
        plugin.parse(raw, A1.encode())
    assert err.value.kind == kind


def test_soc_is_capped_when_remaining_exceeds_full(plugin: Plugin) -> None:
    assert plugin.parse(_capacity(4000))[1]["soc"] == 100.0  # 48.19 of 40.00 Ah


@pytest.mark.parametrize("count", [0, 1, 2, 4, 6])
def test_sensor_counts_other_than_six(plugin: Plugin, count: int) -> None:
    models = {1: BatteryModel(temperatures=[20.0 + i for i in range(count)])}
    raw = simulators.create("pace", models).feed(A1.encode())[0]
    fields = plugin.parse(raw)[1]
    assert fields["sensor_count"] == count + 2
    assert fields["temperatures"] == pytest.approx(models[1].temperatures, abs=0.01)
    assert fields["mosfet_temperature"] == pytest.approx(30.0)
    assert fields["ambient_temperature"] == pytest.approx(25.0)


def test_alarm_tables_use_schema_names() -> None:
    assert set(WARNINGS.values()) <= set(PROTECTIONS.values()) <= set(ALARMS)
    assert not set(WARNINGS) & set(PROTECTIONS)


def test_status_bits_become_alarms_fets_and_balancing(plugin: Plugin) -> None:
    info = info_of(STATUS_S)
    at = 2 + 17 + 7 + 3  # protection status 1
    # short circuit + low pack voltage; MOSFET over-temperature; NTC fault; system: discharge
    # MOSFET on only; cells 1, 3 and 16 balancing; warnings: high cell voltage, low charge temp.
    info[at : at + 9] = bytes((0x48, 0x10, 0x04, 0x00, 0x04, 0x80, 0x05, 0x01, 0x04))
    state = state_of(plugin, ANALOG_A, frame(1, 0, bytes(info)))
    raised = {name: level for name, level in state["alarms"].items() if level}
    assert raised == {"short_circuit": 2, "low_voltage": 2, "high_internal_temperature": 2,
                      "internal_failure": 2, "high_cell_voltage": 1,
                      "low_charge_temperature": 1}  # fmt: skip
    assert not state["charge_fet"] and state["discharge_fet"]
    assert [i + 1 for i, f in enumerate(state["balancing"]) if f] == [1, 3, 16]


# -- MOSFET switches -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "on", "wire"),
    [
        ("charge", False, "~2500469AE00200FD1E"),
        ("charge", True, "~2500469AE00201FD1D"),
        ("discharge", False, "~2500469BE00200FD1D"),
        ("discharge", True, "~2500469BE00201FD1C"),
    ],
    ids=["charge-open", "charge-close", "discharge-open", "discharge-close"],
)  # NK exampleWriteMosfet*SwitchCommandRequestV25 (ADR 0)
def test_switch_requests_byte_exact(action: str, on: bool, wire: str) -> None:
    assert switch_request(0, action, on) == (wire + "\r").encode()


class AckLink:
    """A link that answers every request with fixed bytes (the captured acks)."""

    timeout = 0.5

    def __init__(self, *replies: bytes) -> None:
        self.replies, self.sent, self.buf = list(replies), [], bytearray()

    def exchange(self, request: bytes, extract):  # noqa: ANN001, ANN201
        self.sent.append(request)
        self.buf = bytearray(b"".join(self.replies))
        return self.receive(extract)

    def receive(self, extract):  # noqa: ANN001, ANN201
        return extract(self.buf)


@pytest.mark.parametrize(
    ("action", "on", "ack"),
    [
        ("charge", False, "~25004600E00226FD30"),
        ("charge", True, "~25004600E00224FD32"),
        ("discharge", False, "~25004600E00204FD34"),
        ("discharge", True, "~25004609E00204FD2B"),
    ],
    ids=["charge-open", "charge-close", "discharge-open", "discharge-close-rtn-09"],
)  # NK exampleWriteMosfet*SwitchCommandResponseV25
def test_captured_acks_are_accepted(plugin: Plugin, action: str, on: bool, ack: str) -> None:
    link = AckLink((ack + "\r").encode())
    plugin.control(link, 0, action, on, {})
    assert link.sent == [switch_request(0, action, on)]


def test_echoed_switch_request_is_skipped(plugin: Plugin) -> None:
    sent = switch_request(0, "charge", True)
    link = AckLink(sent, b"~25004600E00224FD32\r")
    plugin.control(link, 0, "charge", True, {})


def test_refused_switch_raises(plugin: Plugin) -> None:
    with pytest.raises(ControlError, match="RTN 0x04"):
        plugin.control(AckLink(frame(0, 0x04)), 0, "discharge", False, {})
    with pytest.raises(FrameError) as err:  # an ack from another pack is not this one's
        plugin.control(AckLink(b"~25004600E00224FD32\r"), 3, "charge", True, {})
    assert err.value.kind == "unexpected"


def test_switches_reach_the_simulated_pack(plugin: Plugin) -> None:
    model = BatteryModel(current=-10.0)
    sim = simulators.create("pace", {1: model})
    plugin.control(SimLink(sim), 1, "discharge", False, {})
    assert not model.discharge_fet and model.charge_fet
    status = plugin.parse(sim.feed(S1.encode())[0])[1]
    assert not status["discharge_fet"] and status["configuration"] == 0x04
    plugin.control(SimLink(sim), 1, "discharge", True, {})
    assert model.discharge_fet


# -- simulator on a shared bus ---------------------------------------------------------------
def test_simulator_is_silent_for_other_requests(plugin: Plugin) -> None:
    sim = simulators.create("pace", {1: BatteryModel()})
    assert sim.feed(b"~20014642E00201FD35\r") == []  # Seplos V2 (VER 0x20), same address
    assert sim.feed(b"~22014A42E00201FD28\r") == []  # Daren 485 (VER 0x22)
    assert sim.feed(plugin.queries(2)[0].request) == []  # no pack at 2
    assert sim.feed(frame(1, 0x42, b"\x02")) == []  # INFO asks another pack
    (reply,) = sim.feed(frame(1, 0x47, b"\x01"))  # a command it does not know
    assert reply == frame(1, 0x04)
    reply = SimLink(sim).exchange(A1.encode(), lambda buf: plugin.extract(buf, LinkStats()))
    assert plugin.parse(reply, A1.encode(), 1)[0] == "analog"


def test_a_non_zero_dataflag_is_accepted(plugin: Plugin) -> None:
    # NK logs "a value other than zero before the BusId" and decodes on: so does this family
    info = info_of(ANALOG_A)
    info[0] = 0x11
    raw = frame(1, 0, bytes(info))
    assert plugin.parse(raw, A1.encode())[1]["voltage"] == pytest.approx(52.429)
    assert plugin.parse(raw)[0] == "analog"
