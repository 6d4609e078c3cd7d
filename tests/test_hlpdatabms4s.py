"""HLPdata BMS4S plugin and simulator: text lines built from the public driver's field list,
lines refused by their structure, the echo, the options, the command line and a pty."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bmsbank.config import parse
from bmsbank.errors import FrameError
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import Plugin
from bmsbank.services.poller.plugins.hlpdatabms4s.family import BEEPS
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from tests.plugin_contract import Captured, PluginContract, extract_all, poll

BUILT = (
    "built from mr-manuel/venus-os_dbus-serialbattery dbus-serialbattery/bms/"
    "hlpdatabms4s.py (read_status_data's field list; read_test_data): no capture "
    "is public"
)
M1, PV = "6d310a", "70760a"  # the requests "m1\n" and "pv\n"


def hexline(text: str) -> str:
    """``text`` as the hex of its bytes (the captures are written as text for reading)."""
    return text.encode("ascii").hex()


CAPTURED = [
    # the echo on a line of its own, then the values: 3.321/3.322/3.320/3.319 V, -1.25 A
    # (discharging), SoC 85 %, FETs on (1), beep 0, probes b1 21 and b2 22 °C
    Captured(BUILT, hexline("m1\r\n3.321,3.322,3.320,3.319,-1.250,85,1,1,13.28,85,0,0,1,"
                            "b1 21,b2 22\r\n"), "status",
             {"cells": [3.321, 3.322, 3.32, 3.319], "current": -1.25, "soc": 85,
              "charge_flag": 1, "load_flag": 1, "beep": 0, "temperatures": [21.0, 22.0]},
             request=M1),
    # the manual's high-voltage event current (+77.130 A, charging), beep 5 (high voltage),
    # charge flag 0; below-zero probes and a board probe i1 that is not a battery's
    Captured(BUILT, hexline("3.563,3.564,3.563,3.555,77.130,98,0,1,14.25,98,0,5,2,"
                            "b1 -3,b2 -4,i1 12\r\n"), "status",
             {"cells": [3.563, 3.564, 3.563, 3.555], "current": 77.13, "soc": 98,
              "charge_flag": 0, "load_flag": 1, "beep": 5, "temperatures": [-3.0, -4.0]},
             request=M1),
    # the echo on the values' line, no probes (13 fields: the fewest SB accepts), beep 2
    Captured(BUILT, hexline("m1 3.283,3.283,3.283,3.284,0.000,41,1,1,13.13,41,0,2,1\r\n"),
             "status", {"cells": [3.283, 3.283, 3.283, 3.284], "current": 0.0, "soc": 41,
                        "beep": 2, "temperatures": []}, request=M1),
    # the version: SB keeps the text from "BMS4S" on
    Captured(BUILT, hexline("pv\r\nHLPdata BMS4S 4.1.89\r\n"), "version",
             {"hardware": "BMS4S 4.1.89"}, request=PV),
]  # fmt: skip
GOOD = "3.321,3.322,3.320,3.319,-1.250,85,1,1,13.28,85,0,0,1,b1 21,b2 22"


def status(plugin: Plugin, text: str) -> dict[str, Any]:
    frames, errors, _ = extract_all(plugin, text.encode("ascii") + b"\r\n")
    assert len(frames) == 1 and not errors, errors
    return plugin.parse(frames[0], b"m1\n")[1]


class TestHlpdataBms4s(PluginContract):
    plugin_name = "hlpdatabms4s"
    captured = CAPTURED
    requests = {"version": "70 76 0A", "status": "6D 31 0A"}
    #: whole °C probes, 1 mV, 1 mA, whole % SoC (remaining = capacity option x SoC)
    roundtrip_tolerance = {"temperatures": 0.5, "current": 0.001, "soc": 1.0, "remaining": 1.0}

    def make_models(self) -> dict[int, BatteryModel]:
        """A 4S pack (the only kind) with a high-voltage alarm."""
        return {1: BatteryModel(cells=4, capacity=100.0, soc=63.5, current=-12.3,
                                imbalance=0.031, temperatures=[21.0, 23.0],
                                faults={"high_voltage"})}  # fmt: skip

    # No check value: a corrupt line is refused by its structure, or by the framer when a byte
    # is not text. The two contract checks that assume a check value, restated so:
    def test_bad_checksum_is_rejected_and_counted(self, plugin: Plugin) -> None:
        raw = CAPTURED[0].raw.replace(b"3.322", b"3.3:2")  # a digit corrupted into text
        frames, errors, _ = extract_all(plugin, raw)
        assert len(frames) == 1 and not errors
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], b"m1\n")
        assert err.value.kind == "malformed"
        frames, errors, _ = extract_all(plugin, raw.replace(b"3.3:2", b"3.3\xb22"))  # not text
        assert [e.kind for e in errors] == ["malformed"]
        for frame in frames:  # the line's tail: refused by its structure
            with pytest.raises(FrameError):
                plugin.parse(frame, b"m1\n")

    def test_noise_and_partial_frames_between_good_ones(self, plugin: Plugin) -> None:
        raw = CAPTURED[1].raw
        frames, errors, stats = extract_all(plugin, b"\x13\xfe" + raw + raw[:20] + b"\x00" + raw)
        assert frames[0] == raw and frames[-1] == raw and stats.noise_bytes >= 3
        assert len(frames) == 2  # the cut line ended at a byte that is not text: counted
        assert [e.kind for e in errors] == ["malformed"]
        text_noise = b"\x13" + raw + raw[:20] + b"BBB" + raw  # text noise joins the next line
        frames, _, _ = extract_all(plugin, text_noise)
        assert frames[0] == raw and len(frames) == 2
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[1], b"m1\n")
        assert err.value.kind == "malformed"

    def test_every_reported_alarm_can_be_raised(self, plugin: Plugin) -> None:
        levels = dict(BEEPS.values())
        for name, level in levels.items():
            model = BatteryModel(cells=4, faults={name})
            state = poll(plugin, simulators.create(self.plugin_name, {1: model}), 1)
            assert state["alarms"][name] == level
            assert sum(state["alarms"].values()) == level  # one beep code at a time
        calm = poll(plugin, simulators.create(self.plugin_name, {1: BatteryModel(cells=4)}), 1)
        assert set(calm["alarms"]) == set(levels) and not any(calm["alarms"].values())

    @pytest.mark.parametrize("text", [
        GOOD.rsplit(",", 3)[0].rsplit(",", 1)[0],  # 12 fields
        GOOD.replace("3.322", "3322"),  # no decimal point: not a cell voltage
        GOOD.replace("3.322", "5.322"),  # above 5 V
        GOOD.replace("3.322", "0.000"),  # no cell reads 0 V
        GOOD.replace("-1.250", "-1.2.50"),
        GOOD.replace("-1.250", "-2500.5"),  # beyond 2000 A
        GOOD.replace(",85,1,1,", ",101,1,1,"),
        GOOD.replace(",85,1,1,", ",-5,1,1,"),
        GOOD.replace(",85,1,1,", ",85,2,1,"),  # a FET flag is 0 or 1
        GOOD.replace(",0,0,1,", ",0,x,1,"),  # beep not a number
        GOOD.replace("b1 21", "b1 2x1"),
        GOOD.replace("b1 21", "b1"),
        GOOD.replace("b1 21", "b1 210"),  # beyond 150 °C
        GOOD.replace("13.28", "13,28"),  # a field split: the probes shift
        "Unknown command",
    ], ids=["12-fields", "cell-no-point", "cell-5.3V", "cell-0V", "current-two-points",
            "current-2500A", "soc-101", "soc-negative", "fet-flag-2", "beep-x",
            "probe-not-number", "probe-no-value", "probe-210C", "split-field",
            "other-text"])  # fmt: skip
    def test_malformed_lines_are_refused(self, plugin: Plugin, text: str) -> None:
        with pytest.raises(FrameError) as err:
            status(plugin, text)
        assert err.value.kind == "malformed"

    def test_a_line_with_a_byte_that_is_not_text_is_counted(self, plugin: Plugin) -> None:
        raw = GOOD.encode().replace(b"85,1", b"8\x005,1") + b"\r\n"
        frames, errors, _ = extract_all(plugin, raw + CAPTURED[1].raw)
        assert [e.kind for e in errors] == ["malformed"] and frames[-1] == CAPTURED[1].raw
        assert len(frames) == 2  # the tail after the zero byte, refused by its structure
        with pytest.raises(FrameError):
            plugin.parse(frames[0], b"m1\n")

    def test_state_of_a_line_and_the_options(self, plugin: Plugin) -> None:
        parts = {"status": status(plugin, GOOD), "version": {"hardware": "BMS4S 4.1.89"}}
        state = plugin.state(parts)
        assert state["voltage"] == pytest.approx(13.282) and state["current"] == -1.25
        assert (state["capacity"], state["remaining"], state["cycles"]) == (100.0, 85.0, 0)
        assert state["charge_fet"] and state["discharge_fet"] and state["serial"] == ""
        assert state["hardware"] == "BMS4S 4.1.89" and state["temperatures"] == [21.0, 22.0]
        other = plugins.load(self.plugin_name, {"capacity": 280.0, "fet_flags_off": True})
        flipped = other.state(parts)
        assert not flipped["charge_fet"] and not flipped["discharge_fet"]
        assert flipped["remaining"] == pytest.approx(238.0)
        for bad in ({"capacity": 0.0}, {"fet_flags_off": "yes"}):
            with pytest.raises(ValueError):
                plugins.load(self.plugin_name, bad)

    def test_a_version_line_to_a_status_request_is_unexpected(self, plugin: Plugin) -> None:
        frames, _, _ = extract_all(plugin, CAPTURED[3].raw)
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], b"m1\n")
        assert err.value.kind == "unexpected"
        assert plugin.parse(frames[0])[0] == "version"  # without a request: by its text

    def test_simulator_answers_only_its_commands(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel(cells=4)})
        for foreign in (b"ps\n", b"m2\n", b"\n", bytes.fromhex("DDA50300FFFD77"),
                        bytes.fromhex("0A1704")):  # fmt: skip
            assert sim.feed(foreign) == [], foreign
        assert sim.feed(b"~20014A42E00201FD28\r") == []  # a Pylon request: no newline
        [rep] = sim.feed(b"pv\n")  # after it: the CR ended the stray request
        assert rep == b"pv\r\nHLPdata BMS4S 4.1.89\r\n"
        with pytest.raises(ValueError, match="exactly one BMS"):
            simulators.create(self.plugin_name, {1: BatteryModel(cells=4), 2: BatteryModel()})
        with pytest.raises(ValueError, match="4 cells"):
            simulators.create(self.plugin_name, {1: BatteryModel(cells=8)})

    def test_the_first_request_identifies_the_bms(self, plugin: Plugin) -> None:
        first = plugin.queries(1)[0]
        assert (first.part, first.request, first.every) == ("version", b"pv\n", 0)

    def test_decode_on_the_command_line(self) -> None:
        cli = [sys.executable, "-m", "bmsbank.cli", "decode", "hlpdatabms4s"]
        out = subprocess.run([*cli, CAPTURED[3].hex, CAPTURED[0].hex], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout)
        assert state["bms"] == "hlpdatabms4s" and state["current"] == pytest.approx(-1.25)
        assert state["cells"] == pytest.approx([3.321, 3.322, 3.32, 3.319])
        assert state["hardware"] == "BMS4S 4.1.89"
        bad = subprocess.run([*cli, hexline(GOOD.replace("85,1", "185,1") + "\r\n")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert bad.returncode != 0 and "implausible" in (bad.stderr + bad.stdout)

    def test_poller_reads_the_pack_through_a_pty(self, tmp_path) -> None:
        from bmsbank.services.poller.simulators.ptyserver import PtyServer

        model = BatteryModel(cells=4, soc=37.0, current=9.5, temperatures=[17.0, 18.0])
        server = PtyServer(simulators.create(self.plugin_name, {1: model}),
                           link=str(tmp_path / "tty-hlp"), model_wire=True).start()  # fmt: skip
        try:
            table = {"name": "p", "device": server.device, "bms": "hlpdatabms4s",
                     "addresses": [1], "capacity": 200.0}  # fmt: skip
            port = parse({"ports": [table]}, "test").ports[0]
            sent: list[dict] = []
            poller = Poller(port, sent.append)
            poller.poll_once()
            poller.close()
        finally:
            server.stop()
        [state] = sent
        assert state["pack"] == "p:1" and state["bms"] == "hlpdatabms4s"
        assert state["current"] == pytest.approx(9.5, abs=0.001)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["temperatures"] == [17.0, 18.0] and state["capacity"] == 200.0
        assert state["hardware"] == "BMS4S 4.1.89"
        assert state["link"]["ok"] == 1 and state["link"]["malformed"] == 0
