"""EG4 LiFePOWER plugin and simulator: ``7E`` ... ``0D`` frames validated by their structure."""

from __future__ import annotations

import json

import pytest

from bmsbank.errors import FrameError
from bmsbank.schema import ALARM, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.plugins.eg4_lifepower.family import request
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.plugin_contract import Captured, MultidropContract, assert_close, extract_all, poll
from tests.test_cli import bmsbank
from tests.test_poller import port_config, run_poller

PSB = "slim-bean/powermon README.md (the reply to 7E 01 01 00 FE 0D)"
PSB_TEST = "slim-bean/powermon pkg/eg4/eg4_test.go (TestParse)"
BUILT = "built from DSB's request and PR #390's logged text (check byte unknown: 00 here)"
IDLE = ("7e010158 0110 0cf3 0cf4 0cf3 0cf3 0cf4 0cf4 0cf4 0cf4 0cf4 0cf4 0cf4 0cf4 0cf4 0cf4 0cf4"
        "0cf4 0201 7530 0301 229c 0401 2710 0506 0041 0041 0040 0040 8042 2042 0605 0000 0000 0000"
        "0000 0000 0701 0001 0801 14b9 0901 2710 0a01 0000 3c0d")  # fmt: skip
DISCHARGING = ("7e010158 0110 0cb0 0ca6 0ca8 0c95 0c98 0cb0 0c94 0caf 0c95 0c96 0ca8 0c92 0ca7 0c94"
               "0ca7 0c9f 0201 84a7 0301 230a 0401 2710 0506 0041 0041 0041 0040 8043 2042 0605"
               "0000 0002 0000 0000 0000 0701 0001 0801 1433 0901 2710 0a01 0000 960d")  # fmt: skip

CAPTURED = [
    # PSB, a 16-cell 100 Ah pack at rest: cells 3.315/3.316 V, 0 A (30000), SoC 88.60 %,
    # 100.00 Ah, probes 15/15/14/14 °C, MOSFET and ambient 16 °C (high bytes 0x80/0x20 set),
    # no alarm, 1 cycle, 53.05 V, SoH 100.00 %; check byte 0x3C.
    Captured(PSB, IDLE, "status",
             {"cells": [3.315, 3.316, 3.315, 3.315] + [3.316] * 12, "current": 0.0, "soc": 88.6,
              "capacity": 100.0, "temperature_words": [0x41, 0x41, 0x40, 0x40, 0x8042, 0x2042],
              "status_words": [0, 0, 0, 0, 0], "cycles": 1, "voltage": 53.05, "soh": 100.0}),
    # PSB_TEST, the same pack discharging (status word 2 = 0x0002): -39.59 A (0x84A7 = 33959),
    # 51.71 V, SoC 89.70 %, cells 3.218-3.248 V, probes 15/15/15/14, MOSFET 17, ambient 16 °C
    # (the test's own expectations); check byte 0x96.
    Captured(PSB_TEST, DISCHARGING, "status",
             {"cells": [3.248, 3.238, 3.24, 3.221, 3.224, 3.248, 3.22, 3.247, 3.221, 3.222, 3.24,
                        3.218, 3.239, 3.22, 3.239, 3.231],
              "current": -39.59, "soc": 89.7, "capacity": 100.0, "cycles": 1, "voltage": 51.71,
              "soh": 100.0, "status_words": [0, 2, 0, 0, 0]}),
    # BUILT: the firmware reply at address 1, "3QT-YS00-16SV100A-V3.5".
    Captured(BUILT, "7e013316 3351542d595330302d31365356313030412d56332e35 000d", "firmware",
             {"firmware": "3QT-YS00-16SV100A-V3.5"}),
    # BUILT: the hardware reply at address 1, "B".
    Captured(BUILT, "7e014201 42 000d", "hardware", {"hardware": "B"}),
]  # fmt: skip


def with_bytes(hex_: str, at: int, *values: int) -> bytes:
    """The frame ``hex_`` with the bytes from ``at`` replaced by ``values``."""
    raw = bytearray(bytes.fromhex(hex_))
    raw[at : at + len(values)] = bytes(values)
    return bytes(raw)


def reframed(payload: bytes, address: int = 1) -> bytes:
    """A status frame around ``payload`` (length byte set; check byte 0x00)."""
    return bytes((0x7E, address, 0x01, len(payload))) + payload + b"\x00\x0d"


IDLE_PAYLOAD = bytes.fromhex(IDLE)[4:-2]
GROUP_9 = IDLE_PAYLOAD.index(bytes.fromhex("0901 2710"))
#: whole frames the framer accepts but whose content breaks the structure ("malformed")
BAD_STRUCTURE = {
    "group-runs-past-the-end": with_bytes(IDLE, 5, 0x11),  # 17 cells said, 16 sent
    "group-9-missing": reframed(IDLE_PAYLOAD[:GROUP_9] + IDLE_PAYLOAD[GROUP_9 + 4 :]),
    "group-repeated": reframed(IDLE_PAYLOAD + bytes.fromhex("0a01 0000")),
    "groups-out-of-order": reframed(IDLE_PAYLOAD[GROUP_9:] + IDLE_PAYLOAD[:GROUP_9]),
    "unknown-group": reframed(IDLE_PAYLOAD + bytes.fromhex("0b01 0000")),
    "two-current-words": reframed(IDLE_PAYLOAD.replace(bytes.fromhex("0201 7530"),
                                                       bytes.fromhex("0202 7530 7530"))),
    "half-a-group-header": reframed(IDLE_PAYLOAD + b"\x0b"),
}  # fmt: skip
#: byte streams the framer itself rejects, and the counter each is counted under
BAD_FRAMES = {
    "wrong-end": (with_bytes(IDLE, 93, 0x0C), "malformed"),
    "length-one-short": (with_bytes(IDLE, 3, 0x57), "malformed"),  # 0D expected at the check
}


class TestEg4LifePower(MultidropContract):
    plugin_name = "eg4_lifepower"
    captured = CAPTURED
    address = 1
    requests = {"status": "7e 01 01 00 fe 0d", "hardware": "7e 01 42 00 fc 0d",
                "firmware": "7e 01 33 00 fe 0d"}  # fmt: skip
    #: probes in whole °C
    roundtrip_tolerance = {"temperatures": 0.5}

    def check_state(self, state, model) -> None:
        """The contract's check, with the FETs the protection bits imply (no FET bits exist)."""
        truth = model.snapshot()
        tol = {"voltage": 0.01, "current": 0.01, "soc": 0.01, "capacity": 0.01,
               "remaining": 0.02, "cells": 0.001, "temperatures": 0.5}  # fmt: skip
        for key, t in tol.items():
            assert_close(state[key], truth[key], key, tol=t)
        active = model.active_alarms
        charge_stop = {"short_circuit", "high_voltage", "high_charge_temperature",
                       "low_charge_temperature"}  # fmt: skip
        discharge_stop = {"short_circuit", "low_voltage"}
        assert state["charge_fet"] == (truth["charge_fet"] and not active & charge_stop)
        assert state["discharge_fet"] == (truth["discharge_fet"] and not active & discharge_stop)

    def test_bad_checksum_is_rejected_and_counted(self, plugin: Plugin) -> None:
        """The check byte's algorithm is unknown: another value there decodes the same."""
        for cap in self.captured:
            changed = bytearray(cap.raw)
            changed[-2] ^= 0x5A
            frames, errors, _ = extract_all(plugin, bytes(changed))
            assert frames == [bytes(changed)] and not errors, cap.source
            assert plugin.parse(frames[0], None, 1) == plugin.parse(cap.raw, None, 1)

    def test_state_of_the_idle_capture(self, plugin: Plugin) -> None:
        state = validate_state_of(plugin, {"status": parse(plugin, CAPTURED[0])})
        assert (state["voltage"], state["current"], state["soc"]) == (53.05, 0.0, 88.6)
        assert (state["capacity"], state["remaining"], state["cycles"]) == (100.0, 88.6, 1)
        assert state["temperatures"] == [15.0, 15.0, 14.0, 14.0]
        assert state["mosfet_temperature"] == 16.0 and state["soh"] == 100.0
        assert state["charge_fet"] and state["discharge_fet"]
        assert not any(state["alarms"].values()) and state["balancing"] == [0] * 16
        assert (state["hardware"], state["serial"]) == ("", "")

    def test_discharging_capture_has_a_negative_current(self, plugin: Plugin) -> None:
        state = plugin.state({"status": parse(plugin, CAPTURED[1])})
        assert state["current"] == -39.59 and state["voltage"] == 51.71
        assert state["remaining"] == pytest.approx(89.7)
        assert state["temperatures"] == [15.0, 15.0, 15.0, 14.0]

    def test_versions_complete_the_hardware_text(self, plugin: Plugin) -> None:
        parts = {cap.part: parse(plugin, cap) for cap in (CAPTURED[0], *CAPTURED[2:])}
        state = plugin.state(parts)
        assert state["hardware"] == "EG4 LiFePOWER 3QT-YS00-16SV100A-V3.5 hw B"
        assert state["serial"] == ""  # no serial number command is public

    @pytest.mark.parametrize("case", list(BAD_STRUCTURE))
    def test_bad_structure_is_malformed(self, plugin: Plugin, case: str) -> None:
        raw = BAD_STRUCTURE[case]
        frames, errors, _ = extract_all(plugin, raw)
        assert frames == [raw] and not errors  # a whole frame by start, length and end
        with pytest.raises(FrameError) as err:
            plugin.parse(raw, None, 1)
        assert err.value.kind == "malformed"

    @pytest.mark.parametrize("case", list(BAD_FRAMES))
    def test_bad_frames_are_counted_and_skipped(self, plugin: Plugin, case: str) -> None:
        bad, kind = BAD_FRAMES[case]
        frames, errors, _ = extract_all(plugin, bad + CAPTURED[1].raw)
        assert frames == [CAPTURED[1].raw]  # the good frame after it is still found
        assert errors and errors[0].kind == kind

    @pytest.mark.parametrize(("bit", "name", "charge", "discharge"), [
        (2, "short_circuit", False, False), (3, "high_current", True, True),
        (4, "high_voltage", False, True), (5, "low_voltage", True, False),
        (7, "low_charge_temperature", False, True), (9, "high_temperature", True, True),
        (10, "internal_failure", True, True),
    ], ids=lambda v: v if isinstance(v, str) else None)  # fmt: skip
    def test_alarm_bits_and_fets(self, plugin: Plugin, bit, name, charge, discharge) -> None:
        fields = parse(plugin, CAPTURED[0])
        fields["status_words"][1] = 1 << bit | 1  # and "charging", which is no alarm
        state = plugin.state({"status": fields})
        assert state["alarms"][name] == ALARM and sum(state["alarms"].values()) == ALARM
        assert (state["charge_fet"], state["discharge_fet"]) == (charge, discharge)

    def test_masked_cell_bits_and_absent_probes(self, plugin: Plugin) -> None:
        raw = with_bytes(IDLE, 6, 0xCC, 0xF3)  # the two top bits of cell 1 set (DSB #155)
        raw = with_bytes(raw.hex(), 55, 0x00)  # probe 2 reads 0: none fitted
        state = plugin.state({"status": plugin.parse(raw, None, 1)[1]})
        assert state["cells"][0] == 3.315 and state["temperatures"] == [15.0, 14.0, 14.0]

    @pytest.mark.parametrize(("at", "values"), [
        (44, (0x27, 0x11)), (86, (0x27, 0x11)), (6, (0x3F, 0xFF)), (53, (0xD0,)),
    ], ids=["soc-100.01", "soh-100.01", "cell-16.383V", "probe-158C"])  # fmt: skip
    def test_values_no_pack_can_have_are_malformed(self, plugin: Plugin, at, values) -> None:
        # the check byte cannot catch a corrupted value: the range check must
        fields = plugin.parse(with_bytes(IDLE, at, *values), None, 1)[1]
        with pytest.raises(FrameError) as err:
            plugin.state({"status": fields})
        assert err.value.kind == "malformed"

    def test_unknown_command_is_unexpected(self, plugin: Plugin) -> None:
        with pytest.raises(FrameError) as err:
            plugin.parse(with_bytes(IDLE, 2, 0x05), None, 1)
        assert err.value.kind == "unexpected"

    def test_reply_from_another_address(self, plugin: Plugin) -> None:
        with pytest.raises(FrameError) as err:
            plugin.parse(CAPTURED[0].raw, None, 2)
        assert err.value.kind == "address"

    def test_state_needs_the_status(self, plugin: Plugin) -> None:
        with pytest.raises(FrameError) as err:
            plugin.state({"hardware": parse(plugin, CAPTURED[3])})
        assert err.value.kind == "truncated"

    @pytest.mark.parametrize(("address", "check"), [
        (0, 0x00), (1, 0xFE), (2, 0xFC), (4, 0xF8), (6, 0xFC), (8, 0xF0), (13, 0xFE),
    ])  # fmt: skip
    def test_request_check_bytes_as_dsb_sends_them(self, address: int, check: int) -> None:
        assert request(address, 0x01) == bytes((0x7E, address, 1, 0, check, 0x0D))
        assert request(address, 0x42)[4] == 0xFC

    def test_simulator_is_silent_for_others(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel()})
        others = (request(2, 0x01), bytes.fromhex("7e 01 05 00 fe 0d"),
                  bytes.fromhex("7e 01 01 01 00 fe 0d"), bytes.fromhex("01 03 00 00 00 27 05 d0"),
                  b"~20014A420000FDA2\r", b"\xdd\xa5\x03\x00\xff\xfd\x77")  # fmt: skip
        for other in others:
            assert sim.feed(other) == [], other

    def test_a_reply_arriving_in_pieces_waits(self, plugin: Plugin) -> None:
        for cap in self.captured:
            for k in range(1, len(cap.raw)):
                assert plugin.extract(bytearray(cap.raw[:k]), LinkStats()) is None, (cap.hex, k)

    def test_poll_reads_the_versions(self, plugin: Plugin) -> None:
        model = BatteryModel(cells=8, capacity=200.0, temperatures=[5.0, -3.0, 7.0])
        state = poll(plugin, simulators.create(self.plugin_name, {15: model}), 15)
        assert len(state["cells"]) == 8 and state["temperatures"] == [5.0, -3.0, 7.0]
        assert state["hardware"] == "EG4 LiFePOWER 3QT-YS00-16SV100A-V3.5 hw B"

    def test_decode_on_the_command_line(self) -> None:
        out = bmsbank("decode", "eg4_lifepower", CAPTURED[1].hex.replace(" ", ""),
                      "--address", "1")  # fmt: skip
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout)
        assert state["pack"] == "decode:1" and state["current"] == -39.59
        assert len(state["cells"]) == 16 and state["soc"] == 89.7
        wrong = bmsbank("decode", "eg4_lifepower", CAPTURED[1].hex.replace(" ", ""),
                        "--address", "2")  # fmt: skip
        assert wrong.returncode != 0 and "(address)" in wrong.stderr

    def test_registered(self, plugin: Plugin) -> None:
        super().test_registered(plugin)
        info = plugins.info(self.plugin_name)
        assert (info.baudrate, info.parity, info.controls) == (9600, "N", frozenset())
        assert list(info.addresses) == list(range(16)) and info.default_address == 1


def parse(plugin: Plugin, cap: Captured) -> dict:
    """The fields of a captured reply."""
    return plugin.parse(cap.raw, None, 1)[1]


def validate_state_of(plugin: Plugin, parts: dict) -> dict:
    """The state message a poller would send for ``parts``, validated."""
    from bmsbank.state import make_state

    return validate_state(make_state("t", 1, plugin.name, 0, plugin.state(parts), {}))


def test_poller_reads_an_eg4_lifepower_bus_through_a_pty(tmp_path):
    """Three packs (DIP 0, 1 and 15) on one pty, 9600 baud modelled."""
    models = {a: BatteryModel(cells=16, capacity=100.0, soc=40.0 + i * 20, current=5.0 - 5 * i,
                              temperatures=[15.0 + i, 16.0])
              for i, a in enumerate((0, 1, 15))}  # fmt: skip
    sim = simulators.create("eg4_lifepower", models)
    server = PtyServer(sim, link=str(tmp_path / "tty-eg4lp"), model_wire=True).start()
    try:
        poller, sent = run_poller(port_config(server.device, "eg4_lifepower", list(models)))
        poller.close()
    finally:
        server.stop()
    assert [s["pack"] for s in sent] == ["p:0", "p:1", "p:15"]
    for state in map(validate_state, sent):
        model = models[state["address"]]
        assert state["current"] == pytest.approx(model.current, abs=0.01)
        assert state["soc"] == pytest.approx(model.soc, abs=0.01)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["temperatures"] == pytest.approx(model.temperatures, abs=0.5)
        assert state["hardware"].startswith("EG4 LiFePOWER 3QT")
        assert state["link"]["ok"] == 1 and state["link"]["timeout"] == 0
