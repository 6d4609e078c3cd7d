"""Sinowealth BMS plugin and simulator: the CRC rule on published captures, register replies,
malformed replies, the command line and the poller on a pty."""

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
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.plugins.sinowealth.family import ALARM_BITS, cell_count, request
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from tests.plugin_contract import Captured, PluginContract, extract_all, poll

ISSUE1 = "https://github.com/dreadnought/python-daly-bms/issues/1 (dreadnought, 2021-05-22)"
ISSUE9 = "https://github.com/dreadnought/python-daly-bms/issues/9 (hacksics, 2021-08-15)"
#: (request, reply) pairs as the issues print them: BMSTool and python-daly-bms ask ``len`` 2
PUBLISHED = [
    (ISSUE1, "0a0102", "0d03fd"),  # cell 1: 0x0D03 = 3.331 V
    (ISSUE1, "0a0b02", "340d0f"),  # pack: 0x340D = 13.325 V
    (ISSUE9, "0a0102", "0e7dbf"),  # cells 1-5 of a 16S pack: 3.709, 3.709, 3.710, 3.711 V
    (ISSUE9, "0a0202", "0e7d85"),
    (ISSUE9, "0a0402", "0e7ef8"),
    (ISSUE9, "0a0502", "0e7fe9"),
]
BUILT = (
    "built from the protocol (SB bms/sinowealth.py register map, len 4; CRC-8/SMBus "
    "over request and data as the published captures show): no len-4 capture is public"
)

CAPTURED = [
    # The registers of #1's capture asked with len 4 (as dbus-serialbattery asks): cell 1
    # 3.331 V and the pack's 13.325 V, two data bytes of padding, the CRC over all.
    Captured(BUILT, "0D 03 00 00 B6", "cell1", {"cell": 3.331}, request="0A 01 04"),
    Captured(BUILT, "34 0D 00 00 88", "voltage", {"voltage": 13.325}, request="0A 0B 04"),
    # current -3.000 A (s32 mA, 0xFFFFF448 = -3000): discharging
    Captured(BUILT, "FF FF F4 48 07", "current", {"current": -3.0}, request="0A 10 04"),
    # +5.000 A charging
    Captured(BUILT, "00 00 13 88 9B", "current", {"current": 5.0}, request="0A 10 04"),
    Captured(BUILT, "00 29 00 00 40", "soc", {"soc": 41}, request="0A 13 04"),
    # external probe 1: 2975 (0.1 K) = 24.35 °C
    Captured(BUILT, "0B 9F 00 00 53", "probe1", {"temperature": 24.35}, request="0A 0C 04"),
    # pack config 0x41: 4 cells (1 + 3), bit 6: two probes
    Captured(BUILT, "00 41 00 00 70", "config", {"config": 0x41}, request="0A 17 04"),
    # pack status 0x03: both FETs on; battery status 0x0101: OV and OTC
    Captured(BUILT, "00 03 00 00 72", "pack_status", {"pack_status": 3}, request="0A 15 04"),
    Captured(BUILT, "01 01 00 00 C9", "battery_status", {"battery_status": 0x0101},
             request="0A 16 04"),
    # capacity 200.000 Ah, remaining 80.056 Ah (mAh), 7 cycles
    Captured(BUILT, "00 03 0D 40 F8", "capacity", {"capacity": 200.0}, request="0A 11 04"),
    Captured(BUILT, "00 01 38 B8 0B", "remaining", {"remaining": 80.056}, request="0A 12 04"),
    Captured(BUILT, "00 07 00 00 F0", "cycles", {"cycles": 7}, request="0A 14 04"),
]  # fmt: skip


def reply(reg: int, data: bytes) -> bytes:
    """A reply to ``0A reg 04`` with ``data`` (four bytes) and its CRC."""
    return data + bytes((checksum("crc8_smbus", request(reg) + data),))


def decode(plugin: Plugin, raw: bytes, req: bytes) -> dict[str, Any]:
    frames, errors, _ = extract_all(plugin, raw)
    assert len(frames) == 1 and not errors, errors
    return plugin.parse(frames[0], req)[1]


def cycle(plugin: Plugin, model: BatteryModel) -> dict[str, dict[str, Any]]:
    """Every part of one poll cycle through the simulator (REQUEST=REPLY pairs, in order)."""
    sim = simulators.create("sinowealth", {1: model})
    return {q.part: b"".join(sim.feed(q.request)) for q in plugin.queries(1)}  # type: ignore[misc]


class TestSinowealth(PluginContract):
    plugin_name = "sinowealth"
    captured = CAPTURED
    requests = {"config": "0A 17 04", "cell1": "0A 01 04", "voltage": "0A 0B 04",
                "current": "0A 10 04", "soc": "0A 13 04", "probe1": "0A 0C 04"}  # fmt: skip
    #: 0.1 K temperature steps, 1 % SoC
    roundtrip_tolerance = {"temperatures": 0.06}

    def make_models(self) -> dict[int, BatteryModel]:
        """A 10S pack: the most cells the register map has."""
        return {1: BatteryModel(cells=10, capacity=280.0, soc=63.5, current=-12.3,
                                imbalance=0.031, temperatures=[21.5, 23.0],
                                faults={"high_charge_temperature"})}  # fmt: skip

    # A reply has no start byte and its check covers the request: the framer takes five bytes,
    # the family checks them with the request. These two contract checks, restated so:
    def test_bad_checksum_is_rejected_and_counted(self, plugin: Plugin) -> None:
        for cap in self.captured:
            bad = bytearray(cap.raw)
            bad[-1] ^= 0x01
            frames, errors, _ = extract_all(plugin, bytes(bad))
            assert frames == [bytes(bad)] and not errors  # the framer cannot tell
            with pytest.raises(FrameError) as err:
                plugin.parse(frames[0], cap.request_bytes)
            assert err.value.kind == "checksum", cap.hex

    def test_noise_and_partial_frames_between_good_ones(self, plugin: Plugin) -> None:
        cap = self.captured[0]
        frames, _, _ = extract_all(plugin, b"\x13" + cap.raw)  # one byte of noise first
        with pytest.raises(FrameError) as err:  # the shifted reply fails its CRC
            plugin.parse(frames[0], cap.request_bytes)
        assert err.value.kind == "checksum"
        assert plugin.parse(extract_all(plugin, cap.raw)[0][0], cap.request_bytes)[0] == "cell1"

    def test_the_crc_rule_fits_every_published_capture(self) -> None:
        for source, req, rep in PUBLISHED:
            data, check = bytes.fromhex(rep[:-2]), int(rep[-2:], 16)
            assert checksum("crc8_smbus", bytes.fromhex(req) + data) == check, (source, req)
            assert checksum("crc8_smbus", data) != check  # not over the data alone
        for cap in CAPTURED:
            assert checksum("crc8_smbus", cap.request_bytes + cap.raw[:4]) == cap.raw[4]

    @pytest.mark.parametrize(("req", "kind"), [
        (None, "unexpected"), ("0A 01 02", "unexpected"), ("0A 18 04", "unexpected"),
        ("01 03 00", "unexpected"), ("0A 02 04", "checksum"),
    ], ids=["no-request", "len-2", "manufacture-access", "not-a-read",
            "other-register"])  # fmt: skip
    def test_a_reply_is_decoded_with_its_request(self, plugin, req, kind) -> None:
        raw = CAPTURED[0].raw  # cell 1's reply: another register's request fails its CRC
        with pytest.raises(FrameError) as err:
            plugin.parse(raw, bytes.fromhex(req) if req else None)
        assert err.value.kind == kind

    @pytest.mark.parametrize(("reg", "data"), [
        (0x01, "1389 0000"), (0x0B, "EA60 0000"), (0x13, "0065 0000"),
        (0x0C, "0000 0000"), (0x0C, "FFFF 0000"), (0x10, "7FFF FFFF"), (0x11, "FFFF FFFF"),
    ], ids=["cell-5.001V", "pack-60V", "soc-101", "probe-0K", "probe-6280C", "current-2MA",
            "capacity-negative"])  # fmt: skip
    def test_implausible_values_are_malformed(self, plugin, reg, data) -> None:
        raw = reply(reg, bytes.fromhex(data))
        with pytest.raises(FrameError) as err:
            decode(plugin, raw, request(reg))
        assert err.value.kind == "malformed"

    def test_state_of_a_4s_cycle(self, plugin: Plugin) -> None:
        parts: dict[str, dict[str, Any]] = {}
        for cap in CAPTURED:
            parts[cap.part] = decode(plugin, cap.raw, cap.request_bytes)  # type: ignore[arg-type]
        for n, mv in enumerate((3331, 3330, 3332, 3332), 1):
            parts[f"cell{n}"] = {"cell": mv / 1000}
        parts["probe2"] = {"temperature": 26.0}
        state = plugin.state(parts)
        assert state["cells"] == [3.331, 3.33, 3.332, 3.332] and cell_count(0x41) == 4
        assert state["temperatures"] == pytest.approx([24.35, 26.0])
        assert (state["voltage"], state["current"], state["soc"]) == pytest.approx((13.325, 5, 41))
        assert (state["capacity"], state["remaining"]) == pytest.approx((200.0, 80.056))
        assert state["cycles"] == 7
        assert state["charge_fet"] and state["discharge_fet"]
        raised = {k for k, v in state["alarms"].items() if v}
        assert raised == {"high_cell_voltage", "high_charge_temperature"}
        assert set(state["alarms"]) == set(ALARM_BITS.values())
        assert state["serial"] == "" and state["hardware"] == "Sinowealth BMS 4S"
        parts["config"] = {"config": 0x01}  # bit 6 clear: one probe
        assert plugin.state(parts)["temperatures"] == pytest.approx([24.35])

    def test_the_first_request_identifies_the_bms(self, plugin: Plugin) -> None:
        first = plugin.queries(1)[0]
        assert first.part == "config" and first.request == bytes.fromhex("0A1704")
        assert all(q.request[0] == 0x0A and q.request[2] == 4 for q in plugin.queries(1))

    def test_simulator_is_silent_for_what_is_not_its_read(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel(cells=4)})
        for foreign in ("0A0102", "0A1804", "0A0004", "DDA50300FFFD77", "010300000001840A"):
            assert sim.feed(bytes.fromhex(foreign)) == [], foreign
        # (a real BMS, too, takes the Modbus CRC's last byte 0A for a request start)
        sim = simulators.create(self.plugin_name, {1: BatteryModel(cells=4)})
        [rep] = sim.feed(request(0x17))
        assert rep == reply(0x17, bytes.fromhex("0041 0000"))  # 4 cells, two probes
        with pytest.raises(ValueError, match="exactly one BMS"):
            simulators.create(self.plugin_name, {1: BatteryModel(), 2: BatteryModel()})
        with pytest.raises(ValueError, match="3-10 cells"):
            simulators.create(self.plugin_name, {1: BatteryModel(cells=16)})

    def test_cells_beyond_the_count_are_left_out(self, plugin: Plugin) -> None:
        model = BatteryModel(cells=3, soc=50.0)
        state = poll(plugin, simulators.create(self.plugin_name, {1: model}), 1)
        assert len(state["cells"]) == 3 and state["cells"] == pytest.approx(model.cell_voltages,
                                                                             abs=0.001)  # fmt: skip

    def test_cells_4_to_10_are_optional_reads(self, plugin: Plugin) -> None:
        # a 3S board may not answer them; the poller goes on without an optional part
        optional = {q.part for q in plugin.queries(1) if not q.required}
        assert optional == {f"cell{n}" for n in range(4, 11)} | {"probe2", "ic_temperature"}

    def test_decode_on_the_command_line(self) -> None:
        plugin = plugins.load(self.plugin_name)
        model = BatteryModel(cells=4, soc=41.0, current=-7.5, temperatures=[18.0, 19.0])
        sim = simulators.create(self.plugin_name, {1: model})
        args = [f"{q.request.hex()}={b''.join(sim.feed(q.request)).hex()}"
                for q in plugin.queries(1)]  # fmt: skip
        cli = [sys.executable, "-m", "bmsbank.cli", "decode", "sinowealth"]
        out = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout)
        assert state["bms"] == "sinowealth" and state["current"] == pytest.approx(-7.5)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["temperatures"] == pytest.approx([18.0, 19.0], abs=0.06)
        bad = subprocess.run([*cli, args[0][:-2] + "00"], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        assert bad.returncode != 0 and "check" in (bad.stderr + bad.stdout)
        bare = subprocess.run([*cli, CAPTURED[0].hex], capture_output=True, text=True, timeout=60)
        assert bare.returncode != 0 and "request" in (bare.stderr + bare.stdout)

    def test_poller_reads_the_pack_through_a_pty(self, tmp_path) -> None:
        from bmsbank.services.poller.simulators.ptyserver import PtyServer

        model = BatteryModel(cells=8, soc=37.0, current=-9.5, temperatures=[17.0, 18.0])
        server = PtyServer(simulators.create(self.plugin_name, {1: model}),
                           link=str(tmp_path / "tty-sino"), model_wire=True).start()  # fmt: skip
        try:
            port = parse({"ports": [{"name": "p", "device": server.device, "bms": "sinowealth",
                                     "addresses": [1]}]}, "test").ports[0]  # fmt: skip
            sent: list[dict] = []
            poller = Poller(port, sent.append)
            poller.poll_once()
            poller.close()
        finally:
            server.stop()
        [state] = sent
        assert state["pack"] == "p:1" and state["bms"] == "sinowealth"
        assert state["current"] == pytest.approx(-9.5, abs=0.001)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["temperatures"] == pytest.approx([17.0, 18.0], abs=0.06)
        assert state["link"]["ok"] == 1 and state["link"]["checksum"] == 0

    def test_a_short_reply_waits(self, plugin: Plugin) -> None:
        for k in range(1, 5):
            assert plugin.extract(bytearray(CAPTURED[0].raw[:k]), LinkStats()) is None, k
