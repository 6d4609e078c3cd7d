"""victron_can: a battery speaking the Victron CAN-bus BMS protocol (Pylontech, BYD, ...).

Decoded against the publisher's own encoder (services/publisher/canbms.py) and its DBC read by
cantools, and against captured frames whose real values are known:

- BYD Battery-Box Premium LVS (2 x 83 Ah, 16S) on a Venus OS GX: dfch/BydCanProtocol README.md
  (the frames and what Venus showed for them).
- Pytes V5α on Venus OS v3.34: AndreasBoehm/PytesCANProtocol README.md (frames, the values
  Venus showed, the 0x35A bit table).
- Pylontech US5000, old (V1.2) and new (V1.3) firmware: setfirelabs.com, "Pylontech Battery CAN
  comms - V1.2 vs V1.3" (frames of 4-8 bytes, no 0x373); the 0x351/0x355 example
  ``14 02 74 0E 74 0E CC 01`` / ``1A 00 64 00`` from setfirelabs.com "Pylontech US2000 / US3000
  CAN reading and CAN replication", quoted in OpenDTU's Pytes commit.
"""

from __future__ import annotations

import cantools
import pytest

from bmsbank.config import CanConfig
from bmsbank.errors import FrameError
from bmsbank.plausibility import default_bounds, implausible
from bmsbank.schema import validate_bank, validate_state
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.services.poller.can_family import CanFrame
from bmsbank.services.poller.plugins.victron_can.family import FIELDS, Family
from bmsbank.services.poller.plugins.victron_can.simulator import Simulator
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.publisher import canbms
from bmsbank.state import make_state

DB = cantools.database.load_file(canbms.DBC, strict=True)

#: dfch/BydCanProtocol README.md: BYD Battery-Box Premium LVS B019 v1.17, 2 x 83 Ah
BYD = {
    0x351: "48 02 00 05 00 05 AE 01",  # 58.4 V CVL, 128.0 A CCL, 128.0 A DCL, 43.0 V
    0x355: "43 00 64 00 00 00 00 00",  # SoC 67 %, SoH 100 %
    0x356: "BE 14 F9 FF 8C 00 00 00",  # 53.1 V, -0.7 A (discharge), 14.0 °C
    0x35A: "AA AA AA AA AA AA AA AA",  # every pair "10": ok
    0x35E: "42 59 44 00 00 00 00 00",  # "BYD"
    0x35F: "4C 69 01 17 69 00 00 00",  # online capacity 105 Ah
    0x372: "02 00 00 00 00 00 00 00",  # 2 modules online
    0x373: "EA 0C 01 0D 1F 01 22 01",  # 3.306 V, 3.329 V, 287 K, 290 K
    0x379: "9C 00 00 00 00 00 00 00",  # installed 156 Ah
    0x382: "50 52 45 4D 49 55 4D 00",  # "PREMIUM" (ignored: no state field)
}
#: setfirelabs.com, Pylontech US5000 with V1.2 firmware ("old"): 0x359/0x35C Pylon's own
PYLON_OLD = {
    0x351: "14 02 C0 12 C0 12 C2 01",  # 53.2 V, 480.0 A, 480.0 A, 45.0 V
    0x355: "58 00 5E 00",  # SoC 88 %, SoH 94 % (4 bytes)
    0x356: "7A 13 F2 FE 6B 01",  # 49.86 V, -27.0 A, 36.3 °C (6 bytes)
    0x359: "00 00 00 00 06 50 4E",  # Pylon protection flags (ignored)
    0x35C: "C0 00",  # Pylon charge request flags (ignored)
    0x35E: "50 59 4C 4F 4E 20 20 20",  # "PYLON   "
}
#: the same page, V1.3 firmware ("new"): 0x35A all "not supported", 0x355 of 6 bytes
PYLON_NEW = {
    0x351: "10 02 C0 12 C0 12 C2 01",  # 52.8 V
    0x355: "54 00 60 00 00 00",  # SoC 84 %, SoH 96 %
    0x356: "7B 13 E9 FE 6B 01",  # 49.87 V, -27.9 A, 36.3 °C
    0x35A: "00 00 00 00 00 00 00 00",
    0x35E: "50 59 4C 4F 4E 20 20 20",
    0x35F: "4C 49 01 03 3C 02 AA 00",  # online capacity 0x023C = 572 Ah
}


#: AndreasBoehm/PytesCANProtocol README.md: Pytes V5α (16S, 100 Ah) with Venus OS v3.34
PYTES = {
    0x351: "38 02 E8 03 E8 03 C7 01",  # 56.8 V, 100.0 A, 100.0 A, 45.5 V
    0x355: "33 00 64 00",  # SoC 51 %, SoH 100 %
    0x356: "8E 14 F9 FF B4 00",  # 52.62 V (the README says mV: 10 mV fits 52.62), -0.7 A, 18.0 °C
    0x35A: "00 00 00 00 00 00 00 00",  # Pytes sends 00 for ok ("not supported" in the protocol)
    0x35E: "50 59 54 45 53",  # "PYTES", 5 bytes
    0x35F: "01 00 6E 01 32 00",  # online 50 Ah
    0x360: "00",
    0x372: "02 00 01 00 01 00 02 00",
    0x373: "D8 0C DA 0C 21 01 23 01",  # 3.288 / 3.290 V, 289 K (16 °C) / 291 K (18 °C)
    0x374: "30 38 30 30 00 00 00 00",  # cell names: ignored
    0x378: "40 08 00 00 2B 07 00 00",
    0x379: "64 00",  # installed 100 Ah
}


def decode(frames: dict[int, str] | list[tuple[int, bytes]], **options) -> tuple[Family, dict]:
    family = Family(options)
    parts: dict = {}
    items = frames.items() if isinstance(frames, dict) else frames
    for can_id, data in items:
        raw = bytes.fromhex(data) if isinstance(data, str) else data
        frame = CanFrame(can_id, raw)
        assert family.address_of(frame) == 0, hex(can_id)
        family.accept(frame, parts)
    return family, parts


def checked(fields: dict, port: str = "vc") -> dict:
    msg = validate_state(make_state(port, 0, "victron_can", 0, fields, {"ok": 1}))
    assert implausible(msg, default_bounds()) is None
    return msg


# -- the DBC and the publisher's encoder -------------------------------------------------------
def test_the_tables_are_the_dbcs_signals():
    for can_id, fields in FIELDS.items():
        message = DB.get_message_by_frame_id(can_id)
        for f in fields:
            signal = message.get_signal_by_name(f.name)
            assert (f.offset * 8, signal.length, signal.byte_order) == (
                signal.start, 16, "little_endian"), f.name  # fmt: skip
            assert f.scale == signal.scale and f.bias == signal.offset, f.name
            assert f.fmt == ("s16le" if signal.is_signed else "u16le"), f.name


BANK = {
    "cvl": 55.2, "ccl": 87.5, "dcl": 120.3, "low_voltage": 46.4, "soc": 71.0, "soh": 93.0,
    "voltage": 52.37, "current": -31.4, "temperature": -4.5,
    "alarms": {"high_cell_voltage": 1, "low_voltage": 0, "high_temperature": 2,
               "low_charge_temperature": 1, "cell_imbalance": 0, "internal_failure": 0},
    "online": 1, "blocking_charge": 0, "blocking_discharge": 0, "offline": 0,
    "min_cell_voltage": 3.262, "max_cell_voltage": 3.301, "min_temperature": -6.0,
    "max_temperature": -3.0, "capacity": 280.0, "installed_capacity": 280.0, "name": "",
}  # fmt: skip


def test_the_publishers_frames_decode_to_what_it_encoded():
    _, parts = decode(canbms.frames(BANK, CanConfig(manufacturer="ACME")))
    state = Family({"cells": 16}).state(parts)
    assert state["voltage"] == pytest.approx(52.37)
    assert state["current"] == pytest.approx(-31.4)  # the sign survives: - = discharge
    assert state["soc"] == 71.0 and state["soh"] == 93.0
    assert (state["bms_cvl"], state["bms_ccl"], state["bms_dcl"]) == pytest.approx(
        (55.2, 87.5, 120.3))  # fmt: skip
    assert state["temperatures"] == pytest.approx([-4.5, -6.15, -3.15])  # whole K
    assert min(state["cells"]) == 3.262 and max(state["cells"]) == 3.301
    assert sum(state["cells"]) == pytest.approx(52.37)
    assert state["capacity"] == 280.0 and state["remaining"] == pytest.approx(280.0 * 0.71)
    assert state["hardware"] == "ACME"
    # pairs: high voltage carries the warning, high temperature the alarm, the rest ok
    assert state["alarms"]["high_voltage"] == 1 and state["alarms"]["high_temperature"] == 2
    assert state["alarms"]["low_charge_temperature"] == 1
    assert state["alarms"]["low_voltage"] == 0 and state["alarms"]["cell_imbalance"] == 0
    assert "low_temperature" not in state["alarms"]  # no source in the bank: "not supported"
    checked(state)


@pytest.mark.parametrize("can_id", [0x351, 0x355, 0x356, 0x372, 0x373])
def test_each_frame_decodes_as_cantools_decodes_the_dbc(can_id):
    data = dict(canbms.frames(BANK, CanConfig()))[can_id]
    _, parts = decode([(can_id, data)])
    ours = next(iter(parts.values()))
    for name, value in DB.decode_message(can_id, data).items():
        if name in ours and ours[name] is not None:
            assert ours[name] == pytest.approx(value), name


# -- captured frames ---------------------------------------------------------------------------
def test_byd_capture():
    family, parts = decode(BYD, cells=16)
    state = family.state(parts)
    assert state["voltage"] == pytest.approx(53.1)
    assert state["current"] == pytest.approx(-0.7)  # Venus showed it discharging
    assert state["soc"] == 67.0 and state["soh"] == 100.0
    assert (state["bms_cvl"], state["bms_ccl"], state["bms_dcl"]) == pytest.approx(
        (58.4, 128.0, 128.0))  # fmt: skip
    assert parts["limits"]["DischargeVoltage"] == pytest.approx(43.0)
    # kelvin as the protocol says (the README's "+1K" reading would be 15 / 18 °C): they agree
    # with 0x356's 14.0 °C of the same capture
    assert state["temperatures"] == pytest.approx([14.0, 13.85, 16.85])
    assert min(state["cells"]) == 3.306 and max(state["cells"]) == 3.329
    assert len(state["cells"]) == 16 and sum(state["cells"]) == pytest.approx(53.1)
    assert state["capacity"] == 156.0  # 0x379 installed, before 0x35F's 105 Ah online
    assert state["hardware"] == "BYD" and parts["modules"]["ModulesOnline"] == 2
    assert set(state["alarms"].values()) == {0}
    checked(state)


def test_byd_with_a_wrong_cell_count_is_refused():
    family, parts = decode(BYD, cells=15)  # 53.1 V cannot be 15 cells of 3.306-3.329 V
    with pytest.raises(FrameError, match="cells = 15") as err:
        family.state(parts)
    assert err.value.kind == "malformed"


@pytest.mark.parametrize("frames, expect", [
    (PYLON_OLD, (53.2, 480.0, 480.0, 88.0, 94.0, 49.86, -27.0, 36.3)),
    (PYLON_NEW, (52.8, 480.0, 480.0, 84.0, 96.0, 49.87, -27.9, 36.3)),
], ids=["v1.2", "v1.3"])  # fmt: skip
def test_pylontech_captures(frames, expect):
    family, parts = decode(frames, cells=15)
    assert (parts["limits"]["ChargeVoltageLimit"], parts["limits"]["ChargeCurrentLimit"],
            parts["limits"]["DischargeCurrentLimit"], parts["soc"]["SoC"], parts["soc"]["SoH"],
            parts["measurements"]["BatteryVoltage"], parts["measurements"]["BatteryCurrent"],
            parts["measurements"]["BatteryTemperature"]) == pytest.approx(expect)  # fmt: skip
    assert parts["name"]["hardware"] == "PYLON"
    # no 0x373: no cell figures, so the battery is not used ...
    with pytest.raises(FrameError, match="even_cells") as err:
        family.state(parts)
    assert err.value.kind == "truncated"
    # ... unless the user says so: its voltage spread over its 15 cells, limits its own
    family, parts = decode(frames, cells=15, even_cells=True)
    state = family.state(parts)
    assert state["cells"] == pytest.approx([expect[5] / 15] * 15)
    assert state["bms_ccl"] == 480.0 and state["alarms"] == {}
    checked(state)


def test_pytes_capture():
    family, parts = decode(PYTES, cells=16)
    state = checked(family.state(parts))
    assert (state["voltage"], state["current"], state["soc"]) == pytest.approx((52.62, -0.7, 51.0))
    assert (state["bms_cvl"], state["bms_ccl"], state["bms_dcl"]) == pytest.approx(
        (56.8, 100.0, 100.0))  # fmt: skip
    # the README's 16 °C / 18 °C for 289 K / 291 K: kelvin, as for BYD
    assert state["temperatures"] == pytest.approx([18.0, 15.85, 17.85])
    assert (state["min_cell_voltage"], state["max_cell_voltage"]) == pytest.approx((3.288, 3.290))
    assert state["capacity"] == 100.0 and state["hardware"] == "PYTES"
    assert state["alarms"] == {}  # every pair 00: nothing said, nothing claimed ok


@pytest.mark.parametrize("data, alarm, level", [
    ("10 00 00 00 00 00 00 00", "low_voltage", 2),  # "1." in byte 0: low battery voltage alarm
    ("04 00 00 00 00 00 00 00", "high_voltage", 2),  # ".4": high battery voltage alarm
    ("00 40 00 00 00 00 00 00", "high_discharge_current", 2),  # byte 1 "4."
    ("00 00 01 00 00 00 00 00", "high_charge_current", 2),  # byte 2 ".1"
    ("00 00 00 00 00 00 00 01", "cell_imbalance", 1),  # byte 7 ".1": cell imbalance warning
    ("00 00 00 00 00 04 00 00", "high_charge_temperature", 1),  # byte 5 ".4": warning
], ids=["low-voltage", "high-voltage", "discharge-current", "charge-current", "imbalance",
        "charge-temperature"])  # fmt: skip
def test_pytes_alarm_bits(data, alarm, level):
    # AndreasBoehm/PytesCANProtocol README.md, the 0x35A table (bit pairs, 01 = active)
    family, parts = decode({**PYTES, 0x35A: data}, cells=16)
    assert family.state(parts)["alarms"] == {alarm: level}


def test_pylontech_soc_comes_before_soh():
    # setfirelabs' replication example; its label says "SOH / SOC", the values say SoC 26 %
    _, parts = decode({0x355: "1A 00 64 00"})
    assert parts["soc"] == {"SoC": 26.0, "SoH": 100.0}


def test_pylontech_new_capacity_from_0x35f():
    family, parts = decode({**PYLON_NEW, 0x373: "F8 0C 08 0D 2C 01 2E 01"}, cells=15)
    assert family.state(parts)["capacity"] == 572.0


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("can_id, data", [
    (0x351, "48 02 00 05 00"), (0x355, "43"), (0x356, "BE 14 F9 FF"), (0x35A, "AA AA AA AA"),
    (0x373, "EA 0C 01"), (0x35E, ""),
], ids=["limits", "soc", "measurements", "alarms", "extremes", "name"])  # fmt: skip
def test_a_short_frame_is_truncated_and_changes_nothing(can_id, data):
    family, parts = decode(BYD, cells=16)
    before = {k: dict(v) for k, v in parts.items()}
    with pytest.raises(FrameError) as err:
        family.accept(CanFrame(can_id, bytes.fromhex(data)), parts)
    assert err.value.kind == "truncated"
    assert parts == before


@pytest.mark.parametrize("frame", [
    CanFrame(0x123, bytes(8)), CanFrame(0x18900140, bytes(8), extended=True),
    CanFrame(0x351, bytes(8), extended=True), CanFrame(0x4210, bytes(8), extended=True),
], ids=["foreign-11-bit", "daly-29-bit", "351-as-29-bit", "pylon-hv"])  # fmt: skip
def test_foreign_frames_are_not_this_familys(frame):
    assert Family().address_of(frame) is None


def test_protocol_frames_without_state_data_are_ignored():
    family, parts = decode({0x359: "00 00 00 00 06 50 4E", 0x35C: "C0 00", 0x305: "", 0x382: ""})
    assert parts == {}


def test_state_needs_limits_soc_and_measurements():
    family, parts = decode({k: v for k, v in BYD.items() if k != 0x351}, cells=16)
    with pytest.raises(FrameError) as err:
        family.state(parts)
    assert err.value.kind == "truncated"


def test_unknown_cell_extremes_are_no_cell_figures():
    # the publisher sends 0x0000 for what it does not know: not a 0 V cell
    family, parts = decode({**BYD, 0x373: "00 00 00 00 00 00 00 00"}, cells=16)
    assert parts["extremes"]["MinCellVoltage"] is None
    with pytest.raises(FrameError, match="even_cells"):
        family.state(parts)


def test_a_zero_limit_blocks_the_bank_in_the_batterys_name():
    family, parts = decode({**BYD, 0x351: "48 02 00 00 00 05 AE 01"}, cells=16)
    state = checked(family.state(parts))
    assert state["bms_ccl"] == 0.0 and state["bms_dcl"] == 128.0
    bank = bank_with(state)
    assert bank["ccl"] == 0.0 and bank["dcl"] > 0.0 and not bank["allow_charge"]
    assert bank["reasons"]["ccl"] == "vc:0: the BMS allows 0 A"  # not a FET nobody reported
    assert bank["packs"][0]["blocking_charge"] == "vc:0: the BMS allows 0 A"


# -- the simulator and the bank ----------------------------------------------------------------
def test_the_simulator_is_decoded_to_its_model():
    model = BatteryModel(cells=16, soc=47.0, current=-12.5, imbalance=0.03,
                         temperatures=[21.0, 23.0])  # fmt: skip
    sim = Simulator({0: model})
    family, parts = decode([(f.id, f.data) for f in sim.broadcast()], cells=16)
    state = checked(family.state(parts))
    assert state["voltage"] == pytest.approx(model.voltage, abs=0.01)
    assert state["current"] == pytest.approx(-12.5, abs=0.05)
    assert state["min_cell_voltage"] == pytest.approx(min(model.cell_voltages), abs=0.001)
    assert state["max_cell_voltage"] == pytest.approx(max(model.cell_voltages), abs=0.001)
    assert state["bms_cvl"] == pytest.approx(sim.cvl, abs=0.05)


def bank_with(state: dict, **bank) -> dict:
    engine = BankEngine.from_mapping({"stale_after": 10.0, "strings": [["vc:0"]],
                                      "confirm_states": 1, **bank}, "test")  # fmt: skip
    computer = BankComputer(engine, "test", started=0.0)
    assert engine.accept(state, 1.0)
    return validate_bank(computer.compute(1.0))


def test_the_batterys_limits_are_its_pack_limits_in_the_banks_reasons():
    model = BatteryModel(cells=16, soc=60.0, current=4.0)
    sim = Simulator({0: model})
    sim.cvl, sim.ccl, sim.dcl = 54.0, 22.5, 31.0  # below the bank's own: 55.2 V, 50 A, 100 A
    family, parts = decode([(f.id, f.data) for f in sim.broadcast()], cells=16)
    bank = bank_with(checked(family.state(parts)))
    assert bank["ccl"] == pytest.approx(22.5) and bank["dcl"] == pytest.approx(31.0)
    assert bank["reasons"]["ccl"] == "vc:0: the BMS allows 22.5 A"
    assert bank["reasons"]["dcl"] == "vc:0: the BMS allows 31 A"
    assert bank["cvl"] == pytest.approx(54.0)
    assert bank["reasons"]["cvl"] == "vc:0: the BMSs of its string allow 54.00 V"


def test_the_byd_captures_limits_in_the_banks_reasons():
    family, parts = decode(BYD, cells=16)
    bank = bank_with(checked(family.state(parts)), max_charge_current=200.0,
                     max_discharge_current=200.0)  # fmt: skip
    assert bank["ccl"] == pytest.approx(128.0)
    assert bank["reasons"]["ccl"] == "vc:0: the BMS allows 128 A"
