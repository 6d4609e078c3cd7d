"""ANT BMS (legacy protocol) plugin and simulator: captured 140-byte frames, sign, codes, pty."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bmsbank.config import parse
from bmsbank.errors import FrameError
from bmsbank.native.frames import checksum
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.ant.family import (
    CHARGE_ALARMS,
    DISCHARGE_ALARMS,
    READ_STATUS,
)
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.plugin_contract import Captured, PluginContract, assert_close, extract_all, poll

M2019 = "syssi/esphome-ant-bms docs/pdus/model2019-req-dbdb00000000.txt"
M2021 = "syssi/esphome-ant-bms docs/pdus/model2021-req-dbdb00000000.txt"
#: frames as the capture files list them (hex, space-separated), one line each
F2019_1 = (
    "AA 55 AA FF 01 E8 0D AA 0D 9C 0D A4 0D 8E 0D 9C 0D 90 0D B4 0D 97 0D B5 0D B5 0D A8 0D 91 "
    "0D 9E 0D 8C 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
    "00 00 00 00 00 00 00 00 00 00 00 00 00 50 29 0A 21 FE 80 04 19 58 93 00 A9 84 0F 00 FA 08 "
    "31 00 16 00 15 00 15 00 15 00 15 00 15 01 01 00 03 E8 00 17 00 00 00 01 86 09 0D B5 0E 0D "
    "8C 0D 9F 0E 00 00 00 70 00 6B 02 AC 00 00 00 00 40 01 15 F4"
)
F2019_9 = (
    "AA 55 AA FF 01 E6 0D 96 0D 87 0D 90 0D 7B 0D 88 0D 7D 0D A3 0D 85 0D A6 0D A7 0D 92 0D 7E "
    "0D 85 0D 83 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
    "00 00 00 00 00 00 00 00 00 00 00 00 00 78 29 0A 21 FE 80 04 17 F6 3A 00 A9 84 69 00 FA 08 "
    "57 00 16 00 15 00 15 00 15 00 15 00 15 01 01 00 03 E8 00 17 00 00 00 02 46 0A 0D A7 04 0D "
    "7B 0D 8D 0E 00 00 00 6F 00 6B 02 AC 00 00 00 00 50 01 15 71"
)
F2021_1 = (
    "AA 55 AA FF 02 7D 0F 8F 0F 8F 0F 8E 0F 8E 0F 8D 0F 90 0F 90 0F 91 0F 8F 0F 8F 0F 90 0F 8D "
    "0F 8C 0F 8E 0F 8C 0F 8F 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 54 0D F2 8E 80 0B A3 90 F8 00 04 34 E2 00 17 B8 "
    "D0 00 17 00 19 00 15 00 16 FF D8 FF D8 01 01 00 00 00 00 00 FF 00 00 00 00 08 0F 91 11 0F "
    "8C 0F 8E 10 00 01 00 7F 00 7B 02 AF 00 00 00 00 00 00 1A 5E"
)

CAPTURED = [
    # M2019 frame 1 (a 14S pack, discharging, see test_current_sign_decided_by_the_capture):
    # 48.8 V, wire +8.0 A, SoC 41 %, 170.000000 / 68.769939 Ah, 11109.391 Ah moved, six probes
    # 22/21/21/21/21/21 °C, both FETs on (1), balancer off, +390 W, max cell 9 (3.509 V), min
    # cell 14 (3.468 V), average 3.487 V, 14 cells.
    Captured(M2019, F2019_1, "status",
             {"voltage": 48.8, "discharge_current": 8.0, "current": -8.0, "soc": 41,
              "capacity": 170.0, "remaining": 68.769939, "cycle_capacity": 11109.391,
              "uptime": 16386097, "temperatures": [22.0, 21.0, 21.0, 21.0, 21.0, 21.0],
              "cells": [3.498, 3.484, 3.492, 3.47, 3.484, 3.472, 3.508, 3.479, 3.509, 3.509,
                        3.496, 3.473, 3.486, 3.468],
              "charge_status": 1, "discharge_status": 1, "balancer_status": 0, "power": 390,
              "cell_max_number": 9, "cell_max": 3.509, "cell_min_number": 14, "cell_min": 3.468,
              "cell_average": 3.487, "cell_count": 14, "balancing_bits": 0}),
    # M2019 frame 9, taken later: 48.6 V, wire +12.0 A, 68.679226 Ah left, 11109.481 Ah moved,
    # +582 W (48.6 V x 12.0 A).
    Captured(M2019, F2019_9, "status",
             {"voltage": 48.6, "current": -12.0, "soc": 41, "remaining": 68.679226,
              "cycle_capacity": 11109.481, "power": 582, "cell_max_number": 10,
              "cell_min_number": 4, "cell_count": 14}),
    # M2021 frame 1 (a 16S pack at rest): 63.7 V, 0 A, SoC 84 %, 234.000000 / 195.268856 Ah,
    # 275.682 Ah moved, probes 23/25/21/22 °C and two unfitted (-40 = 0xFFD8), FETs on.
    Captured(M2021, F2021_1, "status",
             {"voltage": 63.7, "current": 0.0, "soc": 84, "capacity": 234.0,
              "remaining": 195.268856, "cycle_capacity": 275.682,
              "temperatures": [23.0, 25.0, 21.0, 22.0, None, None], "power": 0,
              "cell_count": 16,
              "cells": [3.983, 3.983, 3.982, 3.982, 3.981, 3.984, 3.984, 3.985, 3.983, 3.983,
                        3.984, 3.981, 3.98, 3.982, 3.98, 3.983]}),
]  # fmt: skip


def reframe(frame: bytes | bytearray) -> bytes:
    """``frame`` with its sum16 (bytes 4-137, big endian at 138) recomputed."""
    body = bytes(frame[:138])
    return body + checksum("sum16", body[4:]).to_bytes(2, "big")


def with_bytes(frame: bytes, **at: int) -> bytes:
    """``frame`` with single bytes changed (``b123=0``) and its checksum made good again."""
    out = bytearray(frame)
    for key, value in at.items():
        out[int(key[1:])] = value
    return reframe(out)


def parse_status(plugin: Plugin, raw: bytes) -> dict[str, Any]:
    frames, errors, _ = extract_all(plugin, raw)
    assert frames and not errors, errors
    return plugin.parse(frames[0])[1]


class TestAnt(PluginContract):
    plugin_name = "ant"
    captured = CAPTURED
    requests = {"status": "DB DB 00 00 00 00"}
    #: 0.1 V, 0.1 A and 1 °C steps on the wire
    roundtrip_tolerance = {"voltage": 0.05, "current": 0.05, "temperatures": 0.5}

    def check_state(self, state: dict[str, Any], model: BatteryModel) -> None:
        """As the contract, but a protection switches its FET off: the code is the FET's state."""
        charge_only = set(CHARGE_ALARMS.values())
        charge_fault = bool(model.active_alarms & charge_only)
        discharge_fault = bool(model.active_alarms & (set(DISCHARGE_ALARMS.values()) - charge_only))
        assert state["charge_fet"] == (model.charge_fet and not charge_fault)
        assert state["discharge_fet"] == (model.discharge_fet and not discharge_fault)
        fets = {"charge_fet": model.charge_fet, "discharge_fet": model.discharge_fet}
        super().check_state({**state, **fets}, model)  # the rest as the contract checks it

    def test_checksum_is_the_sum_after_the_header(self) -> None:
        for cap in CAPTURED:
            raw = cap.raw
            assert len(raw) == 140 and raw[:4] == bytes.fromhex("AA55AAFF")
            assert int.from_bytes(raw[138:], "big") == sum(raw[4:138]) & 0xFFFF, cap.hex[:40]
            assert reframe(raw) == raw

    def test_current_sign_decided_by_the_capture(self, plugin: Plugin) -> None:
        # the later frame has less left and more moved: the pack discharges, so + on the wire
        # is discharge and the state's current is negative
        first, later = (parse_status(plugin, c.raw) for c in CAPTURED[:2])
        assert later["remaining"] < first["remaining"]
        assert later["cycle_capacity"] > first["cycle_capacity"]
        assert first["power"] > 0 and first["current"] < 0 and later["current"] < 0

    def test_invert_current_option(self) -> None:
        inverted = plugins.load(self.plugin_name, {"invert_current": True})
        assert parse_status(inverted, CAPTURED[0].raw)["current"] == pytest.approx(8.0)
        model = BatteryModel(current=-10.0)
        state = poll(inverted, simulators.create(self.plugin_name, {1: model}), 1)
        assert state["current"] == pytest.approx(10.0, abs=0.1)
        with pytest.raises(ValueError):
            plugins.load(self.plugin_name, {"invert_current": "yes"})

    def test_state_of_the_2019_capture(self, plugin: Plugin) -> None:
        state = plugin.state({"status": parse_status(plugin, CAPTURED[0].raw)})
        assert_close(state, {
            "voltage": 48.8, "current": -8.0, "soc": 41.0, "capacity": 170.0,
            "remaining": 68.769939, "cycles": 65,  # 11109.391 Ah / 170 Ah
            "temperatures": [22.0, 21.0, 21.0, 21.0, 21.0, 21.0], "balancing": [0] * 14,
            "charge_fet": True, "discharge_fet": True, "hardware": "ANT BMS 14S",
        })  # fmt: skip
        assert len(state["cells"]) == 14 and not any(state["alarms"].values())

    def test_unfitted_probes_are_left_out(self, plugin: Plugin) -> None:
        state = plugin.state({"status": parse_status(plugin, CAPTURED[2].raw)})
        assert state["temperatures"] == [23.0, 25.0, 21.0, 22.0]
        assert len(state["cells"]) == 16 and state["current"] == 0.0

    def test_balancing_mask_bit_0_is_cell_1(self, plugin: Plugin) -> None:
        raw = with_bytes(CAPTURED[0].raw, b135=0b101, b134=0x80)  # cells 1, 3 and 24 (> 14)
        state = plugin.state({"status": parse_status(plugin, raw)})
        assert state["balancing"] == [1, 0, 1] + [0] * 11

    @pytest.mark.parametrize(("at", "code", "name", "fet"), [
        (103, 2, "high_cell_voltage", "charge_fet"), (103, 3, "high_charge_current", "charge_fet"),
        (103, 5, "high_voltage", "charge_fet"), (103, 6, "high_charge_temperature", "charge_fet"),
        (103, 7, "high_internal_temperature", "charge_fet"),
        (104, 2, "low_cell_voltage", "discharge_fet"), (104, 5, "low_voltage", "discharge_fet"),
        (104, 3, "high_discharge_current", "discharge_fet"),
        (104, 6, "high_temperature", "discharge_fet"), (104, 12, "short_circuit", "discharge_fet"),
        (104, 13, "internal_failure", "discharge_fet"),
    ], ids=lambda v: v if isinstance(v, str) and "_fet" not in v else None)  # fmt: skip
    def test_fet_status_codes_are_alarms(self, plugin, at, code, name, fet) -> None:
        raw = with_bytes(CAPTURED[0].raw, **{f"b{at}": code})
        state = plugin.state({"status": parse_status(plugin, raw)})
        assert state["alarms"][name] == 2 and sum(state["alarms"].values()) == 2
        assert state[fet] is False

    @pytest.mark.parametrize("code", [0, 4, 15], ids=["off", "battery-full", "switched-off"])
    def test_charge_fet_off_without_a_fault_is_no_alarm(self, plugin: Plugin, code: int) -> None:
        raw = with_bytes(CAPTURED[0].raw, b103=code)
        state = plugin.state({"status": parse_status(plugin, raw)})
        assert not state["charge_fet"] and not any(state["alarms"].values())

    @pytest.mark.parametrize(("mutate", "kind"), [
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 0x10]), "checksum"),
        (lambda raw: raw[:70] + b"\x00\x00\x01\x50" + raw[74:], "checksum"),  # data changed
        (lambda raw: with_bytes(raw, b123=0), "malformed"),
        (lambda raw: with_bytes(raw, b123=33), "malformed"),
        (lambda raw: with_bytes(raw, b74=101), "malformed"),
    ], ids=["check-value", "current-changed", "no-cells", "33-cells", "soc-101"])  # fmt: skip
    def test_malformed_frames_are_counted_under_their_kind(self, plugin, mutate, kind) -> None:
        bad = mutate(CAPTURED[0].raw)
        frames, errors, _ = extract_all(plugin, bad + CAPTURED[1].raw)
        if kind == "checksum":
            assert [e.kind for e in errors] == ["checksum"] and frames == [CAPTURED[1].raw]
            return
        assert not errors and frames[0] == bad  # a good check value: the content is refused
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0])
        assert err.value.kind == kind

    @pytest.mark.parametrize("head", ["AA55AAFE", "AA55AA", "55AAFF"],
                             ids=["other-function", "short-header", "no-first-byte"])  # fmt: skip
    def test_a_broken_header_is_noise_not_a_frame(self, plugin: Plugin, head: str) -> None:
        raw = bytes.fromhex(head) + CAPTURED[0].raw[4:]
        frames, errors, stats = extract_all(plugin, raw + CAPTURED[1].raw)
        assert frames == [CAPTURED[1].raw] and stats.noise_bytes == len(raw)
        assert all(e.kind == "checksum" for e in errors)

    def test_a_short_reply_waits_then_times_out(self, plugin: Plugin) -> None:
        for k in range(1, 140):
            assert plugin.extract(bytearray(CAPTURED[0].raw[:k]), LinkStats()) is None, k

    def test_simulator_answers_only_the_status_request(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel()})
        assert sim.feed(bytes.fromhex("5A5A00000101")) == []  # OLD's request: not simulated
        assert sim.feed(bytes.fromhex("DBDB00000101")) == []  # another register
        [reply] = sim.feed(READ_STATUS)
        assert len(reply) == 140 and reply == reframe(reply)
        with pytest.raises(ValueError, match="exactly one BMS"):
            simulators.create(self.plugin_name, {1: BatteryModel(), 2: BatteryModel()})

    def test_decode_on_the_command_line(self) -> None:
        cli = [sys.executable, "-m", "bmsbank.cli", "decode", "ant"]
        out = subprocess.run([*cli, CAPTURED[0].hex], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout)
        assert state["bms"] == "ant" and state["current"] == pytest.approx(-8.0)
        assert state["voltage"] == pytest.approx(48.8) and state["cycles"] == 65
        assert state["temperatures"] == pytest.approx([22, 21, 21, 21, 21, 21])
        bad_hex = CAPTURED[0].hex[:-2] + "00"
        bad = subprocess.run([*cli, bad_hex], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "check" in (bad.stderr + bad.stdout)

    def test_poller_reads_the_pack_through_a_pty(self, tmp_path) -> None:
        model = BatteryModel(cells=15, soc=37.0, current=-9.5, temperatures=[17.0, 18.0, 19.0])
        server = PtyServer(simulators.create(self.plugin_name, {1: model}),
                           link=str(tmp_path / "tty-ant"), model_wire=True).start()  # fmt: skip
        try:
            port = parse({"ports": [{"name": "p", "device": server.device, "bms": "ant",
                                     "addresses": [1]}]}, "test").ports[0]  # fmt: skip
            sent: list[dict] = []
            poller = Poller(port, sent.append)
            poller.poll_once()
            poller.close()
        finally:
            server.stop()
        [state] = sent
        assert state["pack"] == "p:1" and state["bms"] == "ant"
        assert state["current"] == pytest.approx(-9.5, abs=0.1)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["temperatures"] == pytest.approx([17.0, 18.0, 19.0])
        assert state["link"]["ok"] == 1 and state["link"]["checksum"] == 0
