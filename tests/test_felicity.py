"""Felicity plugin and simulator: FC03 replies decoded by their requests, built from the protocol.

No raw Felicity frame is public (searched: the serialbattery drivers and their PRs #116/#484,
DM6JM/FelicityConverter, tgfuellner/Esphome-FelicityESS and its issue #1, fl4p/batmon-ha#320).
Every frame here is BUILT from the register map the public drivers read (see the family
docstring): the register values are chosen, the CRC computed, and each comment says what the
frame encodes. The windows "DSB" are the reads mr-manuel/venus-os_dbus-serialbattery's
bms/felicity.py sends, byte for byte.
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
from bmsbank.services.poller.plugins.felicity.family import read_request
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.plugin_contract import Captured, MultidropContract, extract_all, poll

BUILT = "built from the register map (FSR/DSB/ESS/CONV, see family.py)"
DSB = "built; the read mr-manuel/venus-os_dbus-serialbattery bms/felicity.py sends"
INFO1, CELLS1 = "01 03 13 02 00 0a 60 89", "01 03 13 2a 00 14 60 89"
LIMITS1, SERIAL1, VERSION1 = "01 03 13 1c 00 04 81 4b", "01 03 f8 04 00 05 f5 68", \
    "01 03 f8 0b 00 01 c4 a8"  # fmt: skip
CELLS_16 = [3.318, 3.32, 3.321, 3.319, 3.322, 3.325, 3.318, 3.32, 3.321, 3.324, 3.319, 3.32,
            3.322, 3.323, 3.318, 3.319]  # fmt: skip

CAPTURED = [
    # 0: info at id 1: status 0x0005 (charge + discharge enabled), no faults, 53.12 V, register
    # -250 (0xFF06) = charging 25.0 A, BMS 27 °C, SoC 76 %.
    Captured(BUILT, "010314 0005 0000 0000 0000 14c0 ff06 0000 0000 001b 004c cc39", "info",
             {"status": 5, "faults": 0, "voltage": 53.12, "current": 25.0,
              "bms_temperature": 27.0, "soc": 76.0}, request=INFO1),
    # 1: cells at id 1 (0x132A x 0x14): 16 cells 3.318-3.325 V, probes 24/25 °C, two 0x7FFF.
    Captured(BUILT, "010328 0cf6 0cf8 0cf9 0cf7 0cfa 0cfd 0cf6 0cf8 0cf9 0cfc 0cf7 0cf8 0cfa 0cfb"
             "0cf6 0cf7 0018 0019 7fff 7fff 12b2", "cells",
             {"cells": CELLS_16, "cell_temperatures": [24.0, 25.0, None, None]},
             request=CELLS1),
    # 2: limits: charge 56.80 V, discharge 48.00 V, 100.0 A both ways.
    Captured(BUILT, "010308 1630 12c0 03e8 03e8 a75f", "limits",
             {"charge_voltage_limit": 56.8, "discharge_voltage_limit": 48.0,
              "charge_current_limit": 100.0, "discharge_current_limit": 100.0}, request=LIMITS1),
    # 3: serial number 0xF804 x 5: 2023 9 15 1 42, shown as DSB joins them.
    Captured(BUILT, "01030a 07e7 0009 000f 0001 002a 6786", "serial",
             {"serial_words": [2023, 9, 15, 1, 42], "serial": "2023915142"}, request=SERIAL1),
    # 4: firmware 0xF80B: 418 (DSB's tested LPBF48250).
    Captured(BUILT, "010302 01a2 386d", "version", {"version": 418}, request=VERSION1),
    # 5: info at id 2 (ESPH's second module): status 0x0004 (charge disabled), fault bit 8
    # (cell temperature high), 51.05 V, register +423 = discharging 42.3 A, BMS 48 °C, SoC 15 %.
    Captured(BUILT, "020314 0004 0000 0100 0000 13f1 01a7 0000 0000 0030 000f cadf", "info",
             {"status": 4, "faults": 0x100, "voltage": 51.05, "current": -42.3,
              "bms_temperature": 48.0, "soc": 15.0}, request="02 03 13 02 00 0a 60 ba"),
    # 6: info, idle at -5 °C: 52.30 V, 0 A, BMS 0xFFFB = -5 °C, SoC 50 %.
    Captured(BUILT, "010314 0005 0000 0000 0000 146e 0000 0000 0000 fffb 0032 5542", "info",
             {"voltage": 52.3, "current": 0.0, "bms_temperature": -5.0, "soc": 50.0},
             request=INFO1),
    # 7: an 8S pack (as in serialbattery PR #484): cells 3.300-3.303 V, slots 9-16 0x7FFF;
    # probes 19 °C and 0xFFFD = -3 °C, then 0x7FFF twice.
    Captured(BUILT, "010328 0ce5 0ce6 0ce4 0ce7 0ce5 0ce6 0ce4 0ce5 7fff 7fff 7fff 7fff 7fff 7fff"
             "7fff 7fff 0013 fffd 7fff 7fff 96f0", "cells",
             {"cells": [3.301, 3.302, 3.3, 3.303, 3.301, 3.302, 3.3, 3.301] + [None] * 8,
              "cell_temperatures": [19.0, -3.0, None, None]}, request=CELLS1),
    # 8-11: the incumbent's own windows, decoded by their requests: voltage + current, SoC,
    # cell 16 + the probes (DSB skips the first) as the generic "registers" part; 16 cells from
    # 0x132A, the first register of the polled "cells" part (a shorter window of it).
    Captured(DSB, "010304 14c0 ff06 3e0d", "registers", {"voltage": 53.12, "current": 25.0},
             request="01 03 13 06 00 02 20 8e"),
    Captured(DSB, "010302 004c b9b1", "registers", {"soc": 76.0},
             request="01 03 13 0b 00 01 f1 4c"),
    Captured(DSB, "01030a 0cf7 0018 0019 7fff 7fff 0aea", "registers",
             {"cell_temperatures": [24.0, 25.0, None, None]},
             request="01 03 13 39 00 05 51 40"),
    Captured(DSB, "010320 0cf6 0cf8 0cf9 0cf7 0cfa 0cfd 0cf6 0cf8 0cf9 0cfc 0cf7 0cf8 0cfa 0cfb"
             "0cf6 0cf7 cd46", "cells", {"cells": CELLS_16},
             request="01 03 13 2a 00 10 61 4a"),
]  # fmt: skip
CYCLE = CAPTURED[:5]  # one whole poll cycle of pack 1


def parts_of(plugin: Plugin, caps: list[Captured]) -> dict[str, dict]:
    """The parts of built replies (of different parts), as a poll cycle collects them."""
    return {cap.part: plugin.parse(cap.raw, cap.request_bytes)[1] for cap in caps}


def built(address: int, start: int, *words: int) -> tuple[bytes, bytes]:
    """A read request and its reply carrying ``words`` (for cases no table above holds)."""
    data = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in words)
    return read_request(address, start, len(words)), modbus_frame(bytes((address, 3, len(data)))
                                                                   + data)  # fmt: skip


class TestFelicity(MultidropContract):
    plugin_name = "felicity"
    captured = CAPTURED
    requests = {"info": INFO1, "cells": CELLS1, "limits": LIMITS1, "serial": SERIAL1,
                "version": VERSION1}  # fmt: skip
    # SoC in whole %, remaining = capacity x SoC; temperatures in whole °C
    roundtrip_tolerance = {"remaining": 1.0, "temperatures": 0.5}

    def make_models(self) -> dict[int, BatteryModel]:
        """The contract's pack at the ``capacity`` option's default (the BMS does not report it)."""
        return {1: BatteryModel(cells=16, capacity=100.0, soc=63.5, current=-12.3,
                                imbalance=0.031, temperatures=[21.5, 23.0],
                                faults={"high_charge_temperature"})}  # fmt: skip

    def test_state_of_one_poll_cycle(self, plugin: Plugin) -> None:
        state = plugin.state(parts_of(plugin, CYCLE))
        assert state["voltage"] == pytest.approx(53.12) and state["soc"] == 76.0
        assert state["current"] == 25.0  # register -250: charging
        assert (state["capacity"], state["remaining"]) == (100.0, 76.0)
        assert state["cells"] == pytest.approx(CELLS_16) and state["balancing"] == [0] * 16
        assert state["temperatures"] == [24.0, 25.0] and state["mosfet_temperature"] == 27.0
        assert state["charge_fet"] and state["discharge_fet"] and not any(state["alarms"].values())
        limits = state["bms_ccl"], state["bms_dcl"], state["bms_cvl"]
        assert limits == pytest.approx((100.0, 100.0, 56.8))
        assert state["hardware"] == "Felicity Solar fw 418 sn 2023915142"
        assert state["serial"] == "2023915142"

    def test_state_without_the_optional_reads(self, plugin: Plugin) -> None:
        state = plugin.state(parts_of(plugin, CYCLE[:2]))
        assert state["hardware"] == "Felicity Solar"
        assert (state["bms_ccl"], state["bms_dcl"], state["bms_cvl"]) == (None, None, None)

    def test_the_incumbents_windows_give_a_state_too(self, plugin: Plugin) -> None:
        parts = parts_of(plugin, [CAPTURED[0], *CAPTURED[8:]])  # status/faults from info
        state = plugin.state(parts)
        assert state["cells"] == pytest.approx(CELLS_16) and state["temperatures"] == [24.0, 25.0]

    def test_an_8s_pack_and_temperatures_below_zero(self, plugin: Plugin) -> None:
        state = plugin.state(parts_of(plugin, [CAPTURED[6], CAPTURED[7]]))
        assert len(state["cells"]) == 8 and state["cells"][3] == 3.303
        assert state["temperatures"] == [19.0, -3.0] and state["mosfet_temperature"] == -5.0
        assert state["current"] == 0.0 and str(state["current"]) == "0.0"  # never -0.0

    def test_discharging_pack_with_charge_disabled_and_a_hot_cell(self, plugin: Plugin) -> None:
        state = plugin.state(parts_of(plugin, [CAPTURED[5], CAPTURED[1]]))
        assert state["current"] == -42.3  # register +423: discharging
        assert not state["charge_fet"] and state["discharge_fet"]
        raised = {name for name, level in state["alarms"].items() if level}
        assert raised == {"high_temperature", "high_charge_temperature"}

    @pytest.mark.parametrize("invert", [False, True], ids=["default", "invert_current"])
    def test_current_sign_option(self, invert: bool) -> None:
        plugin = plugins.load(self.plugin_name, {"invert_current": invert})
        sign = -1 if invert else 1
        assert parts_of(plugin, [CAPTURED[0]])["info"]["current"] == sign * 25.0
        assert parts_of(plugin, [CAPTURED[5]])["info"]["current"] == sign * -42.3
        assert str(parts_of(plugin, [CAPTURED[6]])["info"]["current"]) == "0.0"  # never -0.0

    @pytest.mark.parametrize(("bit", "names"), [
        (2, {"high_cell_voltage"}), (3, {"low_cell_voltage"}), (4, {"high_charge_current"}),
        (5, {"high_discharge_current"}), (6, {"high_internal_temperature"}),
        (8, {"high_temperature", "high_charge_temperature"}),
        (9, {"low_temperature", "low_charge_temperature"}), (0, set()), (7, set()), (15, set()),
    ], ids=lambda v: f"bit{v}" if isinstance(v, int) else None)  # fmt: skip
    def test_fault_bits(self, plugin: Plugin, bit: int, names: set[str]) -> None:
        parts = parts_of(plugin, CYCLE)
        parts["info"]["faults"] = 1 << bit
        alarms = plugin.state(parts)["alarms"]
        assert {name for name, level in alarms.items() if level == 2} == names
        assert set(alarms.values()) <= {0, 2}

    def test_capacity_option(self) -> None:
        plugin = plugins.load(self.plugin_name, {"capacity": 250})
        state = plugin.state(parts_of(plugin, CYCLE))
        assert (state["capacity"], state["remaining"]) == (250.0, 190.0)
        for bad in (0.0, 5000.0, "100"):
            with pytest.raises(ValueError):
                plugins.load(self.plugin_name, {"capacity": bad})

    # -- malformed and foreign replies ------------------------------------------------------
    @pytest.mark.parametrize(("request_", "reply", "kind"), [
        (INFO1, CAPTURED[1].hex, "malformed"),  # 40 data bytes to a read of 10 registers
        ("02 03 13 02 00 0a 60 ba", CAPTURED[0].hex, "address"),  # id 1 answers id 2's read
        (None, CAPTURED[0].hex, "unexpected"),  # a register reply without its read
        ("01 04 13 02 00 0a d5 49", CAPTURED[0].hex, "unexpected"),  # an FC04 read
        ("01 03 13 02 00 0a 60 88", CAPTURED[0].hex, "unexpected"),  # the read's CRC is wrong
        (*(x.hex() for x in built(1, 0x130B, 101)), "malformed"),  # SoC 101 %
    ], ids=["byte-count", "other-address", "no-request", "fc04-request", "bad-request-crc",
            "soc-above-100"])  # fmt: skip
    def test_reply_rejected_with_its_kind(self, plugin, request_, reply, kind) -> None:
        frames, errors, _ = extract_all(plugin, bytes.fromhex(reply))
        assert len(frames) == 1 and not errors
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], bytes.fromhex(request_) if request_ else None)
        assert err.value.kind == kind

    @pytest.mark.parametrize(("raw", "kind"), [
        ("01 83 02 c0 f1", "exception"),  # illegal data address, as the simulator answers
        ("01 83 02 c0 f0", "checksum"),
        ("01 03 14 0005 0000 0000 0000 14c0 ff06 0000 0000 001b 004c cc38", "checksum"),
        ("01 03 ff 0005 0000", "malformed"),  # a byte count beyond a Modbus frame
    ], ids=["exception", "exception-bad-crc", "bad-crc", "impossible-length"])  # fmt: skip
    def test_malformed_frames_are_counted_and_skipped(self, plugin, raw, kind) -> None:
        frames, errors, _ = extract_all(plugin, bytes.fromhex(raw))
        assert not frames and [e.kind for e in errors][:1] == [kind]
        # with a good reply behind it, the scanner resynchronises on that one: the bad bytes
        # are counted as noise (an exception reply is a whole frame of its own)
        frames, errors, stats = extract_all(plugin, bytes.fromhex(raw) + CAPTURED[4].raw)
        assert frames == [CAPTURED[4].raw]
        if kind == "exception":
            assert [e.kind for e in errors] == ["exception"]
        else:
            assert stats.noise_bytes == len(bytes.fromhex(raw))

    @pytest.mark.parametrize("slots", [[3300, 0x7FFF, 3301] + [0x7FFF] * 13, [0x7FFF] * 16],
                             ids=["unpopulated-slot-between-cells", "no-cell"])  # fmt: skip
    def test_impossible_cell_slots(self, plugin: Plugin, slots: list[int]) -> None:
        request, reply = built(1, 0x132A, *slots, 20, 21, 0x7FFF, 0x7FFF)
        parts = parts_of(plugin, [CAPTURED[0]])
        parts["cells"] = plugin.parse(reply, request, 1)[1]
        with pytest.raises(FrameError) as err:
            plugin.state(parts)
        assert err.value.kind == "malformed"

    def test_state_needs_info_and_cells(self, plugin: Plugin) -> None:
        with pytest.raises(FrameError) as err:
            plugin.state(parts_of(plugin, [CAPTURED[0], CAPTURED[2]]))
        assert err.value.kind == "truncated" and "cells" in str(err.value)

    def test_a_reply_arriving_in_pieces_waits(self, plugin: Plugin) -> None:
        for cap in self.captured:
            for k in range(1, len(cap.raw)):
                assert plugin.extract(bytearray(cap.raw[:k]), LinkStats()) is None, (cap.hex, k)

    # -- simulator --------------------------------------------------------------------------
    def test_simulator_refuses_what_a_pack_does_not_have(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel()})
        for request, reply in ((read_request(1, 0x1000, 4), "01 83 02 c0 f1"),
                               (read_request(1, 0x1330, 0x20), "01 83 02 c0 f1"),
                               (read_request(1, 0xF80B, 8), "01 83 02 c0 f1"),
                               (read_request(5, 0x1302, 10), None)):  # fmt: skip
            assert sim.feed(request) == ([bytes.fromhex(reply)] if reply else [])

    def test_simulated_8s_pack_reads_unpopulated_slots(self, plugin: Plugin) -> None:
        model = BatteryModel(cells=8, temperatures=[18.0])
        state = poll(plugin, simulators.create(self.plugin_name, {3: model}), 3)
        assert len(state["cells"]) == 8 and state["temperatures"] == [18.0]
        assert state["hardware"] == "Felicity Solar fw 418 sn 202411281003"


def bmsbank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_decodes_a_poll_cycle_given_as_request_reply_pairs():
    pairs = [f"{c.request}={c.hex}".replace(" ", "") for c in CYCLE]
    out = bmsbank("decode", "felicity", *pairs, "--address", "1")
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["bms"] == "felicity" and state["pack"] == "decode:1"
    assert state["voltage"] == pytest.approx(53.12) and state["current"] == 25.0
    assert state["soc"] == 76.0 and state["cells"] == pytest.approx(CELLS_16)
    assert state["temperatures"] == [24.0, 25.0]
    assert state["hardware"] == "Felicity Solar fw 418 sn 2023915142"


def test_cli_refuses_a_reply_without_its_request_and_one_from_another_pack():
    out = bmsbank("decode", "felicity", CAPTURED[0].hex)
    assert out.returncode == 1 and "rejected (unexpected)" in out.stderr
    pair = f"{CAPTURED[0].request}={CAPTURED[0].hex}".replace(" ", "")
    out = bmsbank("decode", "felicity", pair, "--address", "2")
    assert out.returncode == 1 and "rejected (address)" in out.stderr


def test_poller_reads_two_packs_on_one_pty_bus(tmp_path):
    models = {1: BatteryModel(cells=16, soc=40.0, current=30.5, temperatures=[20.0, 21.0]),
              2: BatteryModel(cells=8, soc=90.0, current=-7.4, temperatures=[-2.0])}  # fmt: skip
    server = PtyServer(simulators.create("felicity", models), link=str(tmp_path / "tty"),
                       model_wire=True).start()  # fmt: skip
    try:
        port = parse({"ports": [{"name": "p", "device": server.device, "bms": "felicity",
                                 "addresses": [1, 2], "command_gap": 0.01}]},
                     "test").ports[0]  # fmt: skip
        sent: list[dict] = []
        poller = Poller(port, sent.append)
        for _ in range(2):
            poller.poll_once()
        poller.close()
    finally:
        server.stop()
    assert [s["pack"] for s in sent] == ["p:1", "p:2"] * 2
    for s in sent:
        model = models[s["address"]]
        validate_state(s)
        assert s["current"] == pytest.approx(model.current, abs=0.05)  # + = charge
        assert s["voltage"] == pytest.approx(model.voltage, abs=0.01)
        assert s["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert s["temperatures"] == model.temperatures
        assert s["hardware"].endswith(f"sn 20241128100{s['address']}")
        assert s["link"]["timeout"] == 0 and s["link"]["address"] == 0
    assert poller.links[1].stats.ok == 2
