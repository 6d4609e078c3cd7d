"""Renogy plugin and simulator: captured Modbus FC03 replies, decoded by their requests."""

from __future__ import annotations

import json

import pytest

from bmsbank.errors import FrameError
from bmsbank.schema import ALARM, WARNING, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.plugins.renogy.family import read_request
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.plugin_contract import Captured, MultidropContract, extract_all, poll
from tests.test_cli import bmsbank
from tests.test_poller import port_config, run_poller

AIO = "patman15/aiobmsble tests/bms/test_renogy_bms.py (MockRenogyBleakClient.RESP)"
GRM = "Grmume/renogy-smart-battery README.md (register scan of a RBT100LFP12SH-G1 at 247)"
CELLS30, PACK30, STATUS30 = ("30 03 13 88 00 22 45 5c", "30 03 13 b2 00 07 a4 8a",
                             "30 03 13 ec 00 08 85 5c")  # fmt: skip

CAPTURED = [
    # AIO, a RBT100LFP12-BT at 0x30 (the same Modbus bytes over BLE), cells block 5000 x 34:
    # 4 cells 3.5/3.3/3.3/3.3 V (0.1 V steps), 2 probes 17.0 °C, the other slots 0.
    Captured(AIO, "300344 0004 0023 0021 0021 0021" + "0000" * 12 + "0002 00aa 00aa" + "0000" * 14
             + "2574", "cells",
             {"cell_count": 4, "cells": [3.5, 3.3, 3.3, 3.3] + [0.0] * 12, "probe_count": 2,
              "cell_temperatures": [17.0, 17.0] + [0.0] * 14}, request=CELLS30),
    # AIO, pack block 5042 x 7: -0.86 A (the reference says not charging), 13.6 V, 97.200 Ah
    # remaining of 100.000 Ah (mAh on the wire), 15 cycles (a value aiobmsble's authors added).
    Captured(AIO, "30030e ffaa 0088 00017bb0 000186a0 000f e01e", "pack",
             {"current": -0.86, "voltage": 13.6, "remaining": 97.2, "capacity": 100.0,
              "cycles": 15}, request=PACK30),
    # AIO, status block 5100 x 8: no alarm, both FETs reported off (aiobmsble's expectation).
    Captured(AIO, "300310" + "00" * 16 + "96a1", "status",
             {"cell_voltage_alarms": 0, "cell_temperature_alarms": 0, "other_alarms": 0,
              "status1": 0, "status2": 0}, request=STATUS30),
    # AIO test_problem_response, the same block all ones: every alarm and both FETs on.
    Captured(AIO, "300310" + "ff" * 16 + "d6d1", "status",
             {"other_alarms": 0xFFFFFFFF, "status1": 0xFFFF, "status2": 0xFFFF},
             request=STATUS30),
    # AIO device info, window 5104 x 28 (not a polled block: decoded by its request): status 1
    # 0x0006 (both FETs on), serial "20210526", name "RBT100LFP12-BT", software "0100".
    Captured(AIO, "300338 00000000 0006 0000 0000 00c8 3230323130353236 0000000000000000"
             "2020202020202020 5242543130304c465031322d42542020 30313030 552f", "registers",
             {"other_alarms": 0, "status1": 6, "status2": 0, "serial": "20210526",
              "name": "RBT100LFP12-BT", "software_version": "0100"},
             request="30 03 13 f0 00 1c 44 95"),
    # AIO, the name alone (5122 x 8).
    Captured(AIO, "300310 5242543130304c465031322d42542020 58bb", "registers",
             {"name": "RBT100LFP12-BT"}, request="30 03 14 02 00 08 e4 1d"),
    # GRM, BUILT from the register values the scan printed (no raw bytes were published), at
    # 247: limits 5049 x 4: 14.8 V, 10.0 V, 50.00 A, 0xD8F0 = -100.00 A.
    Captured(GRM + ", frame built", "f70308 0094 0064 1388 d8f0 f2b7", "limits",
             {"charge_voltage_limit": 14.8, "discharge_voltage_limit": 10.0,
              "charge_current_limit": 50.0, "discharge_current_limit": -100.0},
             request="f7 03 13 b9 00 04 85 fe"),
    # GRM, built likewise: pack block, idle: 0 A, 13.3 V, 69.279/100.000 Ah, 0 cycles.
    Captured(GRM + ", frame built", "f7030e 0000 0085 00010e9f 000186a0 0000 0736", "pack",
             {"current": 0.0, "voltage": 13.3, "remaining": 69.279, "capacity": 100.0,
              "cycles": 0}, request="f7 03 13 b2 00 07 b4 3d"),
]  # fmt: skip

#: aiobmsble's malformed replies to the pack read (test_invalid_response), by its own names,
#: and the error each gives alone (None: it waits for bytes that never come, a link timeout)
MALFORMED = {
    "wrong-crc": ("30 03 0c 00 00 00 88 00 01 7b b0 00 01 86 a0 0d eb", "checksum"),
    "wrong-sof": ("31 03 0c 00 00 00 88 00 01 7b b0 00 01 86 a0 0c eb", "checksum"),  # CRC of 30
    "wrong-length": ("30 03 0d 00 00 00 88 00 01 7b b0 00 01 86 a0 0c eb", None),
}


def parse(plugin: Plugin, cap: Captured) -> dict:
    """The fields of a captured reply."""
    return plugin.parse(cap.raw, cap.request_bytes)[1]


def aio_parts(plugin: Plugin) -> dict[str, dict]:
    """The cells, pack and status parts aiobmsble's battery gives (no alarm)."""
    return {cap.part: parse(plugin, cap) for cap in CAPTURED[:3]}


class TestRenogy(MultidropContract):
    plugin_name = "renogy"
    captured = CAPTURED
    requests = {"cells": "f7 03 13 88 00 22 55 eb", "pack": "f7 03 13 b2 00 07 b4 3d",
                "status": "f7 03 13 ec 00 08 95 eb", "limits": "f7 03 13 b9 00 04 85 fe",
                "info": "f7 03 13 f6 00 16 34 24"}  # fmt: skip
    #: cells and pack voltage come in 0.1 V steps
    roundtrip_tolerance = {"cells": 0.05, "voltage": 0.05}

    def test_state_from_aiobmsble_captures(self, plugin: Plugin) -> None:
        state = plugin.state(aio_parts(plugin))
        assert state["voltage"] == pytest.approx(13.6) and state["current"] == -0.86
        assert state["soc"] == pytest.approx(97.2)  # remaining / capacity, as every driver
        assert state["cells"] == pytest.approx([3.5, 3.3, 3.3, 3.3])
        assert state["temperatures"] == [17.0, 17.0]
        assert not state["charge_fet"] and not state["discharge_fet"]
        assert not any(state["alarms"].values())
        assert (state["bms_ccl"], state["bms_dcl"], state["bms_cvl"], state["hardware"]) == (
            None, None, None, "")  # fmt: skip

    def test_limits_and_info_complete_the_state(self, plugin: Plugin) -> None:
        parts = aio_parts(plugin)
        parts["limits"] = parse(plugin, CAPTURED[6])
        parts["info"] = parse(plugin, CAPTURED[4])  # the same registers, another window
        state = plugin.state(parts)
        assert (state["bms_ccl"], state["bms_dcl"], state["bms_cvl"]) == (50.0, 100.0, 14.8)
        assert state["hardware"] == "Renogy RBT100LFP12-BT SN 20210526 v0100"
        assert state["serial"] == "20210526"

    def test_every_status_bit_set(self, plugin: Plugin) -> None:
        parts = aio_parts(plugin)
        parts["status"] = parse(plugin, CAPTURED[3])
        state = plugin.state(parts)
        assert state["charge_fet"] and state["discharge_fet"]
        assert set(state["alarms"].values()) == {ALARM}

    @pytest.mark.parametrize(("register", "bit", "name", "level"), [
        ("status1", 0, "short_circuit", ALARM), ("status1", 8, "high_cell_voltage", ALARM),
        ("status1", 15, "low_voltage", ALARM), ("status2", 1, "high_cell_voltage", WARNING),
        ("status2", 4, "low_charge_temperature", WARNING),
        ("other_alarms", 31, "high_internal_temperature", ALARM),
    ], ids=lambda v: v if isinstance(v, str) and not v.startswith(("high", "low", "short"))
        else None)  # fmt: skip
    def test_alarm_and_warning_bits(self, plugin: Plugin, register, bit, name, level) -> None:
        parts = aio_parts(plugin)
        parts["status"][register] = 1 << bit
        alarms = plugin.state(parts)["alarms"]
        assert alarms[name] == level and sum(alarms.values()) == level

    def test_fet_bits(self, plugin: Plugin) -> None:
        parts = aio_parts(plugin)
        for status1, charge, discharge in ((2, True, False), (4, False, True), (6, True, True)):
            parts["status"]["status1"] = status1
            state = plugin.state(parts)
            assert (state["charge_fet"], state["discharge_fet"]) == (charge, discharge)

    @pytest.mark.parametrize("case", list(MALFORMED))
    def test_malformed_replies_are_counted(self, plugin: Plugin, case: str) -> None:
        hex_, kind = MALFORMED[case]
        bad = bytes.fromhex(hex_)
        frames, errors, _ = extract_all(plugin, bad)
        assert not frames and [e.kind for e in errors] == ([kind] if kind else [])
        good = CAPTURED[1].raw  # a good reply after it is found; the bad bytes are noise
        frames, errors, stats = extract_all(plugin, bad + good)
        assert frames == [good] and not errors and stats.noise_bytes == len(bad)

    def test_exception_reply_is_counted(self, plugin: Plugin) -> None:
        sim = simulators.create(self.plugin_name, {0xF7: BatteryModel()})
        reply = sim.feed(read_request(0xF7, 5060, 2))  # a hole in the map
        frames, errors, _ = extract_all(plugin, b"".join(reply))
        assert not frames and [e.kind for e in errors] == ["exception"]

    @pytest.mark.parametrize(("request_", "kind"), [
        ("30 03 13 b2 00 06 65 4a", "malformed"),  # 6 registers asked, 7 came
        ("31 03 13 b2 00 07 a5 5b", "address"),  # another battery asked
        (None, "unexpected"), ("30 04 13 b2 00 07 11 4a", "unexpected"),  # no FC03 read
    ], ids=["byte-count", "other-address", "no-request", "fc04-request"])  # fmt: skip
    def test_reply_must_match_its_request(self, plugin: Plugin, request_, kind) -> None:
        request = bytes.fromhex(request_) if request_ else None
        with pytest.raises(FrameError) as err:
            plugin.parse(CAPTURED[1].raw, request)
        assert err.value.kind == kind

    @pytest.mark.parametrize(
        ("field", "value"),
        [("cell_count", 0), ("cell_count", 17), ("probe_count", 17), ("capacity", 0.0)],
    )
    def test_impossible_counts_are_refused(self, plugin: Plugin, field, value) -> None:
        parts = aio_parts(plugin)
        part = "pack" if field == "capacity" else "cells"
        parts[part][field] = value
        with pytest.raises(FrameError) as err:
            plugin.state(parts)
        assert err.value.kind == "malformed"

    def test_state_needs_cells_pack_and_status(self, plugin: Plugin) -> None:
        parts = aio_parts(plugin)
        del parts["status"]
        with pytest.raises(FrameError) as err:
            plugin.state(parts)
        assert err.value.kind == "truncated" and "status1" in str(err.value)

    def test_any_window_decodes_by_its_request(self, plugin: Plugin) -> None:
        sim = simulators.create(self.plugin_name, {0x31: BatteryModel(current=-4.0, soc=50.0)})
        request = read_request(0x31, 5042, 1)  # current only, from a polled block's start
        part, fields = plugin.parse(sim.feed(request)[0], request, 0x31)
        assert part == "registers" and fields == pytest.approx({"current": -4.0})

    def test_simulator_refuses_what_a_battery_does_not_have(self) -> None:
        sim = simulators.create(self.plugin_name, {0xF7: BatteryModel()})
        for request, reply in ((read_request(0xF7, 5050, 4), "f7 83 02 20 c3"),
                               (read_request(0xF7, 5200, 1), "f7 83 02 20 c3"),
                               (read_request(0x30, 5000, 34), None)):  # fmt: skip
            assert sim.feed(request) == ([bytes.fromhex(reply)] if reply else [])

    def test_poll_reads_limits_and_identity(self, plugin: Plugin) -> None:
        model = BatteryModel(cells=4, capacity=100.0, temperatures=[5.0, -3.5], cycles=42)
        state = poll(plugin, simulators.create(self.plugin_name, {0x3F: model}), 0x3F)
        assert len(state["cells"]) == 4 and state["temperatures"] == [5.0, -3.5]
        assert (state["bms_ccl"], state["bms_dcl"], state["bms_cvl"]) == pytest.approx(
            (50.0, 100.0, 14.2)
        )
        assert state["hardware"] == "Renogy RBT100LFP12S SN SIM00042 v0119"

    def test_a_reply_arriving_in_pieces_waits(self, plugin: Plugin) -> None:
        for cap in self.captured:
            for k in range(1, len(cap.raw)):
                assert plugin.extract(bytearray(cap.raw[:k]), LinkStats()) is None, (cap.hex, k)

    def test_decode_on_the_command_line(self) -> None:
        args = [f"{c.request}={c.hex}".replace(" ", "") for c in CAPTURED[:3]]
        out = bmsbank("decode", "renogy", *args, "--address", "48")
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout)
        assert state["pack"] == "decode:48" and state["current"] == -0.86
        assert state["soc"] == pytest.approx(97.2) and len(state["cells"]) == 4
        wrong = bmsbank("decode", "renogy", *args, "--address", "49")
        assert wrong.returncode != 0 and "(address)" in wrong.stderr

    def test_registered_addresses(self) -> None:
        info = plugins.info(self.plugin_name)
        assert info.default_address == 0xF7 and {0x30, 0x3F, 0xF7} <= set(info.addresses)
        assert (info.baudrate, info.parity, info.controls) == (9600, "N", frozenset())


def test_poller_reads_a_renogy_bus_through_a_pty(tmp_path):
    """Three batteries (two hub addresses and the factory one) on one pty, 9600 baud modelled."""
    models = {a: BatteryModel(cells=4, capacity=100.0, soc=40.0 + i * 20, current=5.0 - 5 * i,
                              temperatures=[15.0 + i])
              for i, a in enumerate((0x30, 0x31, 0xF7))}  # fmt: skip
    sim = simulators.create("renogy", models)
    server = PtyServer(sim, link=str(tmp_path / "tty-renogy"), model_wire=True).start()
    try:
        poller, sent = run_poller(port_config(server.device, "renogy", list(models)))
        poller.close()
    finally:
        server.stop()
    assert [s["pack"] for s in sent] == ["p:48", "p:49", "p:247"]
    for state in map(validate_state, sent):
        model = models[state["address"]]
        assert state["current"] == pytest.approx(model.current, abs=0.01)
        assert state["soc"] == pytest.approx(model.soc, abs=0.01)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.05)
        assert state["temperatures"] == pytest.approx(model.temperatures, abs=0.1)
        assert state["hardware"].startswith("Renogy RBT100LFP12S SN SIM")
        assert state["link"]["ok"] == 1 and state["link"]["timeout"] == 0
