"""``bmsbank import-serialbattery``: dbus-serialbattery's config.ini as a bmsbank config.

The incumbent's default config.ini (release v2.0.20250729, tests/data) and three realistic
variants are converted; every generated config must pass ``bmsbank check``, carry the values the
ini meant, and account for every key of the default, converted or not carried over with a reason.
"""

from __future__ import annotations

import configparser
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bmsbank import cli, importer
from bmsbank import config as configuration
from bmsbank import serialbattery as sb
from bmsbank.errors import ConfigError
from bmsbank.native._packs_py import _sensor_limit, fraction

DATA = Path(__file__).parent / "data"
DEFAULT_INI = DATA / "serialbattery-v2.0.20250729.default.ini"
VARIANTS = ("jk16s", "jbd-daly", "float-socreset")


def _ini(tmp_path: Path, text: str, name: str = "config.ini") -> str:
    path = tmp_path / name
    path.write_text("[DEFAULT]\n" + text, encoding="utf-8")
    return str(path)


def _convert(path: str | Path, default: str | None = None) -> tuple[dict, importer.Imported]:
    result = importer.convert(str(path), default)
    return tomllib.loads(result.toml), result


def test_embedded_defaults_are_the_releases_every_key_placed() -> None:
    """The built-in defaults are the release's; each key is converted or explained."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEFAULT_INI, encoding="utf-8")
    keys = dict(parser.defaults())
    assert len(keys) == 95
    assert {k: " ".join(v.split()) for k, v in keys.items()} == sb.DEFAULTS
    for default in (None, str(DEFAULT_INI)):
        _, result = _convert(DEFAULT_INI, default)
        for key in keys:
            assert (key in result.converted) != (key in result.dropped), key
            assert result.converted.get(key) or len(result.dropped[key]) > 10, key
        assert set(result.converted) | set(result.dropped) == set(keys)


def test_default_ini_converts_to_the_incumbent_values() -> None:
    """The incumbent's defaults become these bmsbank values (tables reversed and zipped)."""
    data, result = _convert(DEFAULT_INI)
    bank = data["bank"]
    assert data["log_level"] == "info"
    assert (bank["max_charge_current"], bank["max_discharge_current"]) == (50.0, 60.0)
    assert (bank["cell_low_voltage"], bank["cell_float_voltage"]) == (2.9, 3.375)
    assert bank["cell_charge_voltage"] == 3.45
    assert (bank["absorption_time"], bank["absorption_spread"]) == (900.0, 0.01)
    assert (bank["rebulk_soc"], bank["rebulk_spread"]) == (80.0, 0.08)
    assert bank["interpolation"] == "linear"
    assert bank["ccl_cell_table"] == [
        [3.375, 1.0], [3.4, 0.25], [3.425, 0.05], [3.45, 0.005], [3.5, 0.0]
    ]  # fmt: skip
    assert bank["dcl_cell_table"] == [
        [2.8, 0.0], [2.9, 0.005], [3.0, 0.05], [3.1, 0.25], [3.19, 1.0]
    ]  # fmt: skip
    assert bank["charge_window"] == [0.0, 55.0]
    assert bank["discharge_window"] == [-10.0, 55.0]
    assert bank["ccl_temperature_table"][1] == [2.0, 0.25]
    assert bank["mosfet_table"] == [[70.0, 1.0], [80.0, 0.25], [90.0, 0.0]]
    assert bank["soc_reset_voltage"] == 0.0 and "soc_reset_days" not in bank
    assert bank["ccl_soc_table"] == [] and bank["dcl_soc_table"] == []
    assert bank["coulomb_counting"] is False and bank["time_to_soc"] == []
    assert data["ports"] == [{"name": "ttyUSB0", "device": "/dev/ttyUSB0", "bms": "auto"}]
    assert "SOC_RESET_AFTER_DAYS is empty" in result.dropped["SOC_RESET_CELL_VOLTAGE"]
    assert "nothing lost" in result.dropped["CURRENT_REPORTED_BY_BMS"]


@pytest.mark.parametrize("name", ["default", *VARIANTS])
def test_bmsbank_check_accepts_every_generated_config(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bmsbank import-serialbattery X.ini > X.toml; bmsbank check X.toml` succeeds."""
    ini = DEFAULT_INI if name == "default" else DATA / f"serialbattery-{name}.ini"
    assert cli.main(["import-serialbattery", str(ini)]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "bmsbank.toml"
    path.write_text(out, encoding="utf-8")
    assert cli.main(["check", str(path)]) == 0
    assert ": ok: " in capsys.readouterr().out
    assert "# Not carried over (" in out and "# Converted (" in out


def _limit(x: float, bank: dict, side: str) -> float:
    """The fraction bmsbank's engine (pure twin) allows a sensor at ``x`` °C."""
    window = bank[f"{side}_window"]
    table = bank[f"{'ccl' if side == 'charge' else 'dcl'}_temperature_table"]
    linear = bank["interpolation"] == "linear"
    return _sensor_limit(x, window, table, linear, 1.0, 0, 0, math.inf, ())[0]


def test_jk_16s_pack_higher_currents_own_temperature_tables() -> None:
    data, result = _convert(DATA / "serialbattery-jk16s.ini")
    bank = data["bank"]
    assert data["log_level"] == "warning"
    assert (bank["max_charge_current"], bank["max_discharge_current"]) == (140.0, 200.0)
    assert (bank["cell_charge_voltage"], bank["cell_float_voltage"]) == (3.5, 3.37)
    assert bank["cell_low_voltage"] == 3.0
    assert bank["interpolation"] == "step"
    assert bank["ccl_cell_table"] == [[3.4, 1.0], [3.45, 0.5], [3.5, 0.05], [3.55, 0.0]]
    assert bank["charge_window"] == [2.0, 50.0]
    assert bank["ccl_temperature_table"] == [
        [2.0, 0.0], [5.0, 0.2], [10.0, 1.0], [35.0, 1.0], [45.0, 0.3], [50.0, 0.0]
    ]  # fmt: skip
    assert bank["discharge_window"] == [-20.0, 60.0]
    assert bank["time_to_soc"] == [100, 80, 50, 20, 0]
    # POLL_INTERVAL 5 s: a pack must not go stale between two polls of 5 s + 1 s reply time
    assert bank["stale_after"] == 12.0
    assert data["ports"] == [
        {"name": "ttyUSB0", "device": "/dev/ttyUSB0", "bms": "jkbms", "interval": 5.0}
    ]
    # step mode through bmsbank's engine: the smaller fraction between two rows, 0 outside
    assert _limit(7.5, bank, "charge") == 0.2
    assert _limit(40.0, bank, "charge") == 0.3
    assert _limit(1.0, bank, "charge") == 0.0 and _limit(51.0, bank, "charge") == 0.0
    assert "ports[0].interval" in result.converted["POLL_INTERVAL"]


def test_default_temperature_tables_act_as_the_incumbents_linear_mode() -> None:
    """Linear mode: bmsbank's window and rows give the incumbent's fractions at every °C."""
    data, _ = _convert(DEFAULT_INI)
    bank = data["bank"]
    # the incumbent's linear values from its default lists (config.default.ini)
    expected = {-20.0: 0.0, 0.0: 0.0, 1.0: 0.125, 3.5: 0.375, 7.5: 0.75, 25.0: 1.0, 42.5: 0.75,
                47.5: 0.375, 52.5: 0.125, 55.0: 0.0, 70.0: 0.0}  # fmt: skip
    for x, f in expected.items():
        assert _limit(x, bank, "charge") == pytest.approx(f), x
    assert _limit(-5.0, bank, "discharge") == pytest.approx(0.125)
    assert fraction(3.4375, bank["ccl_cell_table"], True) == pytest.approx(0.0275)


def test_jbd_and_daly_ports_with_addresses() -> None:
    data, result = _convert(DATA / "serialbattery-jbd-daly.ini")
    jbd, daly = data["ports"]
    assert (jbd["bms"], jbd["device"], "addresses" in jbd) == ("jbd", "/dev/ttyUSB0", False)
    # Daly requests carry 0x3F + board number: 0x40, 0x41 are boards 1 and 2
    assert (daly["bms"], daly["addresses"], daly["invert_current"]) == ("daly", [1, 2], True)
    assert data["bank"]["coulomb_counting"] is True
    assert data["bank"]["mosfet_table"] == [[65.0, 1.0], [75.0, 0.5], [85.0, 0.0]]
    assert "jbd takes one pack per port" in result.converted["BATTERY_ADDRESSES"]
    assert "rated capacity" in result.dropped["BATTERY_CAPACITY"]
    assert "MODBUS_ADDRESSES" not in result.dropped  # the v1.x name, read as BATTERY_ADDRESSES
    config = configuration.parse(data, "jbd-daly")
    assert sorted(config.pack_ids()) == ["ttyUSB0:1", "ttyUSB1:1", "ttyUSB1:2"]


def test_float_soc_reset_ble_can_and_unknown_keys() -> None:
    path = DATA / "serialbattery-float-socreset.ini"
    data, result = _convert(path)
    bank = data["bank"]
    assert (bank["absorption_time"], bank["absorption_spread"]) == (1800.0, 0.015)
    assert bank["rebulk_soc"] == 70.0
    assert bank["rebulk_spread"] == 10.0  # empty: the incumbent's "disabled" 10 V
    assert (bank["cell_float_voltage"], bank["soc_reset_voltage"]) == (3.35, 3.62)
    assert bank["soc_reset_days"] == 14.0
    assert bank["ccl_soc_table"] == [[90.0, 1.0], [95.0, 0.3], [99.0, 0.05]]
    assert bank["dcl_soc_table"] == [[5.0, 0.0], [10.0, 0.4], [20.0, 1.0]]
    assert data["ports"][0]["bms"] == "jkpb" and data["ports"][0]["addresses"] == [1, 2, 3]
    assert data["ble"] == [{"adapter": "hci0", "devices": [
        {"name": "ble1", "address": "C8:47:8C:00:00:11", "bms": "jkbms_ble"}]}]  # fmt: skip
    assert data["can_inputs"] == [
        {"name": "can1", "interface": "socketcan", "channel": "can1", "bms": "daly_can"}
    ]
    assert "LiTime_Ble" in result.converted["BLUETOOTH_BMS"]
    typo = result.dropped["MAX_CELL_VOLTGE"]
    assert f"{path}:24:" in typo and "did you mean MAX_CELL_VOLTAGE?" in typo
    assert "reads only [DEFAULT]" in result.dropped["[extra]"]
    assert "telemetry" in result.dropped["TELEMETRY"]


def test_cvcm_off_and_tables_off(tmp_path: Path) -> None:
    """No float: float voltage = charge voltage; a table turned off keeps bmsbank's default."""
    ini = _ini(tmp_path, "CVCM_ENABLE = False\nCCCM_CV_ENABLE = False\nDCCM_T_ENABLE = False\n"
               "SOC_RESET_AFTER_DAYS = 0\nMAX_CELL_VOLTAGE = 3.5\n")  # fmt: skip
    data, result = _convert(ini)
    bank = data["bank"]
    assert bank["cell_float_voltage"] == bank["cell_charge_voltage"] == 3.5
    assert "absorption_time" not in bank and "rebulk_soc" not in bank
    assert "no float" in result.dropped["FLOAT_CELL_VOLTAGE"]
    assert "ccl_cell_table" not in bank and "discharge_window" not in bank
    assert "cannot be turned off" in result.dropped["CCCM_CV_ENABLE"]
    assert "unused: CCCM_CV_ENABLE = False" in result.dropped["CELL_VOLTAGES_WHILE_CHARGING"]
    assert (bank["soc_reset_voltage"], bank["soc_reset_days"]) == (3.65, 1.0)
    assert bank["charge_window"] == [0.0, 55.0]


def test_open_ended_temperature_table_is_noted(tmp_path: Path) -> None:
    ini = _ini(tmp_path, "TEMPERATURES_WHILE_CHARGING = 40, 10, 5\n"
               "MAX_CHARGE_CURRENT_T_FRACTION = 0.5, 1, 0.5\n")  # fmt: skip
    data, result = _convert(ini)
    assert data["bank"]["charge_window"] == [5.0, 40.0]
    assert data["bank"]["ccl_temperature_table"] == [[5.0, 0.5], [10.0, 1.0], [40.0, 0.5]]
    note = result.converted["CCCM_T_ENABLE"]
    assert "below 5 °C and above 40 °C" in note and "0 A" in note


def test_other_default_file(tmp_path: Path) -> None:
    text = DEFAULT_INI.read_text(encoding="utf-8").replace(
        "MAX_BATTERY_CHARGE_CURRENT    = 50.0", "MAX_BATTERY_CHARGE_CURRENT = 80.0"
    )
    default = tmp_path / "config.default.ini"
    default.write_text(text, encoding="utf-8")
    data, result = _convert(_ini(tmp_path, "BMS_TYPE = Renogy\n"), str(default))
    assert data["bank"]["max_charge_current"] == 80.0
    assert data["ports"][0]["bms"] == "renogy"
    assert str(default) in result.toml


MALFORMED = [
    ("[DEFAULT]\nMAX_CELL_VOLTAGE = abc\n", 2, "MAX_CELL_VOLTAGE", "a number"),
    ("MAX_CELL_VOLTAGE = 3.4\n", 1, "[DEFAULT]", "[DEFAULT] section"),
    ("[DEFAULT]\nBMS_TYPE = Jkbms\nBMS_TYPE = Daly\n", 3, "BMS_TYPE", "set once"),
    ("[DEFAULT]\nthis line has no equals sign\n", 2, "syntax", "KEY = VALUE"),
    ("[DEFAULT]\n\nMAX_CHARGE_CURRENT_CV_FRACTION = 0, 1\n", 3,
     "MAX_CHARGE_CURRENT_CV_FRACTION", "5 fractions"),
    ("[DEFAULT]\nCELL_VOLTAGES_WHILE_CHARGING = 3.4, 3.5, 3.45, 3.3, 3.6\n", 2,
     "CELL_VOLTAGES_WHILE_CHARGING", "ascending or descending"),
    ("[DEFAULT]\nBMS_TYPE = Jkbms_bp\n", 2, "BMS_TYPE", "did you mean Jkbms_pb?"),
    ("[DEFAULT]\nCVCM_ENABLE = Ture\n", 2, "CVCM_ENABLE", "True or False"),
    ("[DEFAULT]\nBATTERY_ADDRESSES = 0x01, 0xZZ\n", 2, "BATTERY_ADDRESSES", "hex bytes"),
    ("[DEFAULT]\nBLUETOOTH_BMS = Jkbms_Ble\n", 2, "BLUETOOTH_BMS", "pairs"),
    ("[DEFAULT]\nMAX_CHARGE_CURRENT_T_FRACTION = 0, 1, 1, 1, 1, 1, 1, 2\n", 2,
     "MAX_CHARGE_CURRENT_T_FRACTION", "fractions 0-1"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "key", "expected"), MALFORMED)
def test_malformed_ini_names_key_and_line(
    text: str, line: int, key: str, expected: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        importer.convert(str(path))
    assert err.value.key == key and err.value.source == f"{path}:{line}"
    assert expected in str(err.value)
    assert cli.main(["import-serialbattery", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"bmsbank: {path}:{line}: {key}: ")


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_bytes(b"[DEFAULT]\nTEMPERATURE_1_NAME = Temp \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        importer.convert(str(path))
    assert err.value.key == "encoding"
    with pytest.raises(ConfigError) as err:
        importer.convert(str(tmp_path / "nope.ini"))
    assert err.value.key == "file"


def test_command_line_end_to_end(tmp_path: Path) -> None:
    """The installed command: TOML on stdout, exit 0; a bad file: one line on stderr, exit 2."""
    run = [sys.executable, "-m", "bmsbank.cli", "import-serialbattery"]
    ok = subprocess.run([*run, str(DATA / "serialbattery-jbd-daly.ini")],
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert tomllib.loads(ok.stdout)["ports"][1]["addresses"] == [1, 2]
    bad = tmp_path / "config.ini"
    bad.write_text("[DEFAULT]\nMAX_BATTERY_CHARGE_CURRENT = lots\n", encoding="utf-8")
    failed = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.strip() == (
        f"bmsbank: {bad}:2: MAX_BATTERY_CHARGE_CURRENT: a number, got 'lots'"
    )


def test_ecs_daly_host_address_and_two_can_families(tmp_path: Path) -> None:
    """ECS takes the GreenMeter and LiPro keys; Daly's 0x80 is no board; CAN needs one family."""
    ini = _ini(tmp_path, "BMS_TYPE = Ecs, Daly, Daly_Can, Jkbms_Can\nCAN_PORT = can0\n"
               "BATTERY_ADDRESSES = 0x40, 0x80\nGREENMETER_ADDRESS = 3\nLIPRO_START_ADDRESS = 4\n"
               "LIPRO_CELL_COUNT = 16\n")  # fmt: skip
    data, result = _convert(ini)
    ecs, daly = data["ports"]
    assert (ecs["bms"], ecs["addresses"], ecs["lipro_start"], ecs["cells"]) == ("ecs", [3], 4, 16)
    assert (daly["bms"], daly["addresses"]) == ("daly", [1])
    assert "invert_current" not in daly
    assert "0x80 not a daly address" in result.converted["BATTERY_ADDRESSES"]
    assert "can_inputs" not in data and "more than one" in result.dropped["CAN_PORT"]
    assert "lipro_start" in result.dropped["LIPRO_END_ADDRESS"]


def test_poll_interval_below_bmsbanks_shortest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="POLL_INTERVAL: seconds >= 0.1"):
        importer.convert(_ini(tmp_path, "\nPOLL_INTERVAL = 0.05\n"))


def test_later_release_default_file(tmp_path: Path) -> None:
    """A later config.default.ini (keys after v2.0.20250729, as on the incumbent's master in
    2026): hold and ramp keys convert, the rest is listed; every key still has its place."""
    later = ("CVL_RECOVERY_HOLD_SEC = 60\nCCL_RECOVERY_HOLD_SEC = 30\n"
             "CCL_RECOVERY_RATE_A_PER_SEC = 5\nDCL_RECOVERY_HOLD_SEC = 45\n"
             "DCL_RECOVERY_RATE_A_PER_SEC = 0\nBMS_CABLE_ALARM = True\n"
             "MQTT_BROKER_PORT = 1883\n")  # fmt: skip
    default = tmp_path / "config.default.ini"
    default.write_text(DEFAULT_INI.read_text(encoding="utf-8") + later, encoding="utf-8")
    data, result = _convert(_ini(tmp_path, "CCL_RECOVERY_RATE_A_PER_SEC = 2.5\n"), str(default))
    bank = data["bank"]
    assert (bank["current_hold"], bank["current_ramp"], bank["ovp_hold"]) == (45.0, 2.5, 60.0)
    assert "always ramps" in result.dropped["DCL_RECOVERY_RATE_A_PER_SEC"]
    assert "not a key of v2.0.20250729" in result.dropped["MQTT_BROKER_PORT"]
    keys = set(sb.DEFAULTS) | {line.split(" =")[0] for line in later.splitlines()}
    assert set(result.converted) | set(result.dropped) == keys
    assert not set(result.converted) & set(result.dropped)
