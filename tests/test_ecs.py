"""ECS plugin and simulator: a GreenMeter and LiPro modules, FC03 replies decoded by their reads.

No raw GreenMeter or LiPro frame is public (searched: dbus-serialbattery's bms/ecs.py, its PR
#204 and issue #28). Every frame here is BUILT from the register map the public driver reads (see
the family docstring): register values chosen, 32-bit values low word first, the CRC computed;
each comment says what the frame encodes. The requests are byte for byte the reads bmsbank
sends; those marked DSB are the single-register reads dbus-serialbattery's bms/ecs.py sends.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib

import pytest

from bmsbank.config import parse
from bmsbank.errors import FrameError
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, modbus_frame
from bmsbank.services.poller.plugins.ecs.family import CHARGE_STATES, DISCHARGE_STATES, read_request
from bmsbank.services.poller.scan import ports_block, scan
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from tests.plugin_contract import Captured, PluginContract, SimLink, extract_all

BUILT = "built from the GreenMeter/LiPro register map (DSB, see family.py)"
DSB = "built; the read Louisvdw/dbus-serialbattery bms/ecs.py sends"
REQ = {
    "id": "01 03 00 00 00 01 84 0a",
    "voltage": "01 03 00 6c 00 02 04 16",
    "current": "01 03 00 72 00 02 64 10",
    "soc": "01 03 00 80 00 02 c5 e3",
    "states": "01 03 00 82 00 02 64 23",
    "temperatures": "01 03 00 66 00 02 24 14",
    "limits": "01 03 00 1e 00 02 a4 0d",
    "capacity": "01 03 00 2e 00 02 a4 02",
    "production": "01 03 00 02 00 02 65 cb",
    "cell1": "02 03 00 64 00 03 44 27",
    "cell2": "03 03 00 64 00 03 45 f6",
    "cell3": "04 03 00 64 00 03 44 41",
    "cell4": "05 03 00 64 00 03 45 90",
}

CAPTURED = [
    # 0: GreenMeter id 501 (0x01F5): the 250 A meter.
    Captured(BUILT, "01 03 02 01f5 7993", "id", {"meter_id": 501}, request=REQ["id"]),
    # 1: voltage 13284 mV (the 4 cells' sum): 0x000033E4, low word first.
    Captured(BUILT, "01 03 04 33e4 0000 b540", "voltage", {"voltage": 13.284},
             request=REQ["voltage"]),
    # 2: current +25500 mA (charging 25.5 A): 0x0000639C.
    Captured(BUILT, "01 03 04 639c 0000 2459", "current", {"current": 25.5},
             request=REQ["current"]),
    # 3: SoC 76000 = 76.000 %: 0x000128E0.
    Captured(BUILT, "01 03 04 28e0 0001 33a5", "soc", {"soc": 76.0}, request=REQ["soc"]),
    # 4: states: over-voltage 0, under-voltage 0 (charge and discharge on).
    Captured(BUILT, "01 03 04 0000 0000 fa33", "states",
             {"over_voltage": 0, "under_voltage": 0}, request=REQ["states"]),
    # 5: temperatures 2400 and 2550 x 0.01 °C = 24.00 and 25.50 °C.
    Captured(BUILT, "01 03 04 0960 09f6 7fa7", "temperatures", {"temperatures": [24.0, 25.5]},
             request=REQ["temperatures"]),
    # 6: limits: discharge -150 A (0xFF6A, DSB takes the magnitude), charge 100 A.
    Captured(BUILT, "01 03 04 ff6a 0064 ebd0", "limits",
             {"discharge_current_limit": 150.0, "charge_current_limit": 100.0},
             request=REQ["limits"]),
    # 7: capacity 280000 mAh = 280 Ah: 0x000445C0.
    Captured(BUILT, "01 03 04 45c0 0004 eec0", "capacity", {"capacity": 280.0},
             request=REQ["capacity"]),
    # 8: production number 20231115: 0x0134B3CB.
    Captured(BUILT, "01 03 04 b3cb 0134 ad0e", "production", {"production": 20231115},
             request=REQ["production"]),
    # 9-12: the LiPro modules at 2-5 (registers 100-102): 3318 mV 23.50 °C; 3325 mV 24.00 °C
    # balancing (120 > 50); 3320 mV 23.75 °C; 3321 mV -1.25 °C (0xFF83).
    Captured(BUILT, "02 03 06 0cf6 092e 0000 9ec9", "cell1",
             {"cell_voltage": 3.318, "cell_temperature": 23.5, "cell_balance": 0},
             request=REQ["cell1"]),
    Captured(BUILT, "03 03 06 0cfd 0960 0078 56ad", "cell2",
             {"cell_voltage": 3.325, "cell_temperature": 24.0, "cell_balance": 120},
             request=REQ["cell2"]),
    Captured(BUILT, "04 03 06 0cf8 0947 0000 0cb4", "cell3",
             {"cell_voltage": 3.32, "cell_temperature": 23.75}, request=REQ["cell3"]),
    Captured(BUILT, "05 03 06 0cf9 ff83 0000 4e91", "cell4",
             {"cell_voltage": 3.321, "cell_temperature": -1.25}, request=REQ["cell4"]),
    # 13: SoC 50 % as DSB says some meters send it: C350 FFFF (the high word FFFF is dropped).
    Captured(BUILT, "01 03 04 c350 ffff c7d6", "soc", {"soc": 50.0}, request=REQ["soc"]),
    # 14: current -42300 mA (discharging 42.3 A): 0xFFFF5AC4.
    Captured(BUILT, "01 03 04 5ac4 ffff a8a6", "current", {"current": -42.3},
             request=REQ["current"]),
    # 15: states: over-voltage state 3 (high temperature: charge off), under-voltage 0.
    Captured(BUILT, "01 03 04 0003 0000 0a33", "states",
             {"over_voltage": 3, "under_voltage": 0}, request=REQ["states"]),
    # 16-17: DSB's single reads of the states: 130 = 3, 131 = 2 (discharge over-current).
    Captured(DSB, "01 03 02 0003 f845", "states", {"over_voltage": 3},
             request="01 03 00 82 00 01 24 22"),
    Captured(DSB, "01 03 02 0002 3985", "registers", {"under_voltage": 2},
             request="01 03 00 83 00 01 75 e2"),
    # 18: temperatures -5.00 °C (0xFE0C) and 0.
    Captured(BUILT, "01 03 04 fe0c 0000 0bd8", "temperatures", {"temperatures": [-5.0, 0.0]},
             request=REQ["temperatures"]),
    # 19: DSB's read of one module's voltage (LiPro at 2, register 100): 3318 mV.
    Captured(DSB, "02 03 02 0cf6 7902", "cell1", {"cell_voltage": 3.318},
             request="02 03 00 64 00 01 c5 e6"),
    # 20: current 0 (idle).
    Captured(BUILT, "01 03 04 0000 0000 fa33", "current", {"current": 0.0},
             request=REQ["current"]),
]  # fmt: skip
CYCLE = CAPTURED[:13]  # one whole poll cycle of a 4-cell bank, GreenMeter at 1


def parts_of(plugin: Plugin, caps: list[Captured], address: int = 1) -> dict[str, dict]:
    """The parts of built replies, in the order a poll cycle reads them."""
    return {cap.part: plugin.parse(cap.raw, cap.request_bytes, address)[1] for cap in caps}


def built(address: int, start: int, *words: int) -> tuple[bytes, bytes]:
    """A read request and its reply carrying ``words`` (for cases no table above holds)."""
    data = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in words)
    return read_request(address, start, len(words)), modbus_frame(bytes((address, 3, len(data)))
                                                                   + data)  # fmt: skip


class TestEcs(PluginContract):
    plugin_name = "ecs"
    captured = CAPTURED
    requests = REQ
    # SoC counted in 0.001 %, capacity in mAh: exact; remaining = capacity x SoC
    roundtrip_tolerance = {"remaining": 0.05}

    @pytest.fixture
    def plugin(self) -> Plugin:
        """The contract's bank: 16 LiPro modules, told (the default counts them)."""
        return plugins.load(self.plugin_name, {"cells": 16})

    def check_state(self, state: dict, model: BatteryModel) -> None:
        """As the contract's, the switches as a GreenMeter sets them: off in an alarm state."""
        expected = copy.copy(model)
        expected.charge_fet = model.charge_fet and not model.active_alarms & set(
            CHARGE_STATES.values()
        )
        expected.discharge_fet = model.discharge_fet and not (
            model.active_alarms & set(DISCHARGE_STATES.values())
        )
        super().check_state(state, expected)

    def test_parity_is_even(self) -> None:
        info = plugins.info(self.plugin_name)
        assert (info.baudrate, info.parity) == (19200, "E")

    def test_state_of_one_poll_cycle(self) -> None:
        plugin = plugins.load(self.plugin_name, {"cells": 4})
        assert [q.part for q in plugin.queries(1)] == list(REQ)
        state = plugin.state(parts_of(plugin, CYCLE))
        assert (state["voltage"], state["current"], state["soc"]) == (13.284, 25.5, 76.0)
        assert (state["capacity"], state["remaining"]) == (280.0, 212.8)
        assert state["cells"] == pytest.approx([3.318, 3.325, 3.32, 3.321])
        assert state["balancing"] == [0, 1, 0, 0]
        assert state["temperatures"] == [24.0, 25.5]
        assert state["charge_fet"] and state["discharge_fet"] and not any(state["alarms"].values())
        assert (state["bms_ccl"], state["bms_dcl"]) == (100.0, 150.0)
        assert state["hardware"] == "ECS GreenMeter 250A, 4 LiPro"
        assert state["serial"] == "20231115"

    def test_counting_the_modules_takes_those_that_answer_in_a_row(self) -> None:
        plugin = plugins.load(self.plugin_name)  # cells = 0: count them
        assert len(plugin.queries(1)) == 9 + 16
        parts = parts_of(plugin, CYCLE[:10] + CYCLE[11:])  # module 2 silent this cycle
        assert plugin.state(parts)["cells"] == [3.318]

    def test_a_module_that_fell_silent_is_not_shown_with_its_old_reading(self) -> None:
        plugin = plugins.load(self.plugin_name)
        parts = parts_of(plugin, CYCLE)
        assert len(plugin.state(parts)["cells"]) == 4
        # the next cycle: the GreenMeter and modules 1-2 answer, 3-4 do not
        parts.update(parts_of(plugin, CYCLE[1:6] + CYCLE[9:11]))
        assert plugin.state(parts)["cells"] == [3.318, 3.325]

    def test_modules_after_another_first_address(self) -> None:
        plugin = plugins.load(self.plugin_name, {"cells": 3, "lipro_start": 20})
        assert [q.request[0] for q in plugin.queries(1)[9:]] == [20, 21, 22]
        request, reply = built(21, 100, 3300, 2500, 0)
        assert plugin.parse(reply, request, 1)[0] == "cell2"

    def test_a_discharging_bank_in_the_cold_with_charge_off(self) -> None:
        plugin = plugins.load(self.plugin_name, {"cells": 4})
        caps = [*CYCLE[:2], CAPTURED[14], CAPTURED[13], CAPTURED[15], CAPTURED[18], *CYCLE[9:]]
        state = plugin.state(parts_of(plugin, caps))
        assert state["current"] == -42.3 and state["soc"] == 50.0
        assert state["temperatures"] == [-5.0, 0.0]
        assert not state["charge_fet"] and state["discharge_fet"]
        raised = {name for name, level in state["alarms"].items() if level}
        assert raised == {"high_charge_temperature"}

    def test_idle_current_is_never_negative_zero(self, plugin: Plugin) -> None:
        fields = plugin.parse(CAPTURED[20].raw, CAPTURED[20].request_bytes, 1)[1]
        assert str(fields["current"]) == "0.0"

    @pytest.mark.parametrize(("over", "under", "raised", "fets"), [
        (1, 0, {"high_voltage"}, (False, True)), (2, 0, {"high_charge_current"}, (False, True)),
        (4, 0, {"high_charge_temperature"}, (False, True)),
        (5, 0, {"low_charge_temperature"}, (False, True)),
        (6, 0, {"low_charge_temperature"}, (False, True)),
        (0, 1, {"low_voltage"}, (True, False)), (0, 2, {"high_discharge_current"}, (True, False)),
        (0, 3, {"high_temperature"}, (True, False)), (0, 6, {"low_temperature"}, (True, False)),
        (7, 9, set(), (False, False)),  # a code no source explains: off, no alarm named
    ], ids=["ov1", "ov2", "ov4", "ov5", "ov6", "uv1", "uv2", "uv3", "uv6", "unknown"])  # fmt: skip
    def test_state_codes(self, over, under, raised, fets) -> None:
        plugin = plugins.load(self.plugin_name, {"cells": 4})
        parts = parts_of(plugin, CYCLE)
        parts["states"].update(over_voltage=over, under_voltage=under)
        state = plugin.state(parts)
        assert {name for name, level in state["alarms"].items() if level == 2} == raised
        assert (state["charge_fet"], state["discharge_fet"]) == fets

    # -- malformed and foreign replies ------------------------------------------------------
    @pytest.mark.parametrize(("request_", "reply", "kind"), [
        (REQ["id"], CAPTURED[1].hex, "malformed"),  # 4 data bytes to a read of 1 register
        ("02 03 00 6c 00 02 04 25", CAPTURED[1].hex, "address"),  # 1 answers a read of 2
        ("02 03 00 6c 00 02 04 25", "02 03 04 cf88 0000 760d", "address"),  # a meter reading
        ("12 03 00 64 00 03 46 b7", "12 03 06 0cf6 092e 0000 5309", "address"),  # no module
        (None, CAPTURED[1].hex, "unexpected"),  # a register reply without its read
        ("01 04 00 6c 00 02 b1 d6", CAPTURED[1].hex, "unexpected"),  # an FC04 read
        (*(x.hex() for x in built(1, 0, 500 + 7)), "malformed"),  # no GreenMeter's id
        (*(x.hex() for x in built(1, 128, 0x8E20, 0x0001)), "malformed"),  # SoC 101.92 %
    ], ids=["byte-count", "other-address", "meter-at-a-module-address",
            "module-beyond-the-bank", "no-request", "fc04-request", "unknown-meter-id",
            "soc-above-100"])  # fmt: skip
    def test_reply_rejected_with_its_kind(self, request_, reply, kind) -> None:
        plugin = plugins.load(self.plugin_name, {"cells": 4})
        frames, errors, _ = extract_all(plugin, bytes.fromhex(reply))
        assert len(frames) == 1 and not errors, errors
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], bytes.fromhex(request_) if request_ else None, 1)
        assert err.value.kind == kind

    @pytest.mark.parametrize(("raw", "kind"), [
        ("01 83 02 c0 f1", "exception"),  # illegal data address, as the simulator answers
        ("01 83 02 c0 f0", "checksum"),
        ("01 03 04 cf88 0000 450e", "checksum"),
        ("01 03 ff cf88 0000", "malformed"),  # a byte count beyond a Modbus frame
    ], ids=["exception", "exception-bad-crc", "bad-crc", "impossible-length"])  # fmt: skip
    def test_malformed_frames_are_counted_and_skipped(self, plugin, raw, kind) -> None:
        frames, errors, _ = extract_all(plugin, bytes.fromhex(raw))
        assert not frames and [e.kind for e in errors][:1] == [kind]
        frames, errors, stats = extract_all(plugin, bytes.fromhex(raw) + CAPTURED[9].raw)
        assert frames == [CAPTURED[9].raw]
        if kind == "exception":
            assert [e.kind for e in errors] == ["exception"]
        else:
            assert stats.noise_bytes == len(bytes.fromhex(raw))

    def test_state_needs_the_meter_and_a_module(self) -> None:
        plugin = plugins.load(self.plugin_name, {"cells": 4})
        for caps, missing in ((CYCLE[1:], "meter_id"), (CYCLE[:9], "LiPro")):
            with pytest.raises(FrameError) as err:
                plugin.state(parts_of(plugin, caps))
            assert err.value.kind == "truncated" and missing in str(err.value)

    def test_a_reply_arriving_in_pieces_waits(self, plugin: Plugin) -> None:
        for cap in self.captured:
            for k in range(1, len(cap.raw)):
                assert plugin.extract(bytearray(cap.raw[:k]), LinkStats()) is None, (cap.hex, k)

    # -- simulator --------------------------------------------------------------------------
    def test_simulator_answers_only_its_devices_reads(self) -> None:
        sim = simulators.create(self.plugin_name, {1: BatteryModel(cells=4)})
        exception = [bytes.fromhex("01 83 02 c0 f1")]
        assert sim.feed(read_request(1, 0, 0x27)) == exception  # EG4 LL's read: no such block
        assert sim.feed(read_request(6, 100, 3)) == []  # no sixth device
        assert sim.feed(bytes.fromhex("01 04 00 6c 00 02 b1 d6")) == []  # an FC04 read
        assert sim.feed(bytes.fromhex("01 03 00 6c 00 02 04 17")) == []  # a bad CRC
        assert sim.feed(read_request(3, 0, 1)) == [modbus_frame(bytes.fromhex("03 03 02 00 68"))]

    def test_simulated_bank_read_by_counting_its_modules(self) -> None:
        """The default (cells = 0) on the simulator, the silent addresses skipped as the poller
        skips an optional read that timed out."""
        plugin = plugins.load(self.plugin_name)
        model = BatteryModel(cells=5, current=-3.2)
        link, stats, parts = SimLink(simulators.create(self.plugin_name, {1: model})), \
            LinkStats(), {}  # fmt: skip
        from bmsbank.errors import LinkTimeout
        from bmsbank.services.poller.plugins.base import run_query

        for q in plugin.queries(1):
            try:
                parts[q.part] = run_query(plugin, link, q, 1, parts, stats)
            except LinkTimeout:
                assert not q.required
        state = plugin.state(parts)
        assert (
            state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
            and state["current"] == -3.2
        )


def bmsbank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_decodes_a_poll_cycle_given_as_request_reply_pairs():
    pairs = [f"{c.request}={c.hex}".replace(" ", "") for c in CYCLE]
    out = bmsbank("decode", "ecs", *pairs, "--address", "1")
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["bms"] == "ecs" and state["pack"] == "decode:1"
    assert (state["voltage"], state["current"], state["soc"]) == (13.284, 25.5, 76.0)
    assert state["cells"] == pytest.approx([3.318, 3.325, 3.32, 3.321])
    assert state["temperatures"] == [24.0, 25.5] and state["serial"] == "20231115"


def test_cli_refuses_a_reply_without_its_request_and_one_from_another_bank():
    out = bmsbank("decode", "ecs", CAPTURED[1].hex.replace(" ", ""))
    assert out.returncode == 1 and "rejected (unexpected)" in out.stderr
    pair = f"{CAPTURED[1].request}={CAPTURED[1].hex}".replace(" ", "")
    out = bmsbank("decode", "ecs", pair, "--address", "2")
    assert out.returncode == 1 and "rejected (address)" in out.stderr


def test_a_scan_finds_the_bank_and_tells_its_cell_count():
    """The scan counts the modules (the default) and writes the count into the port block, so
    the poller reads exactly those and asks no silent address."""
    server = PtyServer(simulators.create("ecs", {1: BatteryModel(cells=5)})).start()
    try:
        found = scan(server.device, families=["ecs"])
    finally:
        server.stop()
    assert [(f.family, f.address, f.cells, f.serial) for f in found] == [("ecs", 1, 5, "20240001")]
    block = ports_block("bank", server.device, found)
    assert 'bms = "ecs"' in block and "cells = 5" in block
    settings = tomllib.loads(block)["ports"][0]
    assert plugins.load("ecs", {"cells": settings["cells"]}).modules(1) == range(2, 7)


@pytest.mark.parametrize("cells", [0, 6], ids=["counted", "told"])
def test_poller_reads_a_bank_on_a_pty(tmp_path, cells):
    model = BatteryModel(cells=6, soc=40.0, current=30.5, temperatures=[20.0, 21.0])
    server = PtyServer(simulators.create("ecs", {1: model}), link=str(tmp_path / "tty"),
                       model_wire=True).start()  # fmt: skip
    try:
        port = parse({"ports": [{"name": "p", "device": server.device, "bms": "ecs",
                                 "addresses": [1], "command_gap": 0.01, "cells": cells}]},
                     "test").ports[0]  # fmt: skip
        sent: list[dict] = []
        poller = Poller(port, sent.append)
        for _ in range(2):
            poller.poll_once()
        poller.close()
    finally:
        server.stop()
    assert [s["pack"] for s in sent] == ["p:1"] * 2
    for s in sent:
        validate_state(s)
        assert s["current"] == pytest.approx(model.current, abs=0.001)  # + = charge
        assert s["voltage"] == pytest.approx(model.voltage, abs=0.001)
        assert s["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert s["temperatures"] == model.temperatures and s["serial"] == "20240001"
        assert s["link"]["address"] == 0
        # counting asks the 16 addresses after the GreenMeter's: 10 are silent, each asked twice
        # (the port's one retry) every cycle
        assert s["link"]["timeout"] == (0 if cells else 20 * (1 + s["seq"]))
    assert poller.links[1].stats.ok == 2
