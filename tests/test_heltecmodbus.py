"""Heltec Modbus plugin and simulator: FC03 replies decoded by their requests, built frames.

No raw Heltec Modbus frame is public (searched: dbus-serialbattery's driver, its PR #658 and
issue #245, the BMS Monitor app's YY BMS decoder). Every frame here is BUILT from the register
map the public drivers read (see the family docstring): register values chosen, byte-swapped as
the BMS stores them, the CRC computed; each comment says what the frame encodes. The requests
"YY" are byte for byte the two block reads of the BMS Monitor app's ``YYBmsDecoder``
(``COMMAND_BMS_INFO_DATA`` 01 03 00 01 00 4f 55 fe, ``COMMAND_CELL_DATA`` 01 03 00 50 00 50 45
e7); the windows "DSB" are the reads dbus-serialbattery's bms/heltecmodbus.py sends.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bmsbank.config import parse
from bmsbank.errors import FrameError
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, modbus_frame
from bmsbank.services.poller.plugins.heltecmodbus.family import read_request
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.plugin_contract import Captured, MultidropContract, extract_all, poll

BUILT = "built from the register map (DSB/YY, see family.py); request as YY sends it"
DSB = "built; the read mr-manuel/venus-os_dbus-serialbattery bms/heltecmodbus.py sends"
INFO1, CELLS1, SETTINGS1 = "01 03 00 01 00 4f 55 fe", "01 03 00 50 00 50 45 e7", \
    "01 03 00 bf 00 04 75 ed"  # fmt: skip
CELLS_16 = [3.318, 3.32, 3.321, 3.319, 3.322, 3.325, 3.318, 3.32, 3.321, 3.324, 3.319, 3.32,
            3.322, 3.323, 3.318, 3.319]  # fmt: skip

CAPTURED = [
    # 0: information block at id 1 (registers 1-79): serial words 1a2b 3c4d 5e6f 7081, type
    # name "BMS-16S-200A" (7 x 13), hardware 3 (38, first byte), device name "YY-BMS" (41 x 6),
    # 16 cells LiFePO4 (75: 10 01), 53128 mV (76: 88 cf 00 00), current -2550 x 10 mA (78: 0a
    # f6 ff ff) = charging 25.50 A.
    Captured(BUILT, "01039e 0000 1a2b 3c4d 5e6f 7081 0000 424d 532d 3136 532d 3230 3041" + "00" * 50
             + "0300 0000 0000 5959 2d42 4d53" + "00" * 62 + "1001 88cf 0000 0af6 ffff 9260",
             "info",
             {"serial_words": [0x1A2B, 0x3C4D, 0x5E6F, 0x7081], "serial": "1a2b-3c4d-5e6f-7081",
              "type_name": "BMS-16S-200A", "device_name": "YY-BMS", "hardware_version": 3,
              "cell_count": 16, "cell_type": 1, "voltage": 53.128, "current": 25.5},
             request=INFO1),
    # 1: cell block at id 1 (registers 80-159): 16 cells 3.318-3.325 V (81.., little-endian),
    # 112: balancer 29 °C / MOS 31 °C (45 47), 113: probe 2 25 °C / probe 1 24 °C (41 40),
    # 118 rated 280.0 Ah, 119 275.0, 120: SoC 76 % SoH 98 % (4c 62), 126 learned 278.0, 127:
    # cycles 37 (second byte), 139: cells 3 and 12 balancing, run state 0, no warnings.
    Captured(BUILT, "0103a0 0000 f60cf80cf90cf70cfa0cfd0cf60cf80cf90cfc0cf70cf80cfa0cfb0cf60cf70c"
             + "00" * 30 + "4547 4140" + "00" * 8 + "f00a be0a 4c62" + "00" * 10
             + "dc0a 0125" + "00" * 22 + "0408" + "00" * 40 + "1cf1", "cells",
             {"cells": CELLS_16 + [0.0] * 8, "probe_temperatures": 0x4140,
              "board_temperatures": 0x4547, "capacity": 280.0, "actual_capacity": 275.0,
              "soc": 76.0, "soh": 98.0, "learned_capacity": 278.0, "cycles": 37,
              "balance_bits": 0x804, "run_state": 0, "warnings": 0}, request=CELLS1),
    # 2: current settings 191-194: charge 100.00 A (10 27), discharge 150.00 A (98 3a).
    Captured(BUILT, "010308 1027 0000 0000 983a 280a", "settings",
             {"charge_current_setting": 100.0, "discharge_current_setting": 150.0},
             request=SETTINGS1),
    # 3: information block at id 2: 8 cells, 26410 mV, current +4230 = discharging 42.30 A.
    Captured(BUILT, "02039e 0000 0000 0001 0002 0003 0000 424d 532d 3136 532d 3230 3041" + "00" * 50
             + "0300 0000 0000 5959 2d42 4d53" + "00" * 62 + "0801 2a67 0000 8610 0000 9bb9",
             "info",
             {"serial": "0000-0001-0002-0003", "cell_count": 8, "voltage": 26.41,
              "current": -42.3}, request="02 03 00 01 00 4f 55 cd"),
    # 4: cell block at id 2: 8 cells 3.300-3.303 V, balancer 4 °C / MOS 2 °C, probes -3/-5 °C
    # (25 23), rated 100.0 Ah, SoC 15 % SoH 100 %, run state bit 28 (charge protection),
    # warnings bit 6 (discharge overcurrent warning) and bit 9 (charge over-temperature).
    Captured(BUILT, "0203a0 0000 e50ce60ce40ce70ce50ce60ce40ce50c" + "00" * 46 + "2c2a 2523"
             + "00" * 8 + "e803 b603 0f64" + "00" * 10 + "d403 0100" + "00" * 50
             + "0010 0000 0000 4002 0000 0000 0000 a12f", "cells",
             {"cells": [3.301, 3.302, 3.3, 3.303, 3.301, 3.302, 3.3, 3.301] + [0.0] * 16,
              "probe_temperatures": 0x2523, "soc": 15.0, "soh": 100.0, "cycles": 0,
              "run_state": 1 << 28, "warnings": 0x240}, request="02 03 00 50 00 50 45 d4"),
    # 5-10: DSB's own windows at id 1, as the generic "registers" part: voltage long (76 x 2),
    # current long (78 x 2), SoC/SoH (120), probes (113), cells (81 x cell count: a 24S pack,
    # cells 17-24 3.401-3.408 V; a window shorter than the 24 cell slots decodes no cells),
    # type name (7 x 13)
    Captured(DSB, "010304 88cf0000 e1ac", "registers", {"voltage": 53.128},
             request="01 03 00 4c 00 02 05 dc"),
    Captured(DSB, "010304 0af6ffff 1869", "registers", {"current": 25.5},
             request="01 03 00 4e 00 02 a4 1c"),
    Captured(DSB, "010302 4c62 0d6d", "registers", {"soc": 76.0, "soh": 98.0},
             request="01 03 00 78 00 01 04 13"),
    Captured(DSB, "010302 4140 89e4", "registers", {"probe_temperatures": 0x4140},
             request="01 03 00 71 00 01 d4 11"),
    Captured(DSB, "010330 f60cf80cf90cf70cfa0cfd0cf60cf80cf90cfc0cf70cf80cfa0cfb0cf60cf70c"
             "490d4a0d4b0d4c0d4d0d4e0d4f0d500d a412", "registers",
             {"cells": CELLS_16 + [3.401, 3.402, 3.403, 3.404, 3.405, 3.406, 3.407, 3.408]},
             request="01 03 00 51 00 18 14 11"),
    Captured(DSB, "01031a 424d532d3136532d32303041" + "00" * 14 + "23ba",
             "registers", {"type_name": "BMS-16S-200A"}, request="01 03 00 07 00 0d 35 ce"),
    # 11: idle at id 1 (76 x 4): 52300 mV, 0 A.
    Captured(BUILT, "010308 4ccc0000 00000000 9dbe", "registers",
             {"voltage": 52.3, "current": 0.0}, request="01 03 00 4c 00 04 85 de"),
]  # fmt: skip
CYCLE = CAPTURED[:3]  # one whole poll cycle of pack 1


def parts_of(plugin: Plugin, caps: list[Captured]) -> dict[str, dict]:
    """The parts of built replies (of different parts), as a poll cycle collects them."""
    return {cap.part: plugin.parse(cap.raw, cap.request_bytes)[1] for cap in caps}


def built(address: int, start: int, data: bytes) -> tuple[bytes, bytes]:
    """A read request and its reply carrying ``data`` (registers from ``start``)."""
    return read_request(address, start, len(data) // 2), modbus_frame(
        bytes((address, 3, len(data))) + data)  # fmt: skip


class TestHeltecModbus(MultidropContract):
    plugin_name = "heltecmodbus"
    captured = CAPTURED
    requests = {"info": INFO1, "cells": CELLS1, "settings": SETTINGS1}
    # whole % SoC (remaining = capacity x SoC), whole °C temperatures
    roundtrip_tolerance = {"remaining": 2.0, "temperatures": 0.5}

    def test_state_of_one_poll_cycle(self, plugin: Plugin) -> None:
        state = plugin.state(parts_of(plugin, CYCLE))
        assert state["voltage"] == 53.128 and state["current"] == 25.5  # wire -25.50: charging
        assert (state["soc"], state["soh"], state["cycles"]) == (76.0, 98.0, 37)
        assert (state["capacity"], state["remaining"]) == (280.0, 212.8)
        assert state["cells"] == pytest.approx(CELLS_16)
        assert state["balancing"] == [0, 0, 1] + [0] * 8 + [1] + [0] * 4
        assert state["temperatures"] == [24.0, 25.0] and state["mosfet_temperature"] == 31.0
        assert state["charge_fet"] and state["discharge_fet"] and not any(state["alarms"].values())
        assert (state["bms_ccl"], state["bms_dcl"]) == (100.0, 150.0)
        assert state["hardware"] == "Heltec BMS-16S-200A (YY-BMS) hw 3"
        assert state["serial"] == "1a2b-3c4d-5e6f-7081"

    def test_state_without_the_settings(self, plugin: Plugin) -> None:
        state = plugin.state(parts_of(plugin, CYCLE[:2]))
        assert (state["bms_ccl"], state["bms_dcl"]) == (None, None)

    def test_an_8s_pack_discharging_below_zero_with_charge_protection(self, plugin) -> None:
        state = plugin.state(parts_of(plugin, CAPTURED[3:5]))
        assert state["current"] == -42.3 and state["voltage"] == 26.41
        assert len(state["cells"]) == 8 and state["cells"][3] == 3.303
        assert state["temperatures"] == [-5.0, -3.0] and state["mosfet_temperature"] == 4.0
        assert not state["charge_fet"] and state["discharge_fet"]
        raised = {name: level for name, level in state["alarms"].items() if level}
        assert raised == {"high_charge_temperature": 2, "high_discharge_current": 1}

    def test_the_incumbents_windows_decode_to_the_same_values(self, plugin: Plugin) -> None:
        merged: dict = {}
        for cap in CAPTURED[5:11]:
            merged.update(plugin.parse(cap.raw, cap.request_bytes, 1)[1])
        cycle = {k: v for p in parts_of(plugin, CYCLE).values() for k, v in p.items()}
        for key in ("voltage", "current", "soc", "soh", "probe_temperatures", "type_name"):
            assert merged[key] == cycle[key], key
        assert merged["cells"][:16] == pytest.approx(CELLS_16)

    def test_idle_current_is_never_negative_zero(self, plugin: Plugin) -> None:
        fields = plugin.parse(CAPTURED[11].raw, CAPTURED[11].request_bytes)[1]
        assert fields["current"] == 0.0 and str(fields["current"]) == "0.0"

    @pytest.mark.parametrize(("bits", "raised"), [
        (1 << 0, {"high_cell_voltage": 2}), (1 << 1, {"low_cell_voltage": 2}),
        (1 << 3, {"high_voltage": 2}), (1 << 15, {"high_voltage": 2}),
        (1 << 4, {"low_voltage": 2}), (1 << 5, {"high_charge_current": 2}),
        (1 << 6, {"high_discharge_current": 1}), (1 << 7, {"high_discharge_current": 2}),
        (1 << 6 | 1 << 7, {"high_discharge_current": 2}), (1 << 8, {"short_circuit": 2}),
        (1 << 9, {"high_charge_temperature": 2}), (1 << 10, {"low_charge_temperature": 2}),
        (1 << 11, {"high_temperature": 2}), (1 << 12, {"low_temperature": 2}),
        (1 << 13, {"high_internal_temperature": 2}), (1 << 14, {"low_soc": 2}),
        (1 << 16, {"internal_failure": 2}), (1 << 31, {"internal_failure": 2}), (1 << 2, {}),
    ], ids=lambda v: f"0x{v:08x}" if isinstance(v, int) else None)  # fmt: skip
    def test_warning_bits(self, plugin: Plugin, bits: int, raised: dict) -> None:
        parts = parts_of(plugin, CYCLE)
        parts["cells"]["warnings"] = bits
        alarms = plugin.state(parts)["alarms"]
        assert {name: level for name, level in alarms.items() if level} == raised

    @pytest.mark.parametrize(("run_state", "fets"), [
        (0, (True, True)), (1 << 28, (False, True)), (1 << 29, (True, False)),
        (3 << 28, (False, False)), (0x3, (True, True)),  # YY's bits 0/1 are not DSB's
    ], ids=["both-on", "charge-protection", "discharge-protection", "both-off",
            "low-bits"])  # fmt: skip
    def test_fet_states_from_the_run_state(self, plugin, run_state, fets) -> None:
        parts = parts_of(plugin, CYCLE)
        parts["cells"]["run_state"] = run_state
        state = plugin.state(parts)
        assert (state["charge_fet"], state["discharge_fet"]) == fets

    def test_voltage_scale_option(self) -> None:
        plugin = plugins.load(self.plugin_name, {"voltage_scale": 0.01})
        assert parts_of(plugin, [CAPTURED[0]])["info"]["voltage"] == 531.28  # YY's reading
        for bad in (0.1, 1, "0.01"):
            with pytest.raises(ValueError):
                plugins.load(self.plugin_name, {"voltage_scale": bad})

    # -- malformed and foreign replies ------------------------------------------------------
    @pytest.mark.parametrize(("request_", "reply", "kind"), [
        (INFO1, CAPTURED[1].hex, "malformed"),  # 160 data bytes to a read of 79 registers
        ("02 03 00 01 00 4f 55 cd", CAPTURED[0].hex, "address"),  # id 1 answers id 2's read
        (None, CAPTURED[0].hex, "unexpected"),  # a register reply without its read
        ("01 04 00 01 00 4f e0 3e", CAPTURED[0].hex, "unexpected"),  # an FC04 read
        ("01 03 00 01 00 4f 55 ff", CAPTURED[0].hex, "unexpected"),  # the read's CRC is wrong
        (*(x.hex() for x in built(1, 120, bytes((101, 100)))), "malformed"),  # SoC 101 %
        (*(x.hex() for x in built(1, 120, bytes((50, 120)))), "malformed"),  # SoH 120 %
        (*(x.hex() for x in built(1, 75, bytes((0, 1)))), "malformed"),  # no cell
        (*(x.hex() for x in built(1, 75, bytes((25, 1)))), "malformed"),  # 25 cells
    ], ids=["byte-count", "other-address", "no-request", "fc04-request", "bad-request-crc",
            "soc-above-100", "soh-above-100", "zero-cells", "25-cells"])  # fmt: skip
    def test_reply_rejected_with_its_kind(self, plugin, request_, reply, kind) -> None:
        frames, errors, _ = extract_all(plugin, bytes.fromhex(reply))
        assert len(frames) == 1 and not errors
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], bytes.fromhex(request_) if request_ else None, 1)
        assert err.value.kind == kind

    @pytest.mark.parametrize(("raw", "kind"), [
        ("01 83 02 c0 f1", "exception"),  # illegal data address, as the simulator answers
        ("01 83 02 c0 f0", "checksum"),
        ("01 03 04 88 cf 00 00 e1 ad", "checksum"),
        ("01 03 ff 88 cf 00 00", "malformed"),  # a byte count beyond a Modbus frame
    ], ids=["exception", "exception-bad-crc", "bad-crc", "impossible-length"])  # fmt: skip
    def test_malformed_frames_are_counted_and_skipped(self, plugin, raw, kind) -> None:
        frames, errors, _ = extract_all(plugin, bytes.fromhex(raw))
        assert not frames and [e.kind for e in errors][:1] == [kind]
        frames, errors, stats = extract_all(plugin, bytes.fromhex(raw) + CAPTURED[2].raw)
        assert frames == [CAPTURED[2].raw]
        if kind == "exception":
            assert [e.kind for e in errors] == ["exception"]
        else:
            assert stats.noise_bytes == len(bytes.fromhex(raw))

    def test_state_needs_both_blocks(self, plugin: Plugin) -> None:
        with pytest.raises(FrameError) as err:
            plugin.state(parts_of(plugin, [CAPTURED[0], CAPTURED[2]]))
        assert err.value.kind == "truncated" and "cells" in str(err.value)

    def test_a_reply_arriving_in_pieces_waits(self, plugin: Plugin) -> None:
        for cap in self.captured:
            for k in range(1, len(cap.raw)):
                assert plugin.extract(bytearray(cap.raw[:k]), LinkStats()) is None, (cap.hex, k)

    # -- simulator --------------------------------------------------------------------------
    def test_simulator_answers_only_its_reads(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel()})
        exception = [bytes.fromhex("01 83 02 c0 f1")]
        assert sim.feed(read_request(1, 150, 60)) == exception  # beyond register 199
        assert sim.feed(read_request(5, 1, 79)) == []  # nobody at 5
        assert sim.feed(bytes.fromhex("01 04 00 01 00 4f e0 3e")) == []  # an FC04 read
        assert sim.feed(bytes.fromhex("01 03 00 01 00 4f 55 ff")) == []  # a bad CRC
        assert len(sim.feed(bytes.fromhex(INFO1))) == 1

    def test_simulated_24s_pack_is_the_most_a_pack_reports(self, plugin: Plugin) -> None:
        model = BatteryModel(cells=24, temperatures=[18.0, 19.0])
        state = poll(plugin, simulators.create(self.plugin_name, {3: model}), 3)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["serial"] == "5948-2024-1128-0003"


def bmsbank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_decodes_a_poll_cycle_given_as_request_reply_pairs():
    pairs = [f"{c.request}={c.hex}".replace(" ", "") for c in CYCLE]
    out = bmsbank("decode", "heltecmodbus", *pairs, "--address", "1")
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["bms"] == "heltecmodbus" and state["pack"] == "decode:1"
    assert state["voltage"] == 53.128 and state["current"] == 25.5 and state["soc"] == 76.0
    assert state["cells"] == pytest.approx(CELLS_16) and state["temperatures"] == [24.0, 25.0]
    assert state["serial"] == "1a2b-3c4d-5e6f-7081"


def test_cli_refuses_a_reply_without_its_request_and_one_from_another_pack():
    out = bmsbank("decode", "heltecmodbus", CAPTURED[0].hex.replace(" ", ""))
    assert out.returncode == 1 and "rejected (unexpected)" in out.stderr
    pair = f"{CAPTURED[0].request}={CAPTURED[0].hex}".replace(" ", "")
    out = bmsbank("decode", "heltecmodbus", pair, "--address", "2")
    assert out.returncode == 1 and "rejected (address)" in out.stderr


def test_poller_reads_two_packs_on_one_pty_bus(tmp_path):
    models = {1: BatteryModel(cells=16, soc=40.0, current=30.5, temperatures=[20.0, 21.0]),
              7: BatteryModel(cells=8, soc=90.0, current=-7.4,
                              temperatures=[-2.0, 3.0])}  # fmt: skip
    server = PtyServer(simulators.create("heltecmodbus", models), link=str(tmp_path / "tty"),
                       model_wire=True).start()  # fmt: skip
    try:
        port = parse({"ports": [{"name": "p", "device": server.device, "bms": "heltecmodbus",
                                 "addresses": [1, 7], "command_gap": 0.01}]},
                     "test").ports[0]  # fmt: skip
        sent: list[dict] = []
        poller = Poller(port, sent.append)
        for _ in range(2):
            poller.poll_once()
        poller.close()
    finally:
        server.stop()
    assert [s["pack"] for s in sent] == ["p:1", "p:7"] * 2
    for s in sent:
        model = models[s["address"]]
        validate_state(s)
        assert s["current"] == pytest.approx(model.current, abs=0.01)  # + = charge
        assert s["voltage"] == pytest.approx(model.voltage, abs=0.001)
        assert s["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert s["temperatures"] == model.temperatures
        assert s["serial"] == f"5948-2024-1128-{s['address']:04x}"
        assert s["link"]["timeout"] == 0 and s["link"]["address"] == 0
    assert poller.links[1].stats.ok == 2
