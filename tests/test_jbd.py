"""LLT/JBD family: captured frames and what is specific to JBD (the generic checks are in
tests/plugin_contract.py): refused requests, cell data that is not whole cells, newer firmware's
extra bytes, software FET locks and the write sequences (factory mode for the balancer)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.errors import ControlError, FrameError, LinkTimeout
from bmsbank.native.frames import negsum16
from bmsbank.schema import ALARMS, validate_state
from bmsbank.services.poller import plugins
from bmsbank.services.poller.plugins.base import Plugin
from bmsbank.services.poller.plugins.jbd.control import (
    MOS_CHARGE_OFF,
    MOS_DISCHARGE_OFF,
    ack,
    mos_request,
    pack_frame,
    read_request,
    software_locks,
    write_request,
)
from bmsbank.services.poller.plugins.jbd.family import FET_CHARGE, PROTECTION_ALARMS
from bmsbank.services.poller.plugins.jbd.family import Family as JbdPlugin
from bmsbank.services.poller.plugins.jbd.simulator import Simulator as JbdSimulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, PluginContract, SimLink, extract_all, poll

ESPHOME_UART = "syssi/esphome-jbd-bms docs/pdus/JBD-SP04S034-L4S-200A-B-U.txt"
ESPHOME_16S = "syssi/esphome-jbd-bms docs/pdus/JBD-SP25S003-L16S-100A-100A-B.txt"
ESPHOME_BLE = "syssi/esphome-jbd-bms docs/pdus/JBD-DP04S007L4S100A-BLE.txt"
AIOBMSBLE = "patman15/aiobmsble tests/bms/test_jbd_bms.py"

CAPTURED = [
    # 0x03 from a JBD-SP04S034 4S over UART: 15.60 V, 0 A, 4.98 of 5.00 Ah, 0 cycles, SoC 100 %,
    # both FETs on (0x03), 4 cells, 3 NTCs 0x0B8B/0x0B8A/0x0B84 = (2955|2954|2948 - 2731) / 10.
    Captured(
        source=ESPHOME_UART,
        hex="dd03001d0618000001f201f400002c7c00000000000080640304030b8b0b8a0b84fa8d77",
        part="basic",
        expect={
            "voltage": 15.6,
            "current": 0.0,
            "remaining": 4.98,
            "capacity": 5.0,
            "cycles": 0,
            "production_date": 0x2C7C,
            "balance_low": 0,
            "balance_high": 0,
            "protection": 0,
            "software_version": 0x80,
            "soc": 100,
            "fet_status": 3,
            "cell_count": 4,
            "ntc_count": 3,
            "temperatures": [22.4, 22.3, 21.7],
        },
    ),  # fmt: skip
    # 0x04, same board: 0x0F45 0x0F3D 0x0F37 0x0F3D mV.
    Captured(
        source=ESPHOME_UART,
        hex="dd0400080f450f3d0f370f3dfec677",
        part="cells",
        expect={"cells": [3.909, 3.901, 3.895, 3.901]},
    ),
    # 0x05, same board: 25 ASCII bytes.
    Captured(
        source=ESPHOME_UART,
        hex="dd050019" + b"JBD-SP04S034-L4S-200A-B-U".hex() + "fa0877",
        part="hardware",
        expect={"hardware": "JBD-SP04S034-L4S-200A-B-U"},
    ),
    # 0x03 while discharging: current 0xFEE1 = -287 x 10 mA = -2.87 A, 42 cycles (0x002A).
    Captured(
        source=AIOBMSBLE + " (MockJBDBleakClient CMD_INFO)",
        hex="dd03001d0618fee101f201f4002a2c7c00000000000080640304030b8b0b8a0b84f88477",
        part="basic",
        expect={
            "voltage": 15.6,
            "current": -2.87,
            "remaining": 4.98,
            "capacity": 5.0,
            "cycles": 42,
            "soc": 100,
            "fet_status": 3,
            "protection": 0,
            "temperatures": [22.4, 22.3, 21.7],
        },
    ),  # fmt: skip
    # 0x04: 0x0D66 0x0D61 0x0D68 0x0D59 mV.
    Captured(
        source=AIOBMSBLE + " (MockJBDBleakClient CMD_CELL)",
        hex="dd0400080d660d610d680d59fe3c77",
        part="cells",
        expect={"cells": [3.430, 3.425, 3.432, 3.417]},
    ),
    # 0x05: "0123456789".
    Captured(
        source=AIOBMSBLE + " (MockJBDBleakClient HW_INFO)",
        hex="dd05000a30313233343536373839fde977",
        part="hardware",
        expect={"hardware": "0123456789"},
    ),
    # 0x03 with protection word 0x0001 (cell overvoltage), the "first_bit" problem response.
    Captured(
        source=AIOBMSBLE + " (prb_response first_bit)",
        hex="dd03001d0618fee101f201f4002a2c7c00000000000180640304030b8b0b8a0b84f88377",
        part="basic",
        expect={"protection": 0x0001, "current": -2.87, "soc": 100},
    ),
    # 0x03 from a JBD-SP25S003 16S over UART: no NTC, 100.00 Ah nominal, only the charge FET on
    # (0x01), version 0x20, 16 cells, date 0x2C50 (2022-02-16).
    Captured(
        source=ESPHOME_16S,
        hex="dd030017000000000000271000002c500000000000002000011000ff0577",
        part="basic",
        expect={
            "voltage": 0.0,
            "current": 0.0,
            "remaining": 0.0,
            "capacity": 100.0,
            "cycles": 0,
            "production_date": 0x2C50,
            "software_version": 0x20,
            "soc": 0,
            "fet_status": 1,
            "cell_count": 16,
            "ntc_count": 0,
            "temperatures": [],
        },
    ),  # fmt: skip
    # 0x04, same board: 15 x 0x0E10 (3.600 V) and an unconnected cell 16 (0 V).
    Captured(
        source=ESPHOME_16S,
        hex="dd040020" + "0e10" * 15 + "0000" + "fe1e77",
        part="cells",
        expect={"cells": [3.6] * 15 + [0.0]},
    ),
    # 0x03 from newer firmware (JBD-DP04S007, BLE, one notification sequence joined): 34 bytes,
    # i.e. 9 bytes after the single NTC (0x0BB1 = 26.2 °C) that the plugin must ignore.
    # 13.75 V, 191.67 of 200.00 Ah, 2 cycles, SoC 96 %, version 0x23.
    Captured(
        source=ESPHOME_BLE,
        hex=(
            "dd030022055f00004adf4e2000022d140000000000002360030401"  # header .. NTC count
            "0bb1"  # NTC 1
            "0000004e204adf0000"  # 9 bytes of newer firmware
            "fac277"
        ),
        part="basic",
        expect={
            "voltage": 13.75,
            "current": 0.0,
            "remaining": 191.67,
            "capacity": 200.0,
            "cycles": 2,
            "software_version": 0x23,
            "soc": 96,
            "fet_status": 3,
            "cell_count": 4,
            "ntc_count": 1,
            "temperatures": [26.2],
        },
    ),  # fmt: skip
]

BASIC_UART = CAPTURED[0].raw
CELLS_UART = CAPTURED[1].raw


class TestJbd(PluginContract):
    plugin_name = "jbd"
    address = None
    captured = CAPTURED
    # DD A5 <register> 00 <check> 77 for 0x03, 0x04, 0x05: mr-manuel/venus-os_dbus-serialbattery
    # dbus-serialbattery/bms/lltjbd.py (``cmd``), syssi/esphome-jbd-bms jbd_bms.cpp
    requests = {
        "basic": "dd a5 03 00 ff fd 77",
        "cells": "dd a5 04 00 ff fc 77",
        "hardware": "dd a5 05 00 ff fb 77",
    }

    def checksum_index(self, length: int) -> int:
        return length - 2  # the last byte is the 0x77 trailer; the check is before it


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("jbd")


def basic_payload(**over: Any) -> bytes:
    """A 4-cell 0x03 payload (the UART capture) with raw fields replaced, and n NTCs."""
    raw = {"voltage": 1560, "current": 0, "remaining": 498, "capacity": 500, "cycles": 0,
           "date": 0x2C7C, "bal_lo": 0, "bal_hi": 0, "protection": 0}  # fmt: skip
    raw.update(over)
    head = b"".join(
        raw[k].to_bytes(2, "big", signed=k == "current")
        for k in ("voltage", "current", "remaining", "capacity", "cycles", "date", "bal_lo",
                  "bal_hi", "protection")
    )  # fmt: skip
    temps = over.get("temps", [2955])
    tail = bytes([0x80, 100, over.get("fets", 3), over.get("cells", 4), len(temps)])
    return head + tail + b"".join(t.to_bytes(2, "big") for t in temps)


def basic_frame(**over: Any) -> bytes:
    return pack_frame(0x03, 0x00, basic_payload(**over))


def decoded_state(plugin: Plugin, basic: bytes, cells: bytes = CELLS_UART) -> dict:
    parts = dict(plugin.parse(f) for f in (basic, cells))
    fields = plugin.state(parts)
    return validate_state(make_state("ttyUSB0", 1, "jbd", 0, fields, {}))


def test_poll_schedule(plugin: Plugin) -> None:
    queries = plugin.queries(plugin.default_address)
    assert [(q.part, q.every, q.required) for q in queries] == [
        ("basic", 1, True), ("cells", 1, True), ("hardware", 0, False)]  # fmt: skip
    assert plugin.queries(7) == queries  # JBD UART has no address
    assert (plugin.title, plugin.baudrate, plugin.multidrop) == ("LLT/JBD", 9600, False)


# -- replies -----------------------------------------------------------------------------------
def test_error_status_reply_is_rejected(plugin: Plugin) -> None:
    refused = pack_frame(0x03, 0x80)
    assert refused.hex(" ") == "dd 03 80 00 ff 80 77"
    frames, errors, _ = extract_all(plugin, refused)
    assert frames == [refused] and not errors  # well framed, so the scanner passes it on
    with pytest.raises(FrameError) as exc:
        plugin.parse(refused)
    assert exc.value.kind == "malformed" and "refused" in exc.value.reason
    with pytest.raises(FrameError):
        plugin.parse(pack_frame(0x04, 0x01, CELLS_UART[4:-3]))


@pytest.mark.parametrize(
    "frame",
    [pack_frame(0x06, 0x00, b"\x01\x02"), pack_frame(0xA5, 0x03), pack_frame(0x5A, 0xE1, b"\0\1")],
    ids=["register-0x06", "echoed-read-request", "echoed-write-request"],
)
def test_unknown_register_is_rejected(plugin: Plugin, frame: bytes) -> None:
    # Requests are framed like replies, so an echo the transport let through (echo = false)
    # passes the scanner; parse names it a reply for no known part.
    with pytest.raises(FrameError) as exc:
        plugin.parse(frame)
    assert exc.value.kind == "unexpected" and exc.value.raw == frame


@pytest.mark.parametrize(
    "frame",
    [
        pack_frame(0x04, 0x00, b"\x0d\x66\x0d"),
        pack_frame(0x04, 0x00),
        pack_frame(0x03, 0x00, basic_payload()[:22]),
        pack_frame(0x03, 0x00, basic_payload(temps=[2955, 2955, 2955])[:-2]),
    ],
    ids=["odd-cell-bytes", "no-cells", "basic-too-short", "ntc-missing"],
)
def test_content_that_does_not_fit_is_rejected(plugin: Plugin, frame: bytes) -> None:
    assert extract_all(plugin, frame)[0] == [frame]  # well framed: parse must catch it
    with pytest.raises(FrameError) as exc:
        plugin.parse(frame)
    assert exc.value.kind == "malformed"


@settings(max_examples=100, deadline=None)
@given(extra=st.binary(max_size=40))
def test_trailing_fields_of_newer_firmware_are_ignored(extra: bytes) -> None:
    plugin = JbdPlugin()
    plain = plugin.parse(basic_frame(temps=[2955, 2954]))[1]
    longer = pack_frame(0x03, 0x00, basic_payload(temps=[2955, 2954]) + extra)
    frames, errors, _ = extract_all(plugin, longer)
    assert not errors and frames == [longer]
    assert plugin.parse(longer) == ("basic", plain)


def _length(raw: bytes, delta: int) -> bytes:
    """The frame with its length byte changed by ``delta`` and the check value made to match."""
    out = bytearray(raw)
    out[3] += delta
    out[-3:-1] = negsum16(out, 2, len(out) - 3).to_bytes(2, "big")
    return bytes(out)


MALFORMED = [
    # (id, stream, frames extracted, error kinds)
    ("bad-trailer", BASIC_UART[:-1] + b"\x76", 0, ["malformed"]),
    ("length-too-long", _length(BASIC_UART, +1) + CELLS_UART, 1, ["malformed"]),
    ("length-too-short", _length(BASIC_UART, -1), 0, ["malformed"]),
    ("stray-start-byte-before", b"\xdd\x01" + BASIC_UART, 1, ["malformed"]),
]


@pytest.mark.parametrize(
    ("stream", "nframes", "kinds"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_streams(plugin: Plugin, stream: bytes, nframes: int, kinds: list[str]) -> None:
    frames, errors, _ = extract_all(plugin, stream)
    assert len(frames) == nframes and [e.kind for e in errors] == kinds
    for frame in frames:
        assert frame in (BASIC_UART, CELLS_UART)


# -- state -------------------------------------------------------------------------------------
EXPECTED_ALARMS = {
    0: "high_cell_voltage", 1: "low_cell_voltage", 2: "high_voltage", 3: "low_voltage",
    4: "high_charge_temperature", 5: "low_charge_temperature", 6: "high_temperature",
    7: "low_temperature", 8: "high_charge_current", 9: "high_discharge_current",
    10: "short_circuit", 11: "internal_failure",
}  # fmt: skip


def test_protection_table_is_complete_and_uses_schema_names() -> None:
    assert PROTECTION_ALARMS == EXPECTED_ALARMS
    assert set(PROTECTION_ALARMS.values()) <= set(ALARMS)


def test_captured_cell_overvoltage_raises_alarm(plugin: Plugin) -> None:
    state = decoded_state(plugin, CAPTURED[6].raw, CAPTURED[4].raw)
    assert state["alarms"]["high_cell_voltage"] == 2
    assert sum(state["alarms"].values()) == 2


def test_software_lock_and_undocumented_bits_raise_nothing(plugin: Plugin) -> None:
    alarms = decoded_state(plugin, basic_frame(protection=0xF000))["alarms"]
    assert alarms and not any(alarms.values())


def test_captured_replies_build_a_state(plugin: Plugin) -> None:
    parts = dict(plugin.parse(c.raw) for c in CAPTURED[:3])
    state = validate_state(make_state("ttyUSB0", 1, "jbd", 3, plugin.state(parts), {}))
    assert state["voltage"] == pytest.approx(15.6) and state["soc"] == 100.0
    assert state["cells"] == pytest.approx([3.909, 3.901, 3.895, 3.901])
    assert state["cell_delta"] == pytest.approx(0.014)
    assert state["balancing"] == [0, 0, 0, 0]
    assert (state["charge_fet"], state["discharge_fet"]) == (True, True)
    assert state["mosfet_temperature"] is None  # every NTC is a battery temperature
    assert state["hardware"] == "JBD-SP04S034-L4S-200A-B-U"
    assert plugin.state({k: parts[k] for k in ("basic", "cells")})["hardware"] == ""
    with pytest.raises(FrameError):
        plugin.state({"basic": parts["basic"]})
    only_charge = plugin.state(dict(plugin.parse(c.raw) for c in CAPTURED[7:9]))  # 16S, 0x01
    assert (only_charge["charge_fet"], only_charge["discharge_fet"]) == (True, False)


def test_balance_words_give_per_cell_flags(plugin: Plugin) -> None:
    cells = pack_frame(0x04, 0x00, (3300).to_bytes(2, "big") * 20)
    basic = basic_frame(bal_lo=0b1000_0000_0000_0101, bal_hi=0b10, cells=20)
    flags = decoded_state(plugin, basic, cells)["balancing"]
    assert [i + 1 for i, f in enumerate(flags) if f] == [1, 3, 16, 18]
    assert len(flags) == 20
    four = decoded_state(plugin, basic_frame(bal_lo=0xFFFF, bal_hi=0xFFFF))["balancing"]
    assert four == [1, 1, 1, 1]  # bits beyond the reported cells are dropped


# -- simulator ---------------------------------------------------------------------------------
def make_sim(**model) -> tuple[JbdSimulator, BatteryModel]:
    pack = BatteryModel(**model)
    return JbdSimulator({1: pack}), pack


def test_simulator_carries_one_pack() -> None:
    with pytest.raises(ValueError):
        JbdSimulator({1: BatteryModel(), 2: BatteryModel()})


def test_simulator_buffers_partial_requests_and_skips_bad_ones() -> None:
    sim, _ = make_sim()
    request = bytes.fromhex("dda50400fffc77")
    assert all(sim.feed(request[i : i + 1]) == [] for i in range(6))
    (reply,) = sim.feed(request[6:])
    assert reply[:2] == b"\xdd\x04"
    noise = b"\x00\x13" + bytes.fromhex("dda50300fffe77")  # bad check value: ignored
    write = bytes.fromhex("dd5ae1020001ff1c77")  # charge FET off: acknowledged in turn
    replies = sim.feed(noise + write + request + bytes.fromhex("dda50300fffd77"))
    assert [r[1] for r in replies] == [0xE1, 0x04, 0x03]


def test_simulator_skips_a_stray_start_byte() -> None:
    sim, _ = make_sim()
    replies = sim.feed(b"\xdd\x13" + bytes.fromhex("dda50400fffc77"))
    assert [r[1] for r in replies] == [0x04]


def test_simulator_refusals(plugin: Plugin) -> None:
    sim, _ = make_sim()
    (reply,) = sim.feed(pack_frame(0xA5, 0x06))  # a register it does not serve
    assert reply.hex(" ") == "dd 06 80 00 ff 80 77"
    with pytest.raises(FrameError):
        plugin.parse(reply)
    # EEPROM access outside factory mode; 0x0A with another command than the SoC reset
    assert sim.feed(read_request(0x2D)) == [ack(0x2D, 0x80)]
    assert sim.feed(write_request(0x2D, b"\x00\x00")) == [ack(0x2D, 0x80)]
    assert sim.feed(write_request(0x01, b"\x28\x28")) == [ack(0x01, 0x80)]
    assert sim.feed(write_request(0x0A, b"\x07\x00")) == [ack(0x0A, 0x80)]


# -- writes (control channel) ------------------------------------------------------------------
ESPHOME_WRITES = "syssi/esphome-jbd-bms tests/components/jbd_bms/write_command_test.cpp"


@pytest.mark.parametrize(
    "frame,expected",
    [
        # PulseView captures of register 0xE1 (MOS control), ESPHOME_WRITES: both on, charge off,
        # discharge off, both off.
        (mos_request(0), "dd 5a e1 02 00 00 ff 1d 77"),
        (mos_request(MOS_CHARGE_OFF), "dd 5a e1 02 00 01 ff 1c 77"),
        (mos_request(MOS_DISCHARGE_OFF), "dd 5a e1 02 00 02 ff 1b 77"),
        (mos_request(3), "dd 5a e1 02 00 03 ff 1a 77"),
        # force SoC reset, register 0x0A = 0x0100 (ESPHOME_WRITES, ButtonCommandTest)
        (write_request(0x0A, b"\x01\x00"), "dd 5a 0a 02 01 00 ff f3 77"),
        # factory mode in / out: registers 0x00 = 56 78, 0x01 = 28 28 (store) or 00 00
        # (dbus-serialbattery bms/lltjbd.py CMD_ENTER_FACTORY_MODE, CMD_EXIT_AND_SAVE_FACTORY_MODE,
        # CMD_EXIT_FACTORY_MODE; bms-tools JBD_REGISTER_MAP.md "Enter/Exit factory Mode")
        (write_request(0x00, b"\x56\x78"), "dd 5a 00 02 56 78 ff 30 77"),
        (write_request(0x01, b"\x28\x28"), "dd 5a 01 02 28 28 ff ad 77"),
        (write_request(0x01, b"\x00\x00"), "dd 5a 01 02 00 00 ff fd 77"),
        (read_request(0x2D), "dd a5 2d 00 ff d3 77"),
        # the write acknowledgement: "DD E1 00 00 -- chk 77" (Jiabaida V19 protocol section 4);
        # no data, so the check value is 0x10000 - 0 = 0x0000
        (ack(0xE1), "dd e1 00 00 00 00 77"),
        (ack(0xE1, 0x80), "dd e1 80 00 ff 80 77"),
    ],
    ids=(
        "mos-on mos-chg-off mos-dsg-off mos-off soc factory-in factory-save factory-discard "
        "read-2d ack refusal"
    ).split(),
)
def test_write_frames_byte_exact(frame: bytes, expected: str) -> None:
    assert frame.hex(" ") == expected


def test_payload_longer_than_a_length_byte_is_refused() -> None:
    with pytest.raises(ValueError):
        pack_frame(0x03, 0x00, bytes(256))


def sim_link(**model: Any) -> tuple[SimLink, JbdSimulator, BatteryModel]:
    sim, pack = make_sim(**model)
    return SimLink(sim), sim, pack


def test_charge_and_discharge_keep_each_others_lock(plugin: Plugin) -> None:
    link, sim, pack = sim_link()
    plugin.control(link, 1, "charge", False, {})
    plugin.control(link, 1, "discharge", False, {})
    plugin.control(link, 1, "charge", True, {})
    assert [f[5] for f in link.sent] == [0x01, 0x03, 0x02]
    assert pack.charge_fet and not pack.discharge_fet
    state = poll(plugin, sim, 1)
    assert state["charge_fet"] and not state["discharge_fet"]
    assert not any(state["alarms"].values())  # the software lock (bit 12) raises no alarm


def test_first_write_guesses_the_lock_from_the_state(plugin: Plugin) -> None:
    # Discharge FET off while protection bit 12 (software lock) is set: assume it is locked, and
    # keep it locked when switching the charge FET off.
    basic = plugin.parse(basic_frame(fets=FET_CHARGE, protection=1 << 12))[1]
    assert software_locks(basic) == MOS_DISCHARGE_OFF
    assert software_locks(plugin.parse(basic_frame(fets=FET_CHARGE))[1]) == 0  # a protection
    link, _, _ = sim_link()
    plugin.control(link, 1, "charge", False, {"basic": basic})
    assert link.sent == [mos_request(MOS_CHARGE_OFF | MOS_DISCHARGE_OFF)]


def test_remembered_lock_is_dropped_when_the_bms_shows_none(plugin: Plugin) -> None:
    link, _, _ = sim_link()
    before = {"basic": plugin.parse(basic_frame())[1]}
    plugin.control(link, 1, "discharge", False, before)
    plugin.control(link, 1, "charge", False, before)  # no newer 0x03 yet: the lock is kept
    locked = {"basic": plugin.parse(basic_frame(fets=0, protection=1 << 12))[1]}
    plugin.control(link, 1, "charge", True, locked)  # newer 0x03 with bit 12: still kept
    restarted = {"basic": plugin.parse(basic_frame(fets=3))[1]}  # bit 12 gone: no lock left
    plugin.control(link, 1, "charge", False, restarted)
    assert [f[5] for f in link.sent] == [0x02, 0x03, 0x02, 0x01]


def test_balancer_off_is_a_factory_mode_sequence(plugin: Plugin) -> None:
    link, sim, pack = sim_link(cells=8, soc=99.0, imbalance=0.05)
    assert any(poll(plugin, sim, 1)["balancing"])
    plugin.control(link, 1, "balance", False, {})
    config = 0x0011  # the simulator's other func_config bits (switch, LED) are kept
    assert link.sent == [
        write_request(0x00, b"\x56\x78"),
        read_request(0x2D),
        write_request(0x2D, config.to_bytes(2, "big")),
        write_request(0x01, b"\x28\x28"),
    ]
    assert not pack.balancer and not sim.factory
    assert not any(poll(plugin, sim, 1)["balancing"])
    plugin.control(link, 1, "balance", False, {})  # already off: nothing stored
    assert link.sent[-1] == write_request(0x01, b"\x00\x00") and len(link.sent) == 7
    plugin.control(link, 1, "balance", True, {})
    assert pack.balancer and link.sent[-2] == write_request(0x2D, b"\x00\x15")


def test_refused_write_is_a_control_error(plugin: Plugin) -> None:
    link, sim, _ = sim_link()
    sim.write = lambda register, data: ack(register, 0x80)  # type: ignore[method-assign]
    with pytest.raises(ControlError, match="refused register 0xE1"):
        plugin.control(link, 1, "charge", False, {})
    with pytest.raises(ControlError, match="refused register 0x00"):
        plugin.control(link, 1, "balance", False, {})
    assert link.sent[-1] == write_request(0x00, b"\x56\x78")  # nothing after the refusal


def test_failure_inside_factory_mode_leaves_it_without_storing(plugin: Plugin) -> None:
    link, sim, pack = sim_link()
    real = sim.write

    def flaky(register: int, data: bytes) -> bytes:
        return b"" if register == 0x2D else real(register, data)  # the 0x2D write is lost

    sim.write = flaky  # type: ignore[method-assign]
    with pytest.raises(LinkTimeout):
        plugin.control(link, 1, "balance", False, {})
    assert link.sent[-1] == write_request(0x01, b"\x00\x00")
    assert pack.balancer and not sim.factory


def test_reset_soc_clears_the_drift(plugin: Plugin) -> None:
    link, sim, pack = sim_link(soc=60.0, soc_error=15.0)
    assert poll(plugin, sim, 1)["soc"] == 75.0
    plugin.control(link, 1, "reset_soc", True, {})
    assert link.sent == [bytes.fromhex("dd5a0a020100fff377")]
    assert poll(plugin, sim, 1)["soc"] == 60.0 and pack.soc_error == 0.0


def test_write_reply_for_another_register_is_skipped(plugin: Plugin) -> None:
    link, sim, _ = sim_link()
    late = pack_frame(0x04, 0x00, b"\x0d\x05")  # a late read reply before the ack
    real = sim.feed
    sim.feed = lambda data: [late, *real(data)]  # type: ignore[method-assign]
    plugin.control(link, 1, "charge", False, {})  # no error: the 0xE1 ack is found after it
