"""Bank message -> Venus battery service paths (bmsbank.services.publisher.paths)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsbank.config import Config, DbusConfig
from bmsbank.schema import ALARMS, validate_bank
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.services.publisher import paths

MANDATORY = (
    "/Mgmt/ProcessName", "/Mgmt/ProcessVersion", "/Mgmt/Connection", "/DeviceInstance",
    "/ProductId", "/ProductName", "/FirmwareVersion", "/HardwareVersion", "/Connected",
    "/CustomName", "/Serial",
    "/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", "/Dc/0/Temperature", "/Soc", "/Capacity",
    "/InstalledCapacity", "/ConsumedAmphours",
    "/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent",
    "/Info/BatteryLowVoltage", "/Info/ChargeLimitation", "/Info/DischargeLimitation",
    "/Info/ChargeVoltageLimitation", "/Info/ChargeRequest", "/Info/ChargeMode", "/Soh",
    "/TimeToGo", "/CurrentAvg", "/Io/AllowToBalance", "/Balancing", "/History/ChargeCycles",
    "/History/TimeSinceLastFullCharge",
    "/System/MinCellVoltage", "/System/MaxCellVoltage", "/System/MinVoltageCellId",
    "/System/MaxVoltageCellId", "/System/MinCellTemperature", "/System/MaxCellTemperature",
    "/System/NrOfCellsPerBattery", "/System/NrOfModulesOnline", "/System/NrOfModulesOffline",
    "/System/NrOfModulesBlockingCharge", "/System/NrOfModulesBlockingDischarge",
    "/Io/AllowToCharge", "/Io/AllowToDischarge",
)  # fmt: skip
LIMITS = ("/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent")


def make_bank(**overrides):
    """A bank message as services.arbiter.bank builds it: 3 packs, 2 online, one blocking."""
    bank = {
        "v": 1, "kind": "bank", "seq": 7, "time": 1.7e9, "mono": 100.0, "name": "house",
        "voltage": 53.214, "current": -20.57, "power": -1093.6, "soc": 81.26,
        "capacity": 560.0, "installed_capacity": 840.0, "remaining": 455.1, "consumed": 104.9,
        "temperature": 24.36, "min_temperature": 21.04, "max_temperature": 27.96,
        "min_temperature_id": "usb0:1 T2", "max_temperature_id": "usb0:2 T1",
        "min_cell_voltage": 3.3214, "max_cell_voltage": 3.3391,
        "min_cell_id": "usb0:1 C5", "max_cell_id": "usb0:2 C12", "cells_per_pack": 16,
        "cvl": 55.2, "ccl": 100.0, "dcl": 200.0, "low_voltage": 46.4,
        "reasons": {"cvl": "16 cells x 3.450 V", "ccl": "2 pack(s) x 50 A",
                    "dcl": "2 pack(s) x 100 A"},
        "charge_state": "bulk", "allow_charge": True, "allow_discharge": True,
        "online": 2, "offline": 1, "blocking_charge": 0, "blocking_discharge": 1,
        "alarms": dict.fromkeys(ALARMS, 0),
        "packs": [{"id": "usb0:1", "online": True}, {"id": "usb0:2", "online": True},
                  {"id": "usb0:3", "online": False}],
        "counters": {"states": 10, "rejected": 0, "lost": 0, "unknown_packs": 0},
    }  # fmt: skip
    bank.update(overrides)
    return validate_bank(bank)


@pytest.fixture
def config():
    return Config(dbus=DbusConfig(device_instance=288, product_id=0xBA5B))


def arbiter_bank(config):
    """A bank from the real arbiter code: two configured packs, none online yet."""
    engine = BankEngine.from_mapping({"strings": [["a:1"], ["a:2"]]})
    return BankComputer(engine, "test", 0.0).compute(1.0)


@pytest.mark.parametrize("source", ["full", "empty", "arbiter", "safe"])
def test_every_mandatory_path_present(config, source):
    bank = {
        "full": make_bank,
        "empty": lambda: paths.empty_bank(config),
        "arbiter": lambda: arbiter_bank(config),
        "safe": lambda: paths.safe_bank(make_bank(), config, "stale"),
    }[source]()
    values = paths.dbus_values(bank, config)
    missing = [p for p in MANDATORY if p not in values]
    assert not missing
    assert all(paths.alarm_path(n) in values for n in ALARMS)


def test_identity_paths_are_ints_from_config(config):
    values = paths.dbus_values(make_bank(), config)
    assert values["/DeviceInstance"] == 288 and type(values["/DeviceInstance"]) is int
    assert values["/ProductId"] == 0xBA5B and type(values["/ProductId"]) is int
    assert values["/Connected"] == 1 and type(values["/Connected"]) is int
    assert values["/ProductName"] == config.dbus.product_name
    assert values["/CustomName"] == config.bank.name
    assert values["/Mgmt/Connection"] == "bmsbank"


def test_values_rounded_and_typed(config):
    v = paths.dbus_values(make_bank(), config)
    assert v["/Dc/0/Voltage"] == 53.21
    assert v["/Dc/0/Current"] == -20.6
    assert v["/Dc/0/Power"] == -1094.0
    assert v["/Dc/0/Temperature"] == 24.4
    assert v["/Soc"] == 81.3
    assert v["/Capacity"] == 455.1  # remaining capacity, as Venus battery services publish it
    assert v["/InstalledCapacity"] == 840.0
    assert v["/ConsumedAmphours"] == -104.9
    assert v["/System/MinCellVoltage"] == 3.321 and v["/System/MaxCellVoltage"] == 3.339
    assert v["/System/MinVoltageCellId"] == "usb0:1 C5"
    assert v["/System/MaxCellTemperature"] == 28.0
    assert v["/System/NrOfCellsPerBattery"] == 16
    assert (v["/System/NrOfModulesOnline"], v["/System/NrOfModulesOffline"]) == (2, 1)
    assert v["/System/NrOfModulesBlockingDischarge"] == 1
    assert v["/Io/AllowToCharge"] == 1 and type(v["/Io/AllowToCharge"]) is int
    assert v["/Info/ChargeVoltageLimitation"] == "16 cells x 3.450 V"
    assert v["/Info/BatteryLowVoltage"] == 46.4
    for path, value in v.items():
        assert value is None or type(value) in (int, float, str), path


def test_limits_are_the_bank_limits(config):
    v = paths.dbus_values(make_bank(cvl=54.4, ccl=12.34, dcl=0.0), config)
    assert (v["/Info/MaxChargeVoltage"], v["/Info/MaxChargeCurrent"]) == (54.4, 12.3)
    assert v["/Info/MaxDischargeCurrent"] == 0.0


def test_limits_never_none_for_an_empty_bank(config):
    for bank in ({}, paths.empty_bank(config), arbiter_bank(config)):
        v = paths.dbus_values(bank, config)
        for path in LIMITS:
            assert type(v[path]) is float, path


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -3.0, "55", True])
def test_limits_never_none_for_bad_input(config, bad):
    v = paths.dbus_values({"cvl": bad, "ccl": bad, "dcl": bad}, config)
    assert [v[p] for p in LIMITS] == [0.0, 0.0, 0.0]


@given(
    st.dictionaries(
        st.sampled_from(["cvl", "ccl", "dcl", "online", "soc", "voltage"]),
        st.one_of(st.none(), st.floats(), st.integers(), st.sampled_from(["", "55", "x"])),
    )
)
def test_limits_always_finite_numbers(bank):
    v = paths.dbus_values(bank, Config())
    for path in LIMITS:
        assert type(v[path]) is float and math.isfinite(v[path]) and v[path] >= 0.0


def test_measurements_unknown_with_no_pack_online(config):
    v = paths.dbus_values(make_bank(online=0, offline=3), config)
    for path in paths.MEASUREMENTS:
        assert v[path] is None, path
    assert v["/System/NrOfModulesOnline"] == 0


def test_alarm_mapping(config):
    assert paths.alarm_path("low_voltage") == "/Alarms/LowVoltage"
    assert paths.alarm_path("bms_cable") == "/Alarms/BmsCable"
    assert paths.alarm_path("high_charge_temperature") == "/Alarms/HighChargeTemperature"
    alarms = dict.fromkeys(ALARMS, 0) | {"low_voltage": 2, "cell_imbalance": 1}
    v = paths.dbus_values(make_bank(alarms=alarms), config)
    assert v["/Alarms/LowVoltage"] == 2
    assert v["/Alarms/CellImbalance"] == 1
    assert v["/Alarms/BmsCable"] == 0
    # an alarm the bank does not report is unknown, not OK
    v = paths.dbus_values(make_bank(alarms={"low_voltage": 1}), config)
    assert v["/Alarms/LowVoltage"] == 1 and v["/Alarms/HighVoltage"] is None


def test_safe_values(config):
    v = paths.safe_values(make_bank(cvl=55.2), config, "no bank for 10 s")
    assert v["/Info/MaxChargeCurrent"] == 0.0 and v["/Info/MaxDischargeCurrent"] == 0.0
    assert v["/Info/MaxChargeVoltage"] == 55.2  # last CVL kept
    assert v["/Alarms/BmsCable"] == 2
    assert v["/Connected"] == 1
    assert (v["/Io/AllowToCharge"], v["/Io/AllowToDischarge"]) == (0, 0)
    assert v["/Info/ChargeLimitation"] == "no bank for 10 s"
    assert v["/Dc/0/Voltage"] is None and v["/Soc"] is None
    assert (v["/System/NrOfModulesOnline"], v["/System/NrOfModulesOffline"]) == (0, 3)
    assert all(p in v for p in MANDATORY)


def test_safe_values_without_any_bank(config):
    v = paths.safe_values(None, config)
    assert [v[p] for p in LIMITS] == [0.0, 0.0, 0.0]
    assert v["/Alarms/BmsCable"] == 2 and v["/Connected"] == 1


def test_safe_bank_does_not_touch_the_last_bank(config):
    bank = make_bank()
    paths.safe_bank(bank, config, "stale")
    assert bank["ccl"] == 100.0 and bank["alarms"]["bms_cable"] == 0


def test_charge_state_time_to_go_and_time_since_full(config):
    v = paths.dbus_values(
        make_bank(charge_state="absorption", time_to_go=7199.6, days_since_full=1.5), config
    )
    assert v["/Info/ChargeMode"] == "Absorption"
    assert v["/TimeToGo"] == 7200.0
    assert v["/History/TimeSinceLastFullCharge"] == 1.5 * 86400
    v = paths.dbus_values(make_bank(time_to_go=None, days_since_full=None), config)
    assert v["/TimeToGo"] is None and v["/History/TimeSinceLastFullCharge"] is None


def test_soh_and_averaged_current(config):
    v = paths.dbus_values(make_bank(soh=97.04, current_avg=-12.34), config)
    assert v["/Soh"] == 97.0 and v["/CurrentAvg"] == -12.3
    v = paths.dbus_values(make_bank(), config)  # packs that report no SoH: unknown, not 100
    assert v["/Soh"] is None


def test_balancing_and_cycles(config):
    v = paths.dbus_values(make_bank(balancing=2, cycles=41), config)
    assert (v["/Balancing"], v["/History/ChargeCycles"], v["/Io/AllowToBalance"]) == (1, 41, 1)
    v = paths.dbus_values(make_bank(balancing=0, cycles=None), config)
    assert (v["/Balancing"], v["/History/ChargeCycles"]) == (0, None)
    safe = paths.safe_values(make_bank(balancing=2), config)
    assert safe["/Balancing"] is None  # old news once the bank is stale


def test_safe_bank_takes_every_pack_offline(config):
    safe = paths.safe_bank(make_bank(), config, "stale")
    assert [row["online"] for row in safe["packs"]] == [False, False, False]
    assert make_bank()["packs"][0]["online"] is True  # the last bank is left alone


def test_arbiter_bank_counts_balancing_packs_and_mean_cycles():
    from tests.factories import state_msg

    engine = BankEngine.from_mapping({"strings": [["a:1"], ["a:2"]]})
    computer = BankComputer(engine, "test", 0.0)
    engine.accept(state_msg("a", 1, cycles=10, balancing=[1] + [0] * 15), 1.0)
    engine.accept(state_msg("a", 2, cycles=21), 1.0)
    bank = computer.compute(1.5)
    assert (bank["balancing"], bank["cycles"]) == (1, 16)
