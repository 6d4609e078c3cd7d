"""CAN output bookkeeping: frame rates, force charge, energy counters, stale data (fake clocks).

The real-bus side (slcan over pseudo-terminals, keep-alive, recovery, a running publisher) is in
tests/test_can_bus.py.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections import Counter

import cantools
import pytest

from bmsbank.config import CanConfig, Config
from bmsbank.services.publisher import canbms, paths
from bmsbank.services.publisher.can_output import (
    FAST_PERIOD,
    SLOW_IDS,
    SLOW_PERIOD,
    CanOutput,
    ForceCharge,
)
from bmsbank.services.publisher.energy import ROLLOVER_WH, EnergyCounter, EnergyFile
from tests.test_publisher_paths import make_bank

DB = cantools.database.load_file(canbms.DBC, strict=True)
FAST_IDS = {0x351, 0x355, 0x356, 0x35A, 0x372, 0x373, 0x374, 0x375, 0x376, 0x377}


def output(tmp_path=None, **can) -> CanOutput:
    energy_file = str(tmp_path / "energy.json") if tmp_path is not None else ""
    return CanOutput(CanConfig(enabled=True, energy_file=energy_file, **can))


# ---- ForceCharge --------------------------------------------------------------------------------


def test_force_charge_off_by_default_never_requests():
    rule = ForceCharge(CanConfig().force_charge_soc, 0.0, 30.0)
    assert not rule.enabled
    assert not any(rule.update(0.0, t) for t in range(0, 100_000, 1000))


def test_force_charge_after_the_soc_stayed_low_long_enough():
    rule = ForceCharge(soc=10.0, after=3600.0, release=30.0)
    assert rule.update(9.0, 0.0) is False
    assert rule.update(8.0, 3599.0) is False
    assert rule.update(8.0, 3600.0) is True


def test_force_charge_wait_restarts_when_the_soc_comes_back_up():
    rule = ForceCharge(soc=10.0, after=3600.0, release=30.0)
    rule.update(9.0, 0.0)
    rule.update(10.0, 3000.0)  # at the threshold is not below it: the wait starts over
    assert rule.update(9.0, 3100.0) is False
    assert rule.update(9.0, 6699.0) is False
    assert rule.update(9.0, 6700.0) is True


def test_force_charge_hysteresis_ends_at_release_only():
    rule = ForceCharge(soc=10.0, after=60.0, release=30.0)
    rule.update(5.0, 0.0)
    assert rule.update(5.0, 60.0) is True
    for t, soc in enumerate((10.0, 15.0, 29.9, 12.0), start=61):
        assert rule.update(soc, float(t)) is True, soc  # between the two thresholds: held
    assert rule.update(30.0, 70.0) is False
    assert rule.update(25.0, 71.0) is False  # above soc again: no new request
    assert rule.update(9.0, 72.0) is False  # below: a new wait of `after` seconds
    assert rule.update(9.0, 131.0) is False
    assert rule.update(9.0, 132.0) is True


@pytest.mark.parametrize("unknown", [None, float("nan"), "x", True])
def test_force_charge_unknown_soc_ends_the_request_and_the_wait(unknown):
    rule = ForceCharge(soc=10.0, after=60.0, release=30.0)
    rule.update(5.0, 0.0)
    assert rule.update(5.0, 60.0) is True
    assert rule.update(unknown, 61.0) is False
    assert rule.update(5.0, 62.0) is False
    assert rule.update(5.0, 121.0) is False
    assert rule.update(5.0, 122.0) is True


def test_force_charge_logs_once_per_change(caplog):
    caplog.set_level(logging.INFO, logger="bmsbank.services.publisher.can_output")
    rule = ForceCharge(soc=10.0, after=0.0, release=30.0)
    for t in range(5):
        rule.update(5.0, float(t))
    for t in range(5, 10):
        rule.update(50.0, float(t))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("force charge requested") and "ended" in messages[1]


def test_0x360_follows_the_rule_in_can_output():
    out = output(force_charge_soc=20.0, force_charge_after=10.0, force_charge_release=40.0)
    low, high = make_bank(soc=15.0), make_bank(soc=45.0)
    assert dict(out.update(low, 0.0))[0x360] == bytes(8)
    assert dict(out.update(low, 10.0))[0x360] == b"\xff" + bytes(7)
    assert dict(out.update(make_bank(soc=35.0), 11.0))[0x360][0] == 0xFF
    assert dict(out.update(high, 12.0))[0x360] == bytes(8)
    assert 0x360 not in dict(output().update(low, 0.0))  # rule off: no 0x360 at all


# ---- EnergyCounter ------------------------------------------------------------------------------


def banks(powers, start=100.0, step=1.0, voltage=50.0):
    """Bank-like messages 1 s apart with the given powers [W] (current = power / voltage)."""
    return [{"mono": start + k * step, "voltage": voltage, "current": p / voltage}
            for k, p in enumerate(powers)]  # fmt: skip


def test_energy_integrates_charge_and_discharge_separately():
    counter = EnergyCounter()
    for bank in banks([3600.0] * 11):  # 3.6 kW for 10 s = 10 Wh
        counter.add(bank)
    for bank in banks([-1800.0] * 21, start=200.0):  # 1.8 kW out for 20 s = 10 Wh
        counter.add(bank)
    assert counter.energy_in == pytest.approx(10.0)
    assert counter.energy_out == pytest.approx(10.0)


def test_energy_trapezoid_splits_at_the_zero_crossing():
    counter = EnergyCounter()
    for bank in banks([3600.0, -3600.0]):  # a straight line through 0 W at 0.5 s
        counter.add(bank)
    assert counter.totals == (pytest.approx(0.25), pytest.approx(0.25))
    counter = EnergyCounter()
    for bank in banks([-3600.0, 7200.0], step=3.0):  # crosses zero at 1 s of 3 s
        counter.add(bank)
    assert counter.totals == (pytest.approx(2.0), pytest.approx(0.5))


def test_energy_keeps_fractions_between_100_wh_steps():
    counter = EnergyCounter()
    for bank in banks([360.0] * 991):  # 0.1 Wh a second for 990 s = 99 Wh
        counter.add(bank)
    assert canbms.energy_units(counter.energy_in) == 0
    for bank in banks([360.0] * 21, start=1090.0):  # 2 Wh more: 101 Wh, not lost below 100
        counter.add(bank)
    assert counter.energy_in == pytest.approx(101.0)
    assert canbms.energy_units(counter.energy_in) == 1


@pytest.mark.parametrize(
    ("second", "why"),
    [
        ({"mono": 106.0, "voltage": 50.0, "current": 10.0}, "gap longer than max_gap"),
        ({"mono": 99.0, "voltage": 50.0, "current": 10.0}, "the clock went back"),
        ({"mono": 101.0, "voltage": None, "current": 10.0}, "unknown voltage"),
        ({"mono": 101.0, "voltage": 50.0, "current": float("nan")}, "unknown current"),
        ({"voltage": 50.0, "current": 10.0}, "no mono"),
    ],
)
def test_energy_never_integrates_over_a_gap_or_unknowns(second, why):
    counter = EnergyCounter(max_gap=5.0)
    counter.add({"mono": 100.0, "voltage": 50.0, "current": 10.0})
    counter.add(second)
    assert counter.totals == (0.0, 0.0), why
    assert counter.skipped == 1


def test_energy_after_a_stall_starts_again_from_the_next_bank():
    counter = EnergyCounter(max_gap=5.0)
    sequence = [
        {"mono": 100.0, "voltage": 50.0, "current": 72.0},
        {"mono": 101.0, "voltage": None, "current": None},  # the safe bank
        {"mono": 130.0, "voltage": 50.0, "current": 72.0},  # data back
        {"mono": 131.0, "voltage": 50.0, "current": 72.0},
        {"mono": 131.0, "voltage": 50.0, "current": 72.0},  # the same bank twice
    ]
    for bank in sequence:
        counter.add(bank)
    assert counter.energy_in == pytest.approx(1.0)  # only 130 -> 131 s at 3600 W


def test_energy_rolls_over_to_zero():
    counter = EnergyCounter(energy_in=ROLLOVER_WH - 50.0)
    assert canbms.energy_units(counter.energy_in) == 2**32 - 1
    for bank in banks([3600.0] * 101):  # 100 Wh more
        counter.add(bank)
    assert counter.energy_in == pytest.approx(50.0)
    assert canbms.energy_units(counter.energy_in) == 0
    assert EnergyCounter(energy_out=ROLLOVER_WH + 250.0).energy_out == pytest.approx(250.0)


# ---- EnergyFile ---------------------------------------------------------------------------------


def test_energy_file_round_trip_atomic(tmp_path):
    path = tmp_path / "sub" / "energy.json"
    store = EnergyFile(str(path))
    assert store.load() == (0.0, 0.0)  # no file yet
    assert store.save((1234.56, 78.9))
    assert os.listdir(path.parent) == ["energy.json"]  # the temporary file was renamed
    assert json.loads(path.read_text())["energy_in_wh"] == 1234.56
    assert EnergyFile(str(path)).load() == (1234.56, 78.9)


def test_energy_file_empty_path_keeps_nothing(tmp_path):
    store = EnergyFile("")
    assert store.save((1.0, 2.0)) is False and store.load() == (0.0, 0.0)


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"energy_in_wh": 5}', '{"energy_in_wh": -1, "energy_out_wh": 0}',
     '{"energy_in_wh": "a", "energy_out_wh": 0}', "[1, 2]"],
)  # fmt: skip
def test_energy_file_unreadable_warns_and_counts_from_zero(tmp_path, caplog, content):
    path = tmp_path / "energy.json"
    path.write_text(content)
    assert EnergyFile(str(path)).load() == (0.0, 0.0)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "unreadable" in warnings[0].getMessage()


def test_energy_file_write_error_warns_once(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = EnergyFile(str(blocker / "energy.json"))  # its directory is a file
    assert store.save((1.0, 1.0)) is False
    assert store.save((2.0, 2.0)) is False
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_can_output_persists_energy_across_restarts(tmp_path):
    out = output(tmp_path)
    for bank in banks([3600.0] * 3601):  # one hour at 3.6 kW: 3600 Wh
        out.update(make_bank(**bank), 0.0)
    assert struct.unpack("<2I", dict(out.frames)[0x378]) == (36, 0)
    assert out.save()
    again = output(tmp_path)
    assert again.energy.energy_in == pytest.approx(3600.0)
    frame = dict(again.update(make_bank(mono=1.0), 0.0))[0x378]
    assert DB.decode_message(0x378, frame) == {"EnergyIn": 3600, "EnergyOut": 0}


def test_can_output_saves_every_minute(tmp_path):
    out = output(tmp_path)
    saves = [t for t in range(0, 181) if out.save_due(float(t))]
    assert saves == [60, 120, 180]
    assert not any(output().save_due(float(t)) for t in range(200))  # not kept: never


# ---- CanOutput schedule -------------------------------------------------------------------------


def run_ticks(out, seconds, bank_at=lambda t: make_bank(), jitter=0.0):
    """Drive ``out`` like the publisher: a bank and a tick each second; count frames per id."""
    counts: Counter[int] = Counter()
    for k in range(seconds):
        now = 1000.0 + k + (jitter if k % 2 else -jitter)
        out.update(bank_at(k), now)
        counts.update(can_id for can_id, _ in out.due(now))
    return counts


def test_rates_fast_every_second_slow_every_ten(caplog):
    out = output()
    counts = run_ticks(out, 30, jitter=0.2)
    sent = {i for i, _ in out.frames}
    assert sent == FAST_IDS | {0x35E, 0x35F, 0x370, 0x371, 0x378, 0x379, 0x380, 0x381, 0x382}
    for can_id in sent:
        expected = 30 if can_id in FAST_IDS else 3  # at 0, 10 and 20 s
        assert counts[can_id] == expected, hex(can_id)
    assert FAST_PERIOD == 1.0 and SLOW_PERIOD == 10.0


def test_first_tick_sends_everything_in_order():
    out = output()
    out.update(make_bank(), 0.0)
    first = out.due(0.0)
    assert first == out.frames and first[0][0] == 0x351
    assert [i for i, _ in out.due(0.0)] == []  # nothing is due twice in one tick


def test_a_changed_slow_frame_goes_out_at_the_next_tick():
    out = output()
    out.update(make_bank(capacity=560.0), 0.0)
    out.due(0.0)
    out.update(make_bank(capacity=280.0), 1.0)  # a pack went offline: 0x35F changes
    ids = [i for i, _ in out.due(1.0)]
    assert 0x35F in ids and 0x379 not in ids and 0x35E not in ids
    assert struct.unpack("<H", dict(out.frames)[0x35F][4:6]) == (280,)


def test_pairs_go_out_together_first_one_first():
    out = output()
    out.update(make_bank(name="north_shed_1"), 0.0)
    out.due(0.0)
    out.update(make_bank(name="north_shed_2"), 1.0)  # serial "north_sh" + "ed_2": 0x381 only
    ids = [i for i, _ in out.due(1.0)]
    assert ids.index(0x380) < ids.index(0x381)  # 0x380 unchanged, sent again before it
    assert 0x370 not in ids and 0x371 not in ids  # the name is cut to "bmsbank north_sh"
    out.resend_all()
    out.due(2.0)
    out.update(make_bank(name="south"), 3.0)  # 0x371 changes: " south" -> 0x370 goes with it
    ids = [i for i, _ in out.due(3.0)]
    assert ids.index(0x370) < ids.index(0x371)


def test_resend_all_after_a_failed_send():
    out = output()
    out.update(make_bank(), 0.0)
    out.due(0.0)
    out.resend_all()
    assert out.due(1.0) == out.frames


def test_values_equal_the_bank_message():
    out = output()
    bank = make_bank(soh=93.0)
    out.update(bank, 0.0)
    d = {i: DB.decode_message(i, data, decode_choices=False) for i, data in out.due(0.0)}
    assert d[0x351]["ChargeCurrentLimit"] == pytest.approx(bank["ccl"])
    assert d[0x355]["SoH"] == 93 and d[0x355]["SoCHighRes"] == pytest.approx(bank["soc"], 0.01)
    assert d[0x356]["BatteryCurrent"] == pytest.approx(bank["current"], abs=0.05)
    assert d[0x372]["ModulesOffline"] == bank["offline"]


# ---- stale bank data ----------------------------------------------------------------------------


def stale_run(on_stale):
    out = output(on_stale=on_stale)
    last = make_bank(ccl=100.0, dcl=200.0, cvl=55.2)
    safe = paths.safe_bank(last, Config(), "no bank data for 10 s")
    plan = [(last, False)] * 12 + [(safe, True)] * 12 + [(last, False)] * 3
    ticks = []
    for k, (bank, stale) in enumerate(plan):
        out.update(bank, float(k), stale=stale)
        ticks.append(dict(out.due(float(k))))
    return ticks


def test_on_stale_safe_keeps_sending_the_safe_state():
    ticks = stale_run("safe")
    for tick in ticks[12:24]:
        assert struct.unpack("<4H", tick[0x351])[:3] == (552, 0, 0)  # last CVL, CCL = DCL = 0
        assert (tick[0x35A][2] >> 6) & 0b11 == 0b01  # BMS internal alarm: bms_cable
    assert struct.unpack("<4H", ticks[24][0x351])[:3] == (552, 1000, 2000)
    assert set(ticks[24]) == FAST_IDS  # nothing vanished, so no resend of the slow ones


def test_on_stale_silent_sends_nothing_then_everything():
    ticks = stale_run("silent")
    assert all(tick == {} for tick in ticks[12:24])
    back = ticks[24]  # the first tick with data again: every frame, the GX lost the battery
    assert set(back) == FAST_IDS | SLOW_IDS
    assert struct.unpack("<4H", back[0x351])[:3] == (552, 1000, 2000)
    assert set(ticks[25]) == FAST_IDS


def test_on_stale_silent_with_the_publishers_empty_bank():
    # stale before any bank: the safe bank of "nothing known yet" is not sent either
    out = output(on_stale="silent")
    out.update(paths.safe_bank(None, Config(), "no bank yet"), 0.0, stale=True)
    assert out.due(0.0) == [] and out.silent
