"""The bank engine's behaviour: topology, charge states, cell protection, current limits, pack loss.

Driven through :class:`BankEngine` with engine time from the test (no wall clock), on whichever
implementation this run uses (the suite runs once compiled and once with ``BMSBANK_PURE=1``).
"""

from __future__ import annotations

import json
import math
import time

import pytest

from bmsbank.errors import ConfigError
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.services.arbiter.persist import StateFile
from tests.factories import state_msg

FLOAT_CVL = 16 * 3.375
BULK_CVL = 16 * 3.45
STEP = 16 * 0.003 * 20 / 60  # default CVL ramp per 20 s step [V]


def make(ids=("a:1", "a:2"), cells=16, capacity=100.0, **bank) -> BankEngine:
    """An engine whose cuts act at once (the rules under test; confirmation: test_plausibility)."""
    packs = {pid: {"cells": cells, "capacity": capacity} for pid in ids}
    bank = {"stale_after": 10.0, "packs": packs, "confirm_states": 1, **bank}
    return BankEngine.from_mapping(bank, "test")


def send(e: BankEngine, t: float, pid: str, **fields) -> None:
    port, addr = pid.split(":")
    assert e.accept(state_msg(port, int(addr), seq=int(t * 10), **fields), t), pid


def cycle(e: BankEngine, t: float, packs=None, **fields) -> dict:
    """Every pack in ``packs`` (default: all) reports ``fields``, then the engine runs at ``t``."""
    for pid in e.topo.ids if packs is None else packs:
        send(e, t, pid, **fields)
    return e.tick(t)


def cells(high=3.30, n=16, rest=3.30):
    return [rest] * (n - 1) + [high]


# ---- topology -----------------------------------------------------------------------------------


def test_series_parallel_voltages_add_and_limits_take_the_weakest_member():
    e = make(("a:1", "a:2", "a:3", "a:4"), cells=8, strings=[["a:1", "a:2"], ["a:3", "a:4"]])
    for pid, current, bms_ccl in (("a:1", 10, None), ("a:2", 10, 20.0), ("a:3", 12, None),
                                  ("a:4", 12, None)):  # fmt: skip
        send(e, 0.0, pid, cells=[3.30] * 8, voltage=26.4, current=current, bms_ccl=bms_ccl)
    out = e.tick(0.0)
    assert out["cells"] == 16 and out["cvl"] == pytest.approx(BULK_CVL)
    assert out["voltage"] == pytest.approx(52.8)  # each string 2 x 26.4 V
    assert out["current"] == pytest.approx(22.0)  # string currents add, members' are one current
    # string 1 is limited to 20 A by a:2's BMS; by capacity each string takes half: bank 40 A
    assert out["ccl"] == pytest.approx(40.0)
    assert e.reasons(out)["ccl"].startswith("a:2: the BMS allows 20 A; string share 50%")
    assert out["dcl"] == pytest.approx(200.0)


@pytest.mark.parametrize(("share", "expected"), [("capacity", 10.0 / 0.25), ("count", 20.0)])
def test_parallel_share_never_exceeds_the_most_loaded_pack(share, expected):
    e = make(share=share, packs={"a:1": {"capacity": 100}, "a:2": {"capacity": 300}})
    send(e, 0.0, "a:1", bms_ccl=10.0, capacity=100.0)
    send(e, 0.0, "a:2", capacity=300.0)
    assert e.tick(0.0)["ccl"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("bank", "key", "words"),
    [
        ({"strings": [["a:1", "a:2"]],
          "packs": {"a:1": {"capacity": 100}, "a:2": {"capacity": 200}}},
         "bank.strings[0]", "one capacity in series"),
        ({"strings": [["a:1"], ["a:2", "a:3"]],
          "packs": {"a:1": {"cells": 16}, "a:2": {"cells": 16}, "a:3": {"cells": 16}}},
         "bank.strings", "same number of cells"),
        ({"strings": [["a:1"], ["a:1"]]}, "bank.strings", "one string only"),
        ({"packs": {"a:1": {"cells": 0}}}, 'bank.packs."a:1".cells', "1-64"),
        ({"packs": {"a:1": {"colour": "red"}}}, 'bank.packs."a:1".colour', "unknown key"),
        ({"packs": {"a:1": {"chemistry": "NMC"}}}, 'bank.packs."a:1".chemistry', "LiFePO4"),
        ({"ccl_cell_table": [[3.5, 0.0], [3.4, 1.0]]}, "bank.ccl_cell_table", "ascending"),
        ({"charge_window": [50, 5]}, "bank.charge_window", "[lowest, highest]"),
        ({"cell_float_voltage": 3.5}, "bank.cell_float_voltage", "at most cell_charge_voltage"),
        ({"soc_reset_voltage": 3.4}, "bank.soc_reset_voltage", "at least cell_charge_voltage"),
    ],
    ids=["mixed-capacity-series", "mixed-cells-parallel", "pack-twice", "zero-cells",
         "unknown-pack-key", "chemistry", "unsorted-table", "window", "float-above-charge",
         "reset-below-charge"],
)  # fmt: skip
def test_bad_topology_is_a_config_error_naming_the_key(bank, key, words):
    with pytest.raises(ConfigError) as err:
        BankEngine.from_mapping(bank, "bank.toml")
    assert err.value.key == key and "bank.toml" in str(err.value) and words in str(err.value)


def test_mixed_capacity_in_series_can_be_allowed_explicitly():
    packs = {"a:1": {"capacity": 100}, "a:2": {"capacity": 200}}
    e = BankEngine.from_mapping(
        {"strings": [["a:1", "a:2"]], "packs": packs, "allow_mixed_capacity": True}
    )
    assert e.topo.strings == ((0, 1),)


# ---- charge voltage: states ---------------------------------------------------------------------


def test_bulk_absorption_float_and_the_slow_ramp_down():
    e = make(absorption_time=100.0)
    assert cycle(e, 0.0, current=20.0)["charge_state"] == "bulk"
    out = cycle(e, 10.0, cells=[3.445] * 16, current=5.0)  # the bank reached its charge voltage
    assert out["charge_state"] == "absorption" and out["cvl"] == pytest.approx(BULK_CVL)
    assert cycle(e, 109.0, cells=[3.445] * 16, current=2.0)["charge_state"] == "absorption"
    out = cycle(e, 110.0, cells=[3.445] * 16, current=2.0)
    assert out["charge_state"] == "float" and out["since_full"] == 0.0
    changes, last, t = [], out["cvl"], 110.0
    while t < 2000.0:
        t += 1.0
        out = cycle(e, t, cells=[3.36] * 16, current=0.0, soc=98.0)
        if out["cvl"] != last:
            changes.append((t, last - out["cvl"]))
            last = out["cvl"]
    assert out["cvl"] == pytest.approx(FLOAT_CVL) and out["charge_state"] == "float"
    gaps = [b[0] - a[0] for a, b in zip(changes, changes[1:], strict=False)]
    assert min(gaps) >= 20.0  # never more often than cvl_interval
    assert max(step for _, step in changes) == pytest.approx(STEP)  # and slowly
    assert "float" in e.reasons(out)["cvl"]


def test_float_goes_back_to_bulk_on_low_soc_or_a_growing_spread():
    e = make(absorption_time=10.0)
    cycle(e, 0.0, cells=[3.445] * 16)
    assert cycle(e, 11.0, cells=[3.445] * 16)["charge_state"] == "float"
    assert cycle(e, 20.0, soc=85.0)["charge_state"] == "float"
    assert cycle(e, 21.0, soc=79.0)["charge_state"] == "bulk"
    e = make(absorption_time=10.0)
    cycle(e, 0.0, cells=[3.445] * 16)
    cycle(e, 11.0, cells=[3.445] * 16)
    assert cycle(e, 20.0, soc=90.0, cells=cells(3.30, rest=3.21))["charge_state"] == "bulk"


def test_absorption_waits_for_balanced_cells_but_not_forever():
    e = make(absorption_time=10.0, absorption_limit=100.0)
    cycle(e, 0.0, cells=cells(3.445, rest=3.44))
    out = cycle(e, 50.0, cells=cells(3.449, rest=3.42))  # 29 mV spread: keep balancing
    assert out["charge_state"] == "absorption"
    assert cycle(e, 100.0, cells=cells(3.449, rest=3.42))["charge_state"] == "float"


def test_days_since_full_and_the_forced_full_charge():
    day = 86400.0
    e = make(absorption_time=10.0)  # parallel only: monthly
    cycle(e, 0.0, cells=[3.445] * 16)
    cycle(e, 11.0, cells=[3.445] * 16)
    out = cycle(e, 11.0 + 29 * day, soc=95.0)
    assert out["charge_state"] == "float" and out["since_full"] == pytest.approx(29 * day)
    out = cycle(e, 11.0 + 30 * day, soc=95.0)
    assert out["charge_state"] == "bulk" and out["full_due"]
    assert e.summary(out)["days_since_full"] == pytest.approx(30.0)
    series = make(("a:1", "a:2"), cells=8, strings=[["a:1", "a:2"]], absorption_time=10.0)
    cycle(series, 0.0, cells=[3.445] * 8)
    cycle(series, 11.0, cells=[3.445] * 8)
    assert cycle(series, 11.0 + 6 * day, soc=95.0, cells=[3.3] * 8)["charge_state"] == "float"
    assert cycle(series, 11.0 + 7 * day, soc=95.0, cells=[3.3] * 8)["charge_state"] == "bulk"


def test_soc_reset_cycle_charges_higher_once_then_returns():
    e = make(soc_reset_voltage=3.55, absorption_time=10.0)
    cycle(e, 0.0)  # bulk; the reset is due (never done)
    assert cycle(e, 1.0)["cvl"] == pytest.approx(16 * 3.55)
    out = cycle(e, 2.0, cells=[3.545] * 16)
    assert out["charge_state"] == "absorption"
    out = cycle(e, 3.0, cells=[3.55] * 16, current=0.5)
    assert e.native.snapshot()["since_reset"] == 0.0  # reached: done for soc_reset_days
    out = cycle(e, 30.0, cells=[3.50] * 16, current=0.5)
    assert out["cvl"] == pytest.approx(16 * 3.55 - STEP)  # back down slowly, no cut


# ---- charge voltage: cell over-voltage ----------------------------------------------------------


def test_a_high_cell_cuts_cvl_at_once_holds_then_ramps_slowly():
    e = make(ovp_hold=100.0)
    assert cycle(e, 0.0, cells=cells(3.40, rest=3.40), current=30.0)["cvl"] == BULK_CVL
    out = cycle(e, 1.0, cells=cells(3.47, rest=3.40), current=30.0)
    assert out["cvl"] == pytest.approx(15 * 3.40 + 3.47 - 0.02)  # sum of cells minus the excess
    assert e.reasons(out)["cvl"] == "a:1 cell 16 at 3.470 V over 3.450 V: cut to 54.45 V"
    cut = out["cvl"]
    for t in range(2, 101):  # cell back under the limit, but the hold is not over
        assert cycle(e, float(t), cells=cells(3.43, rest=3.40), current=1.0)["cvl"] == cut
    out = cycle(e, 101.0, cells=cells(3.445, rest=3.40), current=1.0)
    assert out["cvl"] == cut  # highest cell within ovp_release of the limit: stay
    assert "settles" in e.reasons(out)["cvl"]
    out = cycle(e, 102.0, cells=cells(3.43, rest=3.40), current=1.0)
    assert out["cvl"] == pytest.approx(cut + STEP)
    assert cycle(e, 110.0, cells=cells(3.43, rest=3.40))["cvl"] == pytest.approx(cut + STEP)
    assert cycle(e, 122.0, cells=cells(3.43, rest=3.40))["cvl"] == pytest.approx(cut + 2 * STEP)


def test_no_cut_when_the_bank_is_not_charging():
    e = make()
    out = cycle(e, 0.0, cells=cells(3.47, rest=3.40), current=0.5)  # a cut would only drain it
    assert out["cvl"] == BULK_CVL
    assert out["ccl"] > 0.0  # merely full: CCL is reduced by the cell table, never 0


def test_cvl_never_changes_faster_than_the_interval_except_to_protect_a_cell():
    e = make(ovp_hold=30.0)
    history = []
    for t in range(600):
        high = 3.40 + 0.06 * ((t // 97) % 2)  # a cell bouncing over and under the limit
        out = cycle(e, float(t), cells=cells(high, rest=3.40), current=20.0)
        history.append((float(t), out["cvl"], out["reasons"]["cvl"][0]))
    rises = [(t, v) for (t, v, _), (_, w, _) in zip(history[1:], history, strict=False) if v > w]
    assert rises and all(b[0] - a[0] >= 20.0 for a, b in zip(rises, rises[1:], strict=False))
    for (_, v, rule), (_, w, _) in zip(history[1:], history, strict=False):
        if v < w - STEP - 1e-9:
            assert rule == "cell_over"  # only a protecting cut may be large


# ---- current limits -----------------------------------------------------------------------------


def test_cold_pack_blocks_charge_with_its_reason_then_hold_and_ramp():
    e = make(current_hold=60.0, current_ramp=1.0)
    assert cycle(e, 0.0)["ccl"] == 100.0
    out = cycle(e, 5.0, packs=["a:1"], temperatures=[3.0])
    send(e, 5.0, "a:2")
    out = e.tick(5.0)
    assert out["ccl"] == 0.0 and out["blocking_charge"] == 1
    assert e.reasons(out)["ccl"] == "a:1 T1 at 3.0 °C below the charge window (5 to 50 °C): 0 A"
    assert out["dcl"] == 200.0
    for t in range(6, 65):  # warm again, but the cut holds
        assert cycle(e, float(t))["ccl"] == 0.0
    assert cycle(e, 65.0)["ccl"] == pytest.approx(2.0)  # 1 A/s per pack, 2 packs
    out = cycle(e, 79.0)
    assert out["ccl"] == pytest.approx(30.0) and "ramping up to 100.0 A" in e.reasons(out)["ccl"]
    assert cycle(e, 200.0)["ccl"] == 100.0


def test_any_pack_blocking_discharge_blocks_the_bank():
    e = make()
    send(e, 0.0, "a:1", discharge_fet=False)
    send(e, 0.0, "a:2")
    out = e.tick(0.0)
    assert out["dcl"] == 0.0 and out["ccl"] == 100.0 and out["blocking_discharge"] == 1
    assert e.reasons(out)["dcl"] == "a:1 discharge FET off: 0 A"


# ---- pack loss and bad data ---------------------------------------------------------------------


def test_unseen_pack_caps_cvl_blocks_absorption_and_rejoins_without_a_drop():
    e = make(("a:1", "a:2", "a:3"), absorption_time=1000.0)
    for t in range(0, 6):
        out = cycle(e, float(t), current=30.0)
    assert out["cvl"] == BULK_CVL and out["ccl"] == 150.0
    for t in range(6, 17):
        out = cycle(e, float(t), packs=["a:1", "a:2"], current=30.0)
    assert out["offline"] == 1 and out["unseen"]
    assert out["cvl"] == pytest.approx(FLOAT_CVL)  # at once: a:3 may still be charging
    assert out["ccl"] == pytest.approx(100.0)  # the packs still reporting, at once
    assert e.reasons(out)["cvl"].startswith("a:3 unseen")
    out = cycle(e, 40.0, packs=["a:1", "a:2"], cells=[3.445] * 16, current=5.0)
    assert out["charge_state"] == "bulk" and out["cvl"] == pytest.approx(FLOAT_CVL)
    for t in range(41, 61):  # a:3 is back; once it has stayed for cvl_interval ...
        assert cycle(e, float(t), current=20.0)["cvl"] <= FLOAT_CVL + STEP + 1e-9
    out = cycle(e, 61.0, current=20.0)  # ... CVL is back where it was before the loss, at once
    assert out["cvl"] == pytest.approx(BULK_CVL) and out["charge_state"] == "bulk"
    assert e.reasons(out)["cvl"] == "bulk: 16 cells x 3.450 V = 55.20 V"
    values = [cycle(e, float(t), current=20.0)["cvl"] for t in range(62, 200)]
    assert all(v == BULK_CVL for v in values)


def test_first_full_view_after_start_sets_the_limits_at_once():
    e = make()
    out = e.tick(0.0)
    # cells configured, nothing seen yet: the unseen cap, the safe state
    assert (out["cvl"], out["ccl"], out["dcl"]) == (FLOAT_CVL, 0.0, 0.0)
    send(e, 0.0, "a:1")
    out = e.tick(0.5)
    assert out["cvl"] == pytest.approx(FLOAT_CVL)  # a:2 not seen yet
    assert out["ccl"] == 50.0  # a:1 alone, at once: not a recovery from a cut
    out = cycle(e, 1.0)
    assert out["cvl"] == pytest.approx(BULK_CVL) and e.reasons(out)["cvl"].startswith("bulk:")
    assert out["ccl"] == 51.0  # a:2 joins: more current, on the ramp


def test_a_returning_parallel_pack_waits_until_its_voltage_is_close():
    e = make()
    cycle(e, 0.0, voltage=53.0)
    for t in range(1, 12):
        send(e, float(t), "a:1", voltage=53.0)
    assert e.tick(11.0)["offline"] == 1
    send(e, 12.0, "a:1", voltage=53.0)
    send(e, 12.0, "a:2", voltage=51.0)  # 2 V away: more than 16 x 0.05 V
    out = e.tick(12.0)
    assert out["online"] == 2 and out["waiting"] == 1 and not out["packs"][1][1]
    assert out["voltage"] == 53.0  # measured on the joined packs only
    send(e, 13.0, "a:1", voltage=53.0)
    send(e, 13.0, "a:2", voltage=52.5)
    out = e.tick(13.0)
    assert out["waiting"] == 0 and out["packs"][1][1]


def test_all_packs_lost_is_the_safe_state_within_stale_after():
    e = make(stale_after=5.0)
    cycle(e, 0.0)
    assert e.tick(5.0)["ccl"] == 100.0
    out = e.tick(5.5)
    assert (out["ccl"], out["dcl"], out["online"]) == (0.0, 0.0, 0)
    assert e.reasons(out)["ccl"] == "no pack online: safe state 0 A"
    assert out["cvl"] == pytest.approx(FLOAT_CVL)
    assert math.isnan(out["voltage"]) and math.isnan(out["soc"])
    out = cycle(e, 7.0)  # back: no hold after the safe state, ramp from it at once
    assert out["ccl"] == pytest.approx(3.0)  # 1 A/s per pack x 2 packs x 1.5 s
    assert e.reasons(out)["ccl"].startswith("ramping up to 100.0 A (cut: no pack online")
    e = make(stale_after=5.0, safe_ccl=5.0, safe_dcl=20.0)
    cycle(e, 0.0)
    out = e.tick(6.0)
    assert (out["ccl"], out["dcl"]) == (5.0, 20.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("voltage", float("nan")), ("current", float("inf")), ("soc", 140.0),
     ("cells", [3.3] * 15 + [float("nan")]), ("temperatures", [25.0, 900.0]),
     ("cells", [3.3] * 15)],
    ids=["nan", "inf", "soc-over-100", "nan-cell", "hot-sensor", "wrong-cell-count"],
)  # fmt: skip
def test_bad_states_are_rejected_counted_and_never_used(field, value):
    e = make()
    cycle(e, 0.0)
    port, addr = "a", 1
    assert not e.accept(state_msg(port, addr, seq=5, **{field: value}), 1.0)
    assert e.registry.counters.rejected == 1
    out = e.tick(1.0)
    assert out["ccl"] == 100.0 and out["voltage"] == pytest.approx(16 * 3.30)


# ---- SoC and time -------------------------------------------------------------------------------


def test_soc_is_capacity_weighted_and_a_series_string_is_its_emptiest_pack():
    e = make(packs={"a:1": {"capacity": 100}, "a:2": {"capacity": 300}})
    send(e, 0.0, "a:1", soc=40.0, capacity=100.0)
    send(e, 0.0, "a:2", soc=80.0, capacity=300.0)
    assert e.tick(0.0)["soc"] == pytest.approx(70.0)
    s = make(cells=8, strings=[["a:1", "a:2"]])
    send(s, 0.0, "a:1", soc=40.0, cells=[3.3] * 8)
    send(s, 0.0, "a:2", soc=80.0, cells=[3.3] * 8)
    out = s.tick(0.0)
    assert out["soc"] == 40.0 and out["capacity"] == 100.0


def test_coulomb_counting_integrates_and_resynchronises_at_full():
    e = make(coulomb_counting=True, absorption_time=10.0)
    out = cycle(e, 0.0, soc=60.0, current=25.0)
    assert out["soc"] == 60.0  # starts from the BMS
    for t in range(1, 361):
        out = cycle(e, float(t), soc=60.0, current=25.0)
    assert out["soc"] == pytest.approx(60.0 + 50.0 * 360 / 3600 / 200 * 100)  # +2.5 %
    cycle(e, 400.0, soc=90.0, cells=[3.445] * 16, current=1.0)
    out = cycle(e, 411.0, soc=90.0, cells=[3.445] * 16, current=1.0)
    assert out["charge_state"] == "float" and out["soc"] == 100.0


def test_time_to_go_and_time_to_soc():
    e = make()
    out = cycle(e, 0.0, soc=50.0, current=-25.0)  # bank: -50 A, 100 Ah left of 200 Ah
    assert out["time_to_go"] == pytest.approx(7200.0)
    assert out["time_to_soc"][20.0] == pytest.approx(0.3 * 200 / 50 * 3600)
    assert math.isnan(out["time_to_soc"][100.0])


def test_days_since_full_and_counted_soc_survive_a_restart(tmp_path):
    path = str(tmp_path / "state.json")
    e = make(coulomb_counting=True, absorption_time=10.0)
    cycle(e, 0.0, cells=[3.445] * 16)
    cycle(e, 11.0, cells=[3.445] * 16)
    cycle(e, 3611.0, soc=99.0, current=-20.0)
    snap = e.snapshot()
    StateFile(path).save(snap)
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["saved"] = time.time() - 86400.0  # the arbiter was down for a day
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    again = make(coulomb_counting=True)
    again.restore(5.0, StateFile(path).load(again.native.n))
    out = cycle(again, 5.0, soc=50.0)
    assert out["since_full"] == pytest.approx(3600.0 + 86400.0, abs=5.0)
    assert out["soc"] == pytest.approx(snap["soc"])


def test_an_unreadable_state_file_is_ignored(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert StateFile(str(path)).load(1) is None
    StateFile(str(tmp_path / "no" / "such" / "dir" / "x.json")).save({"soc": 1.0})  # creates dirs
    StateFile(str(path / "cannot")).save({"soc": 1.0})  # a file as directory: logged, no raise


def test_rejoin_restores_a_cvl_that_was_cut_before_the_loss():
    e = make(("a:1", "a:2"))
    out = cycle(e, 0.0, cells=cells(3.47, rest=3.40), current=30.0)
    cut = out["cvl"]
    assert cut < BULK_CVL
    for t in range(1, 13):
        out = cycle(e, float(t), packs=["a:1"], cells=cells(3.43, rest=3.40), current=1.0)
    assert out["unseen"] and out["cvl"] == pytest.approx(min(cut, FLOAT_CVL))
    for t in range(13, 33):  # everyone reports again, for cvl_interval
        out = cycle(e, float(t), cells=cells(3.43, rest=3.40), current=1.0)
        assert out["cvl"] == pytest.approx(min(cut, FLOAT_CVL)), t
    out = cycle(e, 33.0, cells=cells(3.43, rest=3.40), current=1.0)
    assert out["cvl"] == pytest.approx(cut)  # not the bulk target: the cell was high before
    assert e.reasons(out)["cvl"] == f"every pack reports again: back to {cut:.2f} V"


def test_a_pack_that_keeps_dropping_out_leaves_cvl_capped():
    e = make(stale_after=5.0)
    cycle(e, 0.0)
    values = []
    for t in range(1, 120):
        flaky = ["a:1"] if t % 12 < 6 else ["a:1", "a:2"]  # a:2 silent 6 s of every 12
        values.append(cycle(e, float(t), packs=flaky)["cvl"])
    assert values[15] == BULK_CVL and values[16] == pytest.approx(FLOAT_CVL)  # unseen at 17 s
    assert max(values[16:]) <= FLOAT_CVL + 3 * STEP  # capped: no swinging with the link
