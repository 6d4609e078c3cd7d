"""Facts about dbus-serialbattery's config.ini, for ``bmsbank import-serialbattery``.

Source: mr-manuel/venus-os_dbus-serialbattery, release v2.0.20250729 (commit 2a80d427):
``dbus-serialbattery/config.default.ini`` (every key, its default and its comment),
``dbus-serialbattery/utils.py`` (how values are read: only the [DEFAULT] section; lists are
comma-separated, blanks dropped; booleans are "True" in any case, everything else false; an empty
number is the key's fallback), ``dbus-serialbattery/dbus-serialbattery.py`` (the BMS class names
BMS_TYPE takes and the serial address each is tried at; BATTERY_ADDRESSES are hex bytes) and
``dbus-serialbattery/bms/ecs.py`` (the LIPRO_* keys). Only facts are taken, no code.
"""

from __future__ import annotations

import re

RELEASE = "v2.0.20250729"
SOURCE = (
    "https://github.com/mr-manuel/venus-os_dbus-serialbattery/blob/"
    f"{RELEASE}/dbus-serialbattery/config.default.ini"
)

#: config.default.ini of RELEASE: every key and its default (runs of blanks squeezed)
DEFAULTS: dict[str, str] = {
    "LOGGING": "INFO",
    "MAX_BATTERY_CHARGE_CURRENT": "50.0",
    "MAX_BATTERY_DISCHARGE_CURRENT": "60.0",
    "MIN_CELL_VOLTAGE": "2.900",
    "MAX_CELL_VOLTAGE": "3.450",
    "FLOAT_CELL_VOLTAGE": "3.375",
    "SOC_RESET_CELL_VOLTAGE": "3.650",
    "SOC_RESET_AFTER_DAYS": "",
    "SOC_CALCULATION": "False",
    "CURRENT_REPORTED_BY_BMS": "-300, 300",
    "CURRENT_MEASURED_BY_USER": "-300, 300",
    "BLUETOOTH_BMS": "",
    "BLUETOOTH_USE_POLLING": "True",
    "BLUETOOTH_FORCE_RESET_BLE_STACK": "False",
    "BLUETOOTH_USE_USB": "False",
    "CAN_PORT": "",
    "BATTERY_ADDRESSES": "",
    "BLOCK_ON_DISCONNECT": "False",
    "BLOCK_ON_DISCONNECT_TIMEOUT_MINUTES": "20",
    "BLOCK_ON_DISCONNECT_VOLTAGE_MIN": "3.25",
    "BLOCK_ON_DISCONNECT_VOLTAGE_MAX": "3.35",
    "EXTERNAL_SENSOR_DBUS_DEVICE": "",
    "EXTERNAL_SENSOR_DBUS_PATH_CURRENT": "",
    "EXTERNAL_SENSOR_DBUS_PATH_SOC": "",
    "CHARGE_MODE": "1",
    "CVL_RECALCULATION_EVERY": "60",
    "CVL_RECALCULATION_ON_MAX_PERCENTAGE_CHANGE": "33",
    "CVCM_ENABLE": "True",
    "SWITCH_TO_FLOAT_WAIT_FOR_SEC": "900",
    "SWITCH_TO_FLOAT_CELL_VOLTAGE_DIFF": "0.010",
    "SWITCH_TO_FLOAT_CELL_VOLTAGE_DEVIATION": "0.003",
    "SWITCH_TO_BULK_SOC_THRESHOLD": "80",
    "SWITCH_TO_BULK_CELL_VOLTAGE_DIFF": "0.080",
    "CVL_CONTROLLER_MODE": "1",
    "CVL_ICONTROLLER_FACTOR": "0.2",
    "CCCM_CV_ENABLE": "True",
    "DCCM_CV_ENABLE": "True",
    "CELL_VOLTAGES_WHILE_CHARGING": "3.500, 3.450, 3.425, 3.400, 3.375",
    "MAX_CHARGE_CURRENT_CV_FRACTION": "0.000, 0.005, 0.050, 0.250, 1.000",
    "CELL_VOLTAGES_WHILE_DISCHARGING": "2.800, 2.900, 3.000, 3.100, 3.190",
    "MAX_DISCHARGE_CURRENT_CV_FRACTION": "0.000, 0.005, 0.050, 0.250, 1.000",
    "CCCM_T_ENABLE": "True",
    "DCCM_T_ENABLE": "True",
    "TEMPERATURES_WHILE_CHARGING": "0, 2, 5, 10, 40, 45, 50, 55",
    "MAX_CHARGE_CURRENT_T_FRACTION": "0.00, 0.25, 0.50, 1.00, 1.00, 0.50, 0.25, 0.00",
    "TEMPERATURES_WHILE_DISCHARGING": "-10, 0, 5, 10, 40, 45, 50, 55",
    "MAX_DISCHARGE_CURRENT_T_FRACTION": "0.00, 0.25, 0.50, 1.00, 1.00, 0.50, 0.25, 0.00",
    "CCCM_T_MOSFET_ENABLE": "True",
    "DCCM_T_MOSFET_ENABLE": "True",
    "MOSFET_TEMPERATURES_WHILE_CHARGING": "70, 80, 90",
    "MAX_CHARGE_CURRENT_T_MOSFET_FRACTION": "1.00, 0.25, 0.00",
    "MOSFET_TEMPERATURES_WHILE_DISCHARGING": "70, 80, 90",
    "MAX_DISCHARGE_CURRENT_T_MOSFET_FRACTION": "1.00, 0.25, 0.00",
    "CCCM_SOC_ENABLE": "False",
    "DCCM_SOC_ENABLE": "False",
    "SOC_WHILE_CHARGING": "98, 95, 90, 85",
    "MAX_CHARGE_CURRENT_SOC_FRACTION": "0.10, 0.20, 0.50, 1.00",
    "SOC_WHILE_DISCHARGING": "5, 10, 15, 20",
    "MAX_DISCHARGE_CURRENT_SOC_FRACTION": "0.10, 0.20, 0.50, 1.00",
    "CHARGE_CURRENT_RECOVERY_THRESHOLD_PERCENT": "0.015",
    "DISCHARGE_CURRENT_RECOVERY_THRESHOLD_PERCENT": "0.015",
    "TIME_TO_GO_ENABLE": "True",
    "TIME_TO_SOC_POINTS": "",
    "TIME_TO_SOC_VALUE_TYPE": "1",
    "TIME_TO_SOC_RECALCULATE_EVERY": "60",
    "TIME_TO_SOC_INC_FROM": "False",
    "HISTORY_ENABLE": "True",
    "BMS_TYPE": "",
    "EXCLUDED_DEVICES": "",
    "POLL_INTERVAL": "",
    "PUBLISH_CONFIG_VALUES": "False",
    "PUBLISH_BATTERY_DATA_AS_JSON": "False",
    "BATTERY_CELL_DATA_FORMAT": "1",
    "MIDPOINT_ENABLE": "False",
    "TEMPERATURE_SOURCE_BATTERY": "1, 2, 3, 4",
    "TEMPERATURE_1_NAME": "Temp 1",
    "TEMPERATURE_2_NAME": "Temp 2",
    "TEMPERATURE_3_NAME": "Temp 3",
    "TEMPERATURE_4_NAME": "Temp 4",
    "GUI_PARAMETERS_SHOW_ADDITIONAL_INFO": "False",
    "TELEMETRY": "True",
    "VOLTAGE_DROP": "0.00",
    "USE_PORT_AS_UNIQUE_ID": "False",
    "BATTERY_CAPACITY": "50",
    "AUTO_RESET_SOC": "True",
    "USE_BMS_DVCC_VALUES": "False",
    "SOC_LOW_WARNING": "20",
    "SOC_LOW_ALARM": "10",
    "INVERT_CURRENT_MEASUREMENT": "1",
    "GREENMETER_ADDRESS": "1",
    "LIPRO_START_ADDRESS": "2",
    "LIPRO_END_ADDRESS": "4",
    "LIPRO_CELL_COUNT": "15",
    "UBMS_CAN_MODULE_SERIES": "4",
    "UBMS_CAN_MODULE_PARALLEL": "2",
}

#: keys of other releases, read as their RELEASE name (v1.x called BATTERY_ADDRESSES so)
RENAMED = {"MODBUS_ADDRESSES": "BATTERY_ADDRESSES"}

#: BMS_TYPE names of serial BMSs -> bmsbank family (the class names in dbus-serialbattery.py;
#: ANT, MNB and Sinowealth load only when named)
SERIAL_TYPES = {
    "Daly": "daly",
    "Daren485": "daren_485",
    "Ecs": "ecs",
    "EG4_Lifepower": "eg4_lifepower",
    "EG4_LL": "eg4_ll",
    "Felicity": "felicity",
    "HeltecModbus": "heltecmodbus",
    "HLPdataBMS4S": "hlpdatabms4s",
    "Jkbms": "jkbms",
    "Jkbms_pb": "jkpb",
    "KS48100": "ks48100",
    "LltJbd": "jbd",
    "Pace": "pace",
    "Renogy": "renogy",
    "Seplos": "seplos",
    "Seplosv3": "seplosv3",
    "ANT": "ant",
    "MNB": "mnb",
    "Sinowealth": "sinowealth",
}
#: CAN BMS names (CAN_PORT) -> bmsbank family
CAN_TYPES = {"Daly_Can": "daly_can", "Jkbms_Can": "jkbms_can"}
#: Bluetooth BMS names (BLUETOOTH_BMS) -> bmsbank family that speaks BLE
BLE_TYPES = {"Jkbms_Ble": "jkbms_ble", "LltJbd_Ble": "jbd"}
#: names dbus-serialbattery knows that no bmsbank family speaks
NO_FAMILY = ("RV_C_Can", "Ubms_Can", "Kilovault_Ble", "LiTime_Ble")

#: the Daly request address is 0x3F + board number (bmsbank's daly family); dbus-serialbattery
#: tries 0x40 (board 1) and 0x80 (the UART host address) by default
DALY_HOST = 0x3F

#: keys bmsbank has nothing for, whatever their value: why
NOT_CARRIED = {
    "BLUETOOTH_USE_POLLING": "bmsbank always polls over a connection it keeps open",
    "BLUETOOTH_FORCE_RESET_BLE_STACK": "bmsbank never resets the Bluetooth stack; its poller "
    "reconnects",
    "BLUETOOTH_USE_USB": "a GX setting; pick the adapter with [[ble]] adapter (hci0, hci1...)",
    "BLOCK_ON_DISCONNECT": "bmsbank blocks always: a pack silent for bank.stale_after is "
    "offline, and with no pack online CCL = DCL = bank.safe_ccl/safe_dcl (0 A)",
    "BLOCK_ON_DISCONNECT_TIMEOUT_MINUTES": "bmsbank never keeps charging on data older than "
    "bank.stale_after",
    "BLOCK_ON_DISCONNECT_VOLTAGE_MIN": "bmsbank has no ride-through window after a lost BMS",
    "BLOCK_ON_DISCONNECT_VOLTAGE_MAX": "bmsbank has no ride-through window after a lost BMS",
    "CVL_RECALCULATION_ON_MAX_PERCENTAGE_CHANGE": "bmsbank cuts at once to protect a cell and "
    "otherwise ramps (bank.cvl_ramp, bank.current_hold, bank.current_ramp)",
    "SWITCH_TO_FLOAT_CELL_VOLTAGE_DEVIATION": "bmsbank's absorption timer has no restart band: it "
    "counts while the spread is at most bank.absorption_spread",
    "CVL_ICONTROLLER_FACTOR": "bmsbank has no I-controller (see CVL_CONTROLLER_MODE)",
    "CHARGE_CURRENT_RECOVERY_THRESHOLD_PERCENT": "bmsbank holds a cut limit for "
    "bank.current_hold s, then ramps it by bank.current_ramp A/s: no flapping without a threshold",
    "DISCHARGE_CURRENT_RECOVERY_THRESHOLD_PERCENT": "bmsbank holds a cut limit for "
    "bank.current_hold s, then ramps it by bank.current_ramp A/s: no flapping without a threshold",
    "TIME_TO_SOC_VALUE_TYPE": "bmsbank's time-to-SoC values are seconds",
    "TIME_TO_SOC_RECALCULATE_EVERY": "bmsbank averages the current over "
    "bank.current_average_time instead",
    "TIME_TO_SOC_INC_FROM": "no bmsbank equivalent",
    "HISTORY_ENABLE": "bmsbank keeps days since full charge in bank.state_file; no other "
    "history on D-Bus",
    "EXCLUDED_DEVICES": "bmsbank opens only the [[ports]] devices it is given",
    "PUBLISH_CONFIG_VALUES": "bmsbank publishes no config on D-Bus (`bmsbank check` shows it)",
    "PUBLISH_BATTERY_DATA_AS_JSON": "bmsbank's tap (`bmsbank tap`) has every state as JSON",
    "BATTERY_CELL_DATA_FORMAT": "bmsbank's pack services always publish /Voltages/CellN (format 1)",
    "MIDPOINT_ENABLE": "bmsbank publishes no simulated midpoint",
    "TEMPERATURE_SOURCE_BATTERY": "bmsbank's bank temperature is the mean of every sensor the "
    "packs report, not configurable",
    "TEMPERATURE_1_NAME": "bmsbank names temperature sensors itself",
    "TEMPERATURE_2_NAME": "bmsbank names temperature sensors itself",
    "TEMPERATURE_3_NAME": "bmsbank names temperature sensors itself",
    "TEMPERATURE_4_NAME": "bmsbank names temperature sensors itself",
    "GUI_PARAMETERS_SHOW_ADDITIONAL_INFO": "no Venus GUI pages in bmsbank",
    "TELEMETRY": "bmsbank sends no telemetry",
    "USE_PORT_AS_UNIQUE_ID": "bmsbank always names packs port:address",
    "AUTO_RESET_SOC": "bmsbank never writes a BMS's SoC by itself; "
    "`bmsbank control PACK reset_soc true` does it by hand",
    "USE_BMS_DVCC_VALUES": "bmsbank always applies a BMS's own CCL/DCL when it reports one "
    "(the smallest limit wins); its CVL comes from bank.cell_charge_voltage",
    "SOC_LOW_WARNING": "bmsbank has no low-SoC warning level",
    "SOC_LOW_ALARM": "bmsbank has no low-SoC alarm levels",
    "UBMS_CAN_MODULE_SERIES": "no bmsbank family for the Valence U-BMS",
    "UBMS_CAN_MODULE_PARALLEL": "no bmsbank family for the Valence U-BMS",
}


class Ini:
    """A config.ini over its defaults: each key's value and where it was set (``file:line``).

    dbus-serialbattery reads only [DEFAULT]; a key of config.ini replaces the default's.
    Attributes: ``values`` (key -> raw text, blanks squeezed), ``where`` (key -> "file:line" or
    the default's), ``user`` (keys config.ini sets, in its order), ``unknown`` (config.ini keys
    no release knows -> "file:line"), ``sections`` (other sections -> "file:line").
    """

    def __init__(self, path: str, default_path: str | None = None) -> None:
        if default_path is None:
            self.values = dict(DEFAULTS)
            self.where = dict.fromkeys(DEFAULTS, f"default of {RELEASE}")
        else:  # a key an older release lacks keeps RELEASE's default
            self.values = dict(DEFAULTS)
            self.where = dict.fromkeys(DEFAULTS, f"default of {RELEASE}")
            values, where, _ = _read(default_path)
            self.values.update(values)
            self.where.update(where)
        values, where, self.sections = _read(path)
        self.user: list[str] = []
        self.unknown: dict[str, str] = {}
        for key, value in values.items():
            name = RENAMED.get(key, key)
            if name not in self.values:
                self.unknown[key] = where[key]
                continue
            self.values[name], self.where[name] = value, f"{where[key]} as {key}"
            if name == key:
                self.where[name] = where[key]
            self.user.append(name)


def _read(path: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(values, where, other sections) of one ini file's [DEFAULT] section.

    Raises:
        ConfigError: the file cannot be read or is not an ini file (named key and line).

    """
    import configparser

    from bmsbank.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ConfigError("encoding", path, f"UTF-8 text, got byte {exc.start}: not UTF-8") from exc
    except OSError as exc:
        raise ConfigError("file", path, f"a readable file: {exc.strerror}") from exc
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    try:
        parser.read_string(text, source=path)
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError("[DEFAULT]", f"{path}:{exc.lineno}", "the file to start with the "
                          f"[DEFAULT] section, got {exc.line.strip()!r}") from exc  # fmt: skip
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            exc.option, f"{path}:{exc.lineno}", "set once, got a second time"
        ) from exc
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"[{exc.section}]", f"{path}:{exc.lineno}", "one such section") from exc
    except configparser.ParsingError as exc:
        lineno, line = exc.errors[0]
        raise ConfigError(
            "syntax", f"{path}:{lineno}", f"KEY = VALUE, got {line.strip()!r}"
        ) from exc
    lines = _lines(text)
    where = {k: f"{path}:{lines.get(('DEFAULT', k), '?')}" for k in parser.defaults()}
    values = {k: " ".join(v.split()) for k, v in parser.defaults().items()}
    sections = {s: f"{path}:{lines.get((s, None), '?')}" for s in parser.sections()}
    return values, where, sections


_LINE = re.compile(r"^\s*(?:\[(?P<section>[^\]]*)\]|(?P<key>[^=:;#\s][^=:]*?)\s*[=:])")


def _lines(text: str) -> dict[tuple[str, str | None], int]:
    """(section, key) -> line number (1-based) of each key and (section, None) of each header."""
    found: dict[tuple[str, str | None], int] = {}
    section = "DEFAULT"
    for number, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if m is None or line[:1].isspace() and m.group("key"):
            continue  # not a key, or a continuation line of a value
        if m.group("section") is not None:
            section = m.group("section")
            found.setdefault((section, None), number)
        else:
            found.setdefault((section, m.group("key")), number)
    return found
