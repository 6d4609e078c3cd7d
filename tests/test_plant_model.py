"""The plant's electrical model on its own: cells, BMS, bus solution, chargers and inverter."""

from __future__ import annotations

import random

import pytest

from bmsbank.plant.model import (
    BALANCE_A,
    Bank,
    Ess,
    LoadSchedule,
    Pack,
    String,
    ocv,
    soc_at_ocv,
)
from bmsbank.schema import validate_state
from bmsbank.state import make_state


def pack(soc: float = 85.0, seed: int = 1, high_cell_mv: float = 0.0) -> Pack:
    return Pack.build(random.Random(seed), 16, 280.0, soc, high_cell_mv)


def two_strings(soc1: float = 85.0, soc2: float = 85.0) -> Bank:
    bank = Bank([String([pack(soc1, 1)]), String([pack(soc2, 2)])])
    bank.refresh()
    return bank


# --- open-circuit voltage -------------------------------------------------------------------


def test_ocv_is_strictly_increasing_everywhere():
    socs = [k / 20 for k in range(-40, 2041)]  # -2 % .. 102 % in 0.05 % steps
    volts = [ocv(s) for s in socs]
    assert all(b > a for a, b in zip(volts, volts[1:], strict=False))


def test_ocv_flat_middle_and_knees():
    assert 3.24 <= ocv(20) and ocv(80) <= 3.34
    middle_slope = (ocv(80) - ocv(20)) / 60  # V per %
    top_slope = (ocv(99.6) - ocv(99.0)) / 0.6
    assert middle_slope < 0.002
    assert top_slope > 100 * middle_slope
    assert ocv(99.0) == pytest.approx(3.45)
    assert ocv(99.6) == pytest.approx(3.60)
    assert ocv(100.0) >= 3.65
    assert ocv(5.0) - ocv(0.0) > 0.4  # low knee
    assert ocv(101.0) == pytest.approx(ocv(100.0) + 0.5)  # over-charge stays visible


def test_soc_at_ocv_inverts_ocv():
    for soc in (-1.0, 3.0, 50.0, 97.3, 99.5, 100.0, 100.4):
        assert soc_at_ocv(ocv(soc)) == pytest.approx(soc)


# --- packs ----------------------------------------------------------------------------------


def test_build_is_seeded_and_top_balanced():
    a, b = pack(seed=7), pack(seed=7)
    assert [c.charge_ah for c in a.cells] == [c.charge_ah for c in b.cells]
    missing = {round(c.capacity_ah - c.charge_ah, 9) for c in a.cells}
    assert missing == {round(0.15 * 280.0, 9)}  # every cell 15 % of nominal below full
    assert len({c.capacity_ah for c in a.cells}) == 16  # but capacities spread


def test_high_cell_sits_the_set_voltage_above_at_the_top():
    even, high = pack(soc=99.0), pack(soc=99.0, high_cell_mv=50.0)  # same seed: same cells
    extra = high.cells[0].soc - even.cells[0].soc
    assert extra == pytest.approx(0.28)  # % of charge between 3.45 V and 3.50 V
    assert ocv(soc_at_ocv(3.45) + extra) == pytest.approx(3.50)  # measured at the top
    assert [c.charge_ah for c in high.cells[1:]] == [c.charge_ah for c in even.cells[1:]]


def test_state_message_from_pack_fields_is_valid():
    p = pack()
    p.set_current(42.0)
    msg = make_state("sim", 1, "sim", 0, p.fields(), {}, mono=0.0, wall=1.7e9)
    validate_state(msg)
    assert msg["current"] == 42.0
    assert msg["cells"] == [round(v, 3) for v in p.terminal_v]
    assert msg["voltage"] == pytest.approx(sum(p.terminal_v) + 42.0 * p.cable_ohm, abs=0.01)
    assert msg["alarms"] == {}


def test_cell_voltage_includes_ir_drop_and_grows_in_the_cold():
    p = pack(soc=50.0)
    p.set_current(100.0)
    warm = p.terminal_v[3] - p._ocv[3]
    assert warm == pytest.approx(100.0 * p.cells[3].r25_ohm)
    p.temperature_c = 5.0
    p.refresh()
    p.set_current(100.0)
    assert p.terminal_v[3] - p._ocv[3] == pytest.approx(1.6 * warm)  # +3 %/°C below 25 °C


def test_bms_trips_charge_at_3v65_and_releases_below_3v55():
    p = pack(soc=99.4)  # cells at ~3.53 V open circuit
    p.set_current(100.0)
    assert max(p.terminal_v) < 3.65
    assert not p.protect()
    p.set_current(300.0)
    assert max(p.terminal_v) >= 3.65
    assert p.protect()
    assert not p.charge_fet and p.discharge_fet and p.tripped
    assert p.fields()["alarms"] == {"high_cell_voltage": 2}
    p.set_current(0.0)  # ~3.53 V at rest: below the release voltage
    assert p.protect()
    assert p.charge_fet and p.fields()["alarms"] == {}
    assert p.tripped  # remembered


def test_bms_hysteresis_keeps_charge_open_above_3v55():
    p = pack(soc=99.7)  # ~3.615 V open circuit
    p.set_current(200.0)
    assert p.protect() and not p.charge_fet
    p.set_current(-1.0)  # back near 3.61 V: still above the release voltage
    assert not p.protect() and not p.charge_fet
    assert p.fields()["alarms"] == {"high_cell_voltage": 2}


def test_bms_trips_discharge_at_2v6():
    p = pack(soc=1.0)
    p.set_current(-100.0)
    assert min(p.terminal_v) <= 2.6
    assert p.protect()
    assert not p.discharge_fet and p.charge_fet
    assert p.fields()["alarms"] == {"low_cell_voltage": 2}


def test_balancer_bleeds_only_the_high_cell_at_the_top():
    p = pack(soc=99.0, high_cell_mv=50.0)
    before = [c.charge_ah for c in p.cells]
    for _ in range(601):
        p.refresh()
        p.set_current(0.0)
        p.step(1.0)
    assert p.fields()["balancing"] == [1] + [0] * 15
    after = [c.charge_ah for c in p.cells]
    assert before[0] - after[0] == pytest.approx(BALANCE_A * 600 / 3600)
    assert after[1:] == before[1:]
    p.refresh()
    assert p._ocv[0] < ocv(before[0] / p.cells[0].capacity_ah * 100)


def test_balancer_idle_below_3v40():
    p = pack(soc=90.0, high_cell_mv=50.0)
    p.set_current(0.0)
    p.step(1.0)
    assert not any(p.bleed)


# --- bus solution ---------------------------------------------------------------------------


@pytest.mark.parametrize("amps", [-250.0, -40.0, 0.0, 3.0, 120.0])
def test_bus_voltage_conserves_current(amps):
    bank = two_strings(60.0, 90.0)
    volts = bank.voltage_at(amps)
    assert bank.current_at(volts) == pytest.approx(amps, abs=1e-9)
    bank.apply(volts)
    assert sum(s.packs[0].current_a for s in bank.strings) == pytest.approx(amps, abs=1e-9)


def test_bus_voltage_is_closed_form_for_free_strings():
    bank = two_strings()
    (a, b) = bank.strings
    g = 1 / a.r_ohm + 1 / b.r_ohm
    expected = (100.0 + a.emf_v / a.r_ohm + b.emf_v / b.r_ohm) / g
    assert bank.voltage_at(100.0) == pytest.approx(expected)


def test_string_with_open_charge_fet_takes_no_charge():
    bank = two_strings(90.0, 60.0)
    blocked, free = bank.strings
    blocked.packs[0].charge_fet = False
    volts = bank.voltage_at(100.0)
    assert blocked.current_at(volts) == 0.0
    assert free.current_at(volts) == pytest.approx(100.0)
    assert bank.current_at(volts) == pytest.approx(100.0)
    # the body diode still lets it discharge
    volts = bank.voltage_at(-300.0)
    assert blocked.current_at(volts) < 0
    assert bank.current_at(volts) == pytest.approx(-300.0)


def test_string_with_open_discharge_fet_takes_no_discharge():
    bank = two_strings()
    blocked, free = bank.strings
    blocked.packs[0].discharge_fet = False
    volts = bank.voltage_at(-80.0)
    assert blocked.current_at(volts) == 0.0
    assert free.current_at(volts) == pytest.approx(-80.0)


def test_fully_blocked_bank_is_out_of_reach():
    bank = two_strings()
    for s in bank.strings:
        s.packs[0].charge_fet = False
    assert bank.current_range() == (float("-inf"), 0.0)
    assert bank.voltage_at(10.0) == float("inf")
    assert bank.current_at(bank.voltage_at(0.0)) == 0.0


# --- chargers and inverter ------------------------------------------------------------------


def emf(bank: Bank) -> float:
    return bank.voltage_at(0.0)


def test_below_cvl_the_battery_takes_the_pv_surplus():
    bank = two_strings()
    op = Ess().solve(bank, (emf(bank) + 5.0, 200.0, 200.0), pv_w=3300.0, load_w=300.0)
    assert op.battery_a * op.bus_v == pytest.approx(3000.0, rel=1e-6)
    assert op.bus_v < emf(bank) + 5.0
    assert op.feed_w == 0.0 and op.curtailed_w == pytest.approx(0.0, abs=1e-3)


def test_ccl_caps_the_chargers_and_curtails_the_rest():
    bank = two_strings()
    op = Ess().solve(bank, (emf(bank) + 5.0, 50.0, 200.0), pv_w=8300.0, load_w=300.0)
    assert op.battery_a == pytest.approx(50.0)
    assert op.curtailed_w == pytest.approx(8000.0 - 50.0 * op.bus_v)
    op = Ess().solve(bank, (emf(bank) + 5.0, 0.0, 200.0), pv_w=8300.0, load_w=300.0)
    assert op.battery_a == 0.0 and op.curtailed_w == pytest.approx(8000.0)


def test_discharge_is_capped_at_dcl():
    bank = two_strings()
    op = Ess().solve(bank, (emf(bank) + 5.0, 100.0, 20.0), pv_w=0.0, load_w=3000.0)
    assert op.battery_a == pytest.approx(-20.0)
    assert op.feed_w == 0.0


def test_inverter_holds_the_bus_at_cvl_while_feed_in_suffices():
    bank = two_strings()
    cvl = emf(bank) + 0.2
    op = Ess(feed_max_w=10000.0).solve(bank, (cvl, 100.0, 200.0), pv_w=8300.0, load_w=300.0)
    assert op.bus_v == pytest.approx(cvl)
    assert op.battery_a == pytest.approx(bank.current_at(cvl))
    assert 0 < op.battery_a < 100.0
    # the chargers deliver CCL (100 A); what the battery does not take goes to the grid
    assert op.feed_w == pytest.approx(100.0 * bank.voltage_at(100.0) - op.battery_a * cvl)
    assert op.drained_w == 0.0


def test_cvl_below_ocv_drains_the_battery_into_the_grid():
    bank = two_strings()
    cvl = emf(bank) - 0.2
    op = Ess(feed_max_w=10000.0).solve(bank, (cvl, 100.0, 200.0), pv_w=8300.0, load_w=300.0)
    assert op.bus_v == pytest.approx(cvl)
    assert op.battery_a == pytest.approx(bank.current_at(cvl))
    assert op.battery_a < -30.0
    assert op.drained_w == pytest.approx(-op.battery_a * cvl)
    assert op.feed_w == pytest.approx(100.0 * bank.voltage_at(100.0) - op.battery_a * cvl)
    # no PV at all: still drained, limited by DCL
    op = Ess(feed_max_w=10000.0).solve(bank, (cvl, 100.0, 10.0), pv_w=0.0, load_w=0.0)
    assert op.battery_a == pytest.approx(-10.0)
    assert op.drained_w == pytest.approx(10.0 * op.bus_v)


def test_mppt_caps_the_bus_at_cvl_plus_0v4_when_feed_in_is_short():
    bank = two_strings()
    cvl = emf(bank) + 0.1
    ess = Ess(feed_max_w=500.0)
    op = ess.solve(bank, (cvl, 150.0, 200.0), pv_w=8300.0, load_w=300.0)
    assert op.bus_v == pytest.approx(cvl + 0.4)
    assert op.battery_a == pytest.approx(bank.current_at(cvl + 0.4))
    assert op.feed_w == pytest.approx(500.0)
    assert op.curtailed_w == pytest.approx(8000.0 - op.battery_a * op.bus_v - 500.0)
    assert op.curtailed_w > 1000.0


def test_short_feed_in_raises_the_bus_between_cvl_and_the_mppt_cap():
    bank = two_strings()
    cvl = emf(bank) + 0.1
    op = Ess(feed_max_w=500.0).solve(bank, (cvl, 150.0, 200.0), pv_w=3300.0, load_w=300.0)
    assert cvl < op.bus_v < cvl + 0.4
    assert op.feed_w == pytest.approx(500.0)
    assert op.battery_a * op.bus_v == pytest.approx(2500.0, rel=1e-6)
    assert op.curtailed_w == pytest.approx(0.0, abs=1e-3)


def test_no_limits_means_no_battery_current():
    bank = two_strings()
    op = Ess().solve(bank, None, pv_w=5000.0, load_w=300.0)
    assert op.battery_a == 0.0 and op.feed_w == 0.0
    assert op.curtailed_w == pytest.approx(4700.0)


# --- loads ----------------------------------------------------------------------------------


def test_load_schedule_is_seeded_with_sizeable_bursts():
    a = LoadSchedule.seeded(random.Random(3), 7200.0)
    b = LoadSchedule.seeded(random.Random(3), 7200.0)
    assert a == b
    assert len(a.bursts) >= 6
    start, end, watts = a.bursts[0]
    assert 120.0 <= end - start <= 300.0 and 2400.0 <= watts <= 3600.0
    assert a.power_at(start) == pytest.approx(300.0 + watts)
    assert a.power_at(end) == 300.0
