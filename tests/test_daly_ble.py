"""Daly BLE family ("D2" Modbus-like protocol): captured notifications and what is specific to it
(the generic checks are in tests/plugin_contract.py).

Sources of the frames (each comment says what a frame decodes to):

- I60 = syssi/esphome-daly-bms docs/pdus/daly_bms_24cells.txt (esphome-daly-bms#60): replies to
  the 62-register status read of a 24S board, idle (state register 0x2F = 0).
- I55 = syssi/esphome-daly-bms docs/pdus/daly_bms_blue_series_80_registers.txt
  (esphome-daly-bms#55): replies to the 80-register status read of a 16S "blue series" board
  while it discharges (state register 0x2F = 2).
- SNOOP = syssi/esphome-daly-bms docs/pdus/btsnoop_daly_balancer.log: an HCI log of the Daly app
  talking to a Daly balancer board (same D2 map). The ATT writes and notifications were taken
  out of the btsnoop records as they are; each pair below is a request and its notification.
- AIO = patman15/aiobmsble tests/bms/test_daly_bms.py: ``MockDalyBleakClient.RESP`` (the
  replies to the status, MOSFET and version reads) with the test's ``ref_value``.
- ESPH = syssi/esphome-daly-bms tests/components/daly_bms_ble/common.h: ``VERSION_FRAME_2``,
  ``SETTINGS_FRAME_1`` and the alarm frames the component's faker builds from Daly's sheet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bmsbank.errors import FrameError
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.decode import decode_replies
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, modbus_frame, run_query
from bmsbank.services.poller.plugins.daly_ble.family import (
    SWITCHES,
    read_request,
    write_request,
)
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state
from tests.plugin_contract import Captured, NotifyLink, PluginContract, SimLink, extract_all, poll

I60 = "syssi/esphome-daly-bms docs/pdus/daly_bms_24cells.txt (esphome-daly-bms#60)"
I55 = "syssi/esphome-daly-bms docs/pdus/daly_bms_blue_series_80_registers.txt (#55)"
SNOOP = "syssi/esphome-daly-bms docs/pdus/btsnoop_daly_balancer.log (the Daly app)"
AIO = "patman15/aiobmsble tests/bms/test_daly_bms.py MockDalyBleakClient.RESP"
ESPH = "syssi/esphome-daly-bms tests/components/daly_bms_ble/common.h"

# the app's requests (SNOOP), byte for byte what the family sends
STATUS, MOS, SETTINGS, VERSION = ("d2030000003ed7b9", "d203003e0009f7a3", "d20300800029965f",
                                  "d20300a900208791")  # fmt: skip
STATUS_80 = "d203000000505655"  # ESPH's 80-register read (status_registers: 80)

# I60 line 1: 24 cells 3.291-3.294 V, sensors 16/14/16/16 °C, 79.0 V, raw current 0x7530 = 0 A,
# SoC 33.3 %, state 0 (idle), remaining 104.5 Ah, 24 cells, 4 sensors, 0 cycles, both FETs on
I60_1 = (
    "d2037c0cdc0cdb0cdc0cdc0cdc0cdc0cde0cdc0cdc0cdc0cdc0cdc0cdc0cdc0cde0cdc0cdc0cdc0cdc0cdc0c"
    "dc0cde0cdc0cdc00000000000000000000000000000000003800360038003800000000000000000316753001"
    "4d0cde0cdb00380036000004150018000400000000000100010cdc0003000000000000000000004967"
)
# I55 line 1: 16 cells 3.281-3.283 V, four sensors 13 °C, 52.5 V, raw current 0x7517 = 29975
# -> -2.5 A, SoC 56.1 %, state 2 (discharging), remaining 117.8 Ah, 60 cycles, FETs on,
# balance current 0x7530 = 0, MOSFET 0x37 = 15 °C, board 0 (no sensor)
I55_1 = (
    "d203a00cd10cd20cd30cd30cd30cd20cd30cd30cd30cd30cd30cd30cd30cd30cd30cd3000000000000000000"
    "000000000000000000000000000000000000000000000000350035003500350000000000000000020d751702"
    "310cd30cd1003500350002049a00100004003c0000000100010cd20002008300000000000000000000000075"
    "300000003700000000000000000000000000000000000000000000000000005455"
)
# I55 line 2: 3.279-3.282 V, 15 °C, 52.5 V, raw 0x7511 -> -3.1 A, SoC 53.0 %, state 2,
# remaining 111.3 Ah, 57 cycles (ESPH's STATUS_FRAME_80_REG_2 expects the same)
I55_2 = (
    "d203a00ccf0cd10cd10cd10cd10cd10cd20cd20cd20cd20cd00cd10cd20cd20cd20cd1000000000000000000"
    "000000000000000000000000000000000000000000000000370037003700370000000000000000020d751102"
    "120cd20ccf00370037000204590010000400390000000100010cd1000300a200000000000000000000000075"
    "300000003700000000000000000000000000000000000000000000000000004482"
)
# I55 line 7: raw 0x7513 -> -2.9 A, SoC 34.9 %, state 2, remaining 73.2 Ah, 58 cycles
I55_7 = (
    "d203a00ccf0cd10cd20cd20cd20cd10cd20cd30cd30cd30cd20cd20cd20cd30cd20cd0000000000000000000"
    "000000000000000000000000000000000000000000000000370035003700370000000000000000020d751301"
    "5d0cd30ccf00370035000202dc00100004003a0000000100010cd10004009800000000000000000000000075"
    "30000000370000000000000000000000000000000000000000000000000000cacb"
)
# SNOOP, the app's status read: 16 cells 3.333-3.338 V, one sensor 0x44 = 28 °C (registers 0x26
# and 0x27, past the sensor count, carry 0x0215 and 0x0D07), 53.3 V, 0 A, SoC 0 (a balancer
# counts none), 16 cells, 1 sensor, FETs 0
SNOOP_STATUS = (
    "d2037c0d070d060d070d050d080d090d080d090d090d080d0a0d080d060d0a0d080d08000000000000000000"
    "000000000000000000000000000000000000000000000000440000000000000000000002150d070215753000"
    "000d0a0d0400440044000000000010000100000000000000000d07000600000000000000000000d356"
)
# SNOOP settings read: rated 0x01F4 = 50.0 Ah, cell type 0, charge/discharge switches 0
SNOOP_SETTINGS = (
    "d2035201f40c8000010010000600060001000100010000ffff0dde0e4208fc08980000000013881388753075"
    "30753075300028007d002800000028007d0028000000000000000000000c8000140000000000000057351d"
)
# SNOOP version read: software "B002_111132_03" (0xA9), hardware "E303-032DG-SMB" (0xB1)
SNOOP_VERSION = (
    "d20340423030325f3131313133325f30330000453330332d30333244472d534d420000000000000000000000"
    "0000000000000000000000000000000000000000000000fe8d"
)
# SNOOP MOSFET read (0x3E x 9): balance bits 0, balance current 0x7530 = 0, MOSFET 0xFFFF (no
# sensor), board 0
SNOOP_MOS = "d203120000000075300000ffff0000000000000000476e"
# SNOOP: the app switches the balancer off (0xCF = 0); the board echoes the write
SNOOP_BALANCER_OFF = "d20600cf0000aa56"
# SNOOP: registers 0xCC-0xD0 before that write: 0xCF (the balancer switch) = 1
SNOOP_CC_REQUEST, SNOOP_CC = "d20300cc00055655", "d2030a0001010000100001000ac2bc"
# SNOOP: the echo of "balancer on" arrived once with a bad CRC (1c 8a, not 6b 96); the app
# sent the write again and got it right
SNOOP_BAD_ECHO, SNOOP_BALANCER_ON = "d20600cf00011c8a", "d20600cf00016b96"
# SNOOP: one notification carrying three replies (to reads the app sent earlier)
SNOOP_THREE = (
    "d203120000000075300000ffff0000000000000000476ed20322ffffffffffffffffffffffffffffffffffff"
    "ffffffffffffffffffffffffffffffffdce0d203180000000000000000000000000000000000000000000000"
    "0091dc"
)
# AIO status reply: cells 4.127/4.137/4.147/4.157 V, sensors 20-23 °C, 14.0 V, raw 0x754E =
# 30030 -> +3.0 A (ref_value: "current": 3.0, "battery_charging": True), SoC 90.0 %,
# remaining 345.6 Ah, 4 cells, 4 sensors, 57 cycles, balancer 1, charge FET 0, discharge FET 1
AIO_STATUS = (
    "d2037c101f10291033103d000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000003c003d003e003f0000000000000000008c754e03"
    "84103d101f0000000000000d80000400040039000100000001102e0141002a0000000000000000a0df"
)
# AIO MOSFET reply: MOSFET 0x4E = 38 °C (ref: TempSensor(38.0, MOSFET))
AIO_MOS = "d203120000000075300000004effffffffffffffff0b4e"
# AIO version reply: sw "T00K_321042_11", hw "H2.0_103R_309F9F" (test_device_info), then
# "20240229" at 0xB9 (AIO: the manufacturing date)
AIO_VERSION = (
    "d203405430304b5f3332313034325f3131000048322e305f313033525f333039463946323032343032323900"
    "00000000000000000000000000000000000000000000005541"
)
# ESPH VERSION_FRAME_2: software "204012", "SH39F003" at 0xB9 (ESPH's "hardware version")
ESPH_VERSION = (
    "d203403230343031320000000000000000000000000000000000000000000000000000534833394630303300"
    "0000000000000000000000000000000000000000000000b8f5"
)
# ESPH SETTINGS_FRAME_1: rated 105.0 Ah, LiFePO4, both FET switches on
ESPH_SETTINGS = (
    "d20352041a0c80000100040000000000010000000000001c200dac0dac0a280a28008c008c0068006874cc74"
    "cc749075d00055005500280028006e006e0027002700ff00ff00ff00ff0c8000140001000102a800577f8b"
)
# ESPH's faker status frames (8 cells, 27.1 V, 100 %), one fault bit each, in the wire order of
# Daly's sheet as ESPH reads it ("Byte 0" = a register's low byte):
ESPH_HEAD = (
    "d2037c0d6e0d690d590dd70d0b0d0b0d0c0d0b00000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000003d0028002800000000000000000000010f753003"
    "e80dd70d0b003d003d000000fa0008000100000000000100010d4600cc0000"
)
ESPH_ALARMS = {
    # STATUS_FRAME_62_REG_ALARM_WARN_CHARGING_TEMP_HIGH: 0x3A's high byte, bit 0
    "0100000000000000cf2d": {"high_charge_temperature": 1},
    # STATUS_FRAME_62_REG_ALARM_WARN_CELL_VOLTAGE_HIGH: 0x3A's low byte, bit 0
    "00010000000000001e21": {"high_cell_voltage": 1},
    # STATUS_FRAME_62_REG_ALARM_AFE_FAILURE: 0x3C's high byte, bit 0
    "00000000010000000f1d": {"internal_failure": 2},
}

CAPTURED = [
    Captured(I60, I60_1, "status", {
        "voltage": 79.0, "current": 0.0, "soc": 33.3, "remaining": 104.5, "mode": 0,
        "cell_count": 24, "sensor_count": 4, "cycles": 0, "charge_fet": 1, "discharge_fet": 1,
        "temperatures": [16.0, 14.0, 16.0, 16.0, -40.0, -40.0, -40.0, -40.0],
        "fault_high": 0, "fault_low": 0}, request=STATUS),
    Captured(I55, I55_1, "status", {
        "voltage": 52.5, "current": -2.5, "soc": 56.1, "remaining": 117.8, "mode": 2,
        "cell_count": 16, "cycles": 60, "mosfet_temperature": 15.0, "board_temperature": None,
        "balance_current": 0.0, "balance_bits": 0}, request=STATUS_80),
    # without its request: a 160-byte reply is the 80-register status read
    Captured(I55, I55_2, "status", {"current": -3.1, "soc": 53.0, "remaining": 111.3,
                                    "cycles": 57, "mode": 2}),
    Captured(I55, I55_7, "status", {"current": -2.9, "soc": 34.9, "remaining": 73.2,
                                    "mode": 2}, request=STATUS_80),
    Captured(SNOOP, SNOOP_STATUS, "status", {
        "voltage": 53.3, "current": 0.0, "soc": 0.0, "cell_count": 16, "sensor_count": 1,
        "cells": [3.335, 3.334, 3.335, 3.333, 3.336, 3.337, 3.336, 3.337, 3.337, 3.336, 3.338,
                  3.336, 3.334, 3.338, 3.336, 3.336] + [0.0] * 16}, request=STATUS),
    Captured(SNOOP, SNOOP_SETTINGS, "settings", {"capacity": 50.0, "cell_type": 0,
             "charge_switch": 0, "discharge_switch": 0}, request=SETTINGS),
    Captured(SNOOP, SNOOP_VERSION, "version", {"software": "B002_111132_03",
             "hardware_version": "E303-032DG-SMB", "machine_code": ""}, request=VERSION),
    Captured(SNOOP, SNOOP_MOS, "mos", {"mosfet_temperature": None, "balance_current": 0.0},
             request=MOS),
    Captured(SNOOP, SNOOP_BALANCER_OFF, "write", {"register": 0xCF, "value": 0},
             request=SNOOP_BALANCER_OFF),
    Captured(SNOOP, SNOOP_CC, "registers", {"balancer_switch": 1}, request=SNOOP_CC_REQUEST),
    Captured(AIO, AIO_STATUS, "status", {
        "voltage": 14.0, "current": 3.0, "soc": 90.0, "remaining": 345.6, "cycles": 57,
        "cells": [4.127, 4.137, 4.147, 4.157] + [0.0] * 28, "cell_count": 4,
        "temperatures": [20.0, 21.0, 22.0, 23.0] + [-40.0] * 4, "balancer": 1,
        "charge_fet": 0, "discharge_fet": 1}, request=STATUS),
    Captured(AIO, AIO_MOS, "mos", {"mosfet_temperature": 38.0}, request=MOS),
    Captured(AIO, AIO_VERSION, "version", {"software": "T00K_321042_11",
             "hardware_version": "H2.0_103R_309F9F", "machine_code": "20240229"},
             request=VERSION),
    Captured(ESPH, ESPH_VERSION, "version", {"software": "204012", "hardware_version": "",
                                             "machine_code": "SH39F003"}),
    Captured(ESPH, ESPH_SETTINGS, "settings", {"capacity": 105.0, "cell_type": 0,
             "charge_switch": 1, "discharge_switch": 1}, request=SETTINGS),
]  # fmt: skip


def raw(text: str) -> bytes:
    """Bytes of a hex literal."""
    return bytes.fromhex(text)


def parsed(plugin: Plugin, reply: str, request: str | None) -> dict[str, dict]:
    """One reply decoded as ``{part: fields}``."""
    part, fields = plugin.parse(raw(reply), raw(request) if request else None, 0xD2)
    return {part: fields}


def status_with_faults(high: int, low: int) -> str:
    """I60's status reply with fault registers 0x3A-0x3D set (CRC recomputed)."""
    body = bytearray(raw(I60_1)[:-2])
    body[3 + 0x3A * 2 : 3 + 0x3E * 2] = high.to_bytes(4, "big") + low.to_bytes(4, "big")
    return modbus_frame(bytes(body)).hex()


def notifications(data: bytes, size: int = 20) -> list[tuple[None, bytes]]:
    """``data`` cut as BLE notifications of ``size`` bytes (20: the default ATT MTU of 23)."""
    return [(None, data[i : i + size]) for i in range(0, len(data), size)]


class TestDalyBle(PluginContract):
    plugin_name = "daly_ble"
    captured = CAPTURED
    requests = {"status": STATUS, "mos": MOS, "settings": SETTINGS, "version": VERSION}
    address = 0xD2
    # 0.1 V, 0.1 A, 0.1 Ah registers; whole °C temperatures
    roundtrip_tolerance = {"voltage": 0.05, "current": 0.05, "remaining": 0.05,
                           "temperatures": 0.5}  # fmt: skip

    # -- the contract's serial-line checks, as a BLE family has them -----------------------
    def test_registered(self, plugin: Plugin) -> None:
        """Metadata of a BLE family: no baud rate, the GATT facts of AIO, ESPH and BAT."""
        info = plugins.families()[self.plugin_name]
        assert plugin.info is info and plugin.name == info.name == self.plugin_name
        assert plugin.title == "Daly BLE" and info.link == "BLE" and plugin.baudrate == 0
        assert not info.multidrop and list(info.addresses) == [0xD2] == [info.default_address]
        assert plugins.simulator_class(self.plugin_name).family is type(plugin)
        ble = info.ble
        assert ble is not None and not ble.with_response
        assert (ble.service, ble.notify, ble.write) == tuple(
            f"0000{short}-0000-1000-8000-00805f9b34fb" for short in ("fff0", "fff1", "fff2")
        )
        assert "DL-" in ble.names  # ESPH README "DL-40D63C3223A2", AIO test_data "DL-4664..."

    def test_echo_is_dropped_by_the_transport(self, plugin: Plugin) -> None:
        """BLE has no echo: what a BLE link does instead is cut replies into notifications.

        A poll cycle through the simulator with every reply delivered in 20-byte notifications
        (the ATT payload at the default MTU) decodes to the model's values.
        """

        models = self.make_models()
        link, stats, parts = NotifyLink(simulators.create(self.plugin_name, models)), \
            LinkStats(), {}  # fmt: skip
        for q in plugin.queries(0xD2):
            parts[q.part] = run_query(plugin, link, q, 0xD2, parts, stats)
        state = validate_state(make_state("sim", 0xD2, plugin.name, 0, plugin.state(parts), {}))
        self.check_state(state, models[0xD2])
        assert stats.noise_bytes == 0

    # -- captured cycles -------------------------------------------------------------------
    def test_state_of_a_discharging_board(self, plugin: Plugin) -> None:
        state = plugin.state(parsed(plugin, I55_1, STATUS_80))
        assert (state["voltage"], state["current"], state["soc"]) == (52.5, -2.5, 56.1)
        assert (state["remaining"], state["capacity"], state["cycles"]) == (117.8, 210.0, 60)
        assert state["cells"] == [3.281, 3.282, 3.283, 3.283, 3.283, 3.282] + [3.283] * 10
        assert state["temperatures"] == [13.0] * 4 and state["mosfet_temperature"] == 15.0
        assert state["charge_fet"] and state["discharge_fet"]
        assert state["balancing"] == [0] * 16 and not any(state["alarms"].values())

    def test_state_of_the_24s_board(self, plugin: Plugin) -> None:
        state = plugin.state(parsed(plugin, I60_1, STATUS))
        assert len(state["cells"]) == 24 and state["cells"][6] == 3.294
        assert state["temperatures"] == [16.0, 14.0, 16.0, 16.0]  # 4 sensors of 8 slots
        assert state["mosfet_temperature"] is None and state["current"] == 0.0

    def test_state_of_the_apps_poll_cycle(self, plugin: Plugin) -> None:
        """SNOOP's board: settings, status, strings and the MOSFET block of one session."""
        parts = {
            **parsed(plugin, SNOOP_SETTINGS, SETTINGS),
            **parsed(plugin, SNOOP_STATUS, STATUS),
            **parsed(plugin, SNOOP_VERSION, VERSION),
            **parsed(plugin, SNOOP_MOS, MOS),
        }
        state = plugin.state(parts)
        assert state["capacity"] == 50.0 and state["voltage"] == 53.3 and state["soc"] == 0.0
        assert state["temperatures"] == [28.0]  # registers 0x26/0x27 hold other values
        assert state["mosfet_temperature"] is None  # 0xFFFF: no MOSFET sensor (AIO)
        assert not state["charge_fet"] and not state["discharge_fet"]
        assert state["hardware"] == "Daly E303-032DG-SMB sw B002_111132_03"
        validate_state(make_state("snoop", 0xD2, plugin.name, 0, state, {}))

    def test_hardware_text_from_either_string_layout(self, plugin: Plugin) -> None:
        status = parsed(plugin, AIO_STATUS, STATUS)
        aio = plugin.state({**status, **parsed(plugin, AIO_VERSION, VERSION)})
        assert aio["hardware"] == "Daly H2.0_103R_309F9F 20240229 sw T00K_321042_11"
        esph = plugin.state({**status, **parsed(plugin, ESPH_VERSION, None)})
        assert esph["hardware"] == "Daly SH39F003 sw 204012"

    def test_aio_reference_values(self, plugin: Plugin) -> None:
        """AIO's ref_value for its mock: 14.0 V, +3.0 A, 90 %, 345.6 Ah, MOSFET 38 °C."""
        state = plugin.state({**parsed(plugin, AIO_STATUS, STATUS), **parsed(plugin, AIO_MOS, MOS)})
        assert (state["voltage"], state["current"], state["soc"]) == (14.0, 3.0, 90.0)
        assert state["cells"] == [4.127, 4.137, 4.147, 4.157] and state["cycles"] == 57
        assert state["temperatures"] == [20.0, 21.0, 22.0, 23.0]
        assert state["mosfet_temperature"] == 38.0 and state["remaining"] == 345.6
        assert not state["charge_fet"] and state["discharge_fet"]  # chrg_mosfet False

    @pytest.mark.parametrize("reply", [I55_1, I55_2, I55_7], ids=["line1", "line2", "line7"])
    def test_current_sign_follows_the_boards_own_state(self, plugin: Plugin, reply) -> None:
        """State register 2 (discharging) with raw current below 30000: + = charge is right."""
        fields = plugin.parse(raw(reply))[1]
        assert fields["mode"] == 2 and fields["current"] < 0
        inverted = plugins.load(self.plugin_name, {"invert_current": True}).parse(raw(reply))[1]
        assert inverted["current"] == -fields["current"] > 0  # Daly's sheet's reading

    def test_invert_current_swaps_the_over_current_bits(self) -> None:
        inverted = plugins.load(self.plugin_name, {"invert_current": True})
        alarms = inverted.state(parsed(inverted, status_with_faults(1 << 1, 0), STATUS))["alarms"]
        assert alarms["high_discharge_current"] == 2 and alarms["high_charge_current"] == 0

    # -- fault bits ------------------------------------------------------------------------
    @pytest.mark.parametrize(("high", "low", "raised"), [
        (1 << 16, 0, {"high_cell_voltage": 1}), (1 << 17, 0, {"high_cell_voltage": 2}),
        (1 << 18, 0, {"low_cell_voltage": 1}), (1 << 19, 0, {"low_cell_voltage": 2}),
        (1 << 20, 0, {"high_voltage": 1}), (1 << 21, 0, {"high_voltage": 2}),
        (1 << 22, 0, {"low_voltage": 1}), (1 << 23, 0, {"low_voltage": 2}),
        (1 << 24, 0, {"high_charge_temperature": 1}), (1 << 25, 0, {"high_charge_temperature": 2}),
        (1 << 26, 0, {"low_charge_temperature": 1}), (1 << 27, 0, {"low_charge_temperature": 2}),
        (1 << 28, 0, {"high_temperature": 1}), (1 << 29, 0, {"high_temperature": 2}),
        (1 << 30, 0, {"low_temperature": 1}), (1 << 31, 0, {"low_temperature": 2}),
        (1 << 0, 0, {"high_charge_current": 1}), (1 << 1, 0, {"high_charge_current": 2}),
        (1 << 2, 0, {"high_discharge_current": 1}), (1 << 3, 0, {"high_discharge_current": 2}),
        (1 << 4 | 1 << 5, 0, {}),  # SoC too high: not mapped
        (1 << 6, 0, {"low_soc": 1}), (1 << 7, 0, {"low_soc": 2}),
        (1 << 8, 0, {"cell_imbalance": 1}), (1 << 9, 0, {"cell_imbalance": 2}),
        (1 << 10 | 1 << 11, 0, {}),  # temperature difference (esphome-daly-bms#20's ice test)
        (0, 1 << 16, {"high_internal_temperature": 2}),  # charge MOSFET over-temperature
        (0, 1 << 17, {"high_internal_temperature": 2}),
        (0, 1 << 20, {"internal_failure": 2}), (0, 1 << 24, {"internal_failure": 2}),
        (0, 1 << 29, {"internal_failure": 2}), (0, 1 << 31, {"internal_failure": 2}),
        (0, 1 << 30, {}), (0, 0xFFFF, {}),  # vehicle communication; register 0x3D reserved
        (1 << 24 | 1 << 25, 0, {"high_charge_temperature": 2}),  # both levels: the higher
    ], ids=lambda v: f"0x{v:x}" if isinstance(v, int) else None)  # fmt: skip
    def test_fault_bits(self, plugin: Plugin, high: int, low: int, raised: dict) -> None:
        alarms = plugin.state(parsed(plugin, status_with_faults(high, low), STATUS))["alarms"]
        assert {name: level for name, level in alarms.items() if level} == raised

    @pytest.mark.parametrize(("tail", "raised"), list(ESPH_ALARMS.items()),
                             ids=["charge-temperature-warning", "cell-voltage-warning",
                                  "afe-failure"])  # fmt: skip
    def test_esphomes_alarm_frames(self, plugin: Plugin, tail: str, raised: dict) -> None:
        frames, errors, _ = extract_all(plugin, raw(ESPH_HEAD + tail))
        assert len(frames) == 1 and not errors
        state = plugin.state({"status": plugin.parse(frames[0], raw(STATUS))[1]})
        assert state["voltage"] == 27.1 and state["soc"] == 100.0 and len(state["cells"]) == 8
        assert {name: level for name, level in state["alarms"].items() if level} == raised

    @pytest.mark.parametrize(("tail", "fault_low", "raised"), [
        ("0000000000000001611f", 1, {}),  # "first_bit": 0x3D bit 0, reserved in Daly's sheet
        ("8000000000000000a8bf", 0, {"low_temperature": 2}),  # "last_bit": 0x3A high byte bit 7
    ], ids=["first-bit", "last-bit"])  # fmt: skip
    def test_aios_problem_frames(self, plugin, tail: str, fault_low: int, raised: dict) -> None:
        """AIO's ``problem_response`` frames: AIO flags any set bit as a problem; here a bit is
        an alarm only where Daly's sheet names one (the reserved bit 0 raises none)."""
        frame = AIO_STATUS[:-20] + tail
        fields = plugin.parse(raw(frame), raw(STATUS))[1]
        assert fields["fault_low"] == fault_low
        alarms = plugin.state({"status": fields})["alarms"]
        assert {name: level for name, level in alarms.items() if level} == raised

    # -- notifications and bad input -------------------------------------------------------
    def test_a_reply_split_at_every_byte_boundary(self, plugin: Plugin) -> None:
        for cap in self.captured:
            frame = cap.raw
            for k in range(1, len(frame)):
                buf, stats = bytearray(frame[:k]), LinkStats()
                assert plugin.extract(buf, stats) is None, (cap.source, k)
                buf += frame[k:]
                assert plugin.extract(buf, stats) == frame and not buf, (cap.source, k)
                assert stats.noise_bytes == 0

    def test_several_replies_in_one_notification(self, plugin: Plugin) -> None:
        frames, errors, stats = extract_all(plugin, raw(SNOOP_THREE))
        assert [len(f) for f in frames] == [23, 39, 29] and not errors
        assert stats.noise_bytes == 0
        assert plugin.parse(frames[0])[0] == "mos"  # an 18-byte reply without its request

    def test_a_late_reply_is_not_taken_for_the_read_in_flight(self, plugin: Plugin) -> None:
        """SNOOP: after a 0x3E read the 56-byte reply to an earlier 0x63 x 28 read arrived."""
        late = modbus_frame(raw("d20338") + b"\xff" * 56)
        assert late.hex().endswith("d682")  # byte for byte the notification's first reply
        for request, kind in ((MOS, "malformed"), (None, "unexpected")):
            with pytest.raises(FrameError) as err:
                plugin.parse(late, raw(request) if request else None, 0xD2)
            assert err.value.kind == kind

    def test_a_notification_stream_decodes_with_noise_counted(self, plugin: Plugin) -> None:
        stream = b"\x00\xd2\x13" + raw(I55_1) + b"garbage" + raw(SNOOP_MOS)
        replies = notifications(stream, 20)
        parts, stats, left = decode_replies(plugin, replies)
        assert set(parts) == {"status", "mos"} and left == 0
        assert stats.noise_bytes == 3 + len(b"garbage")
        assert parts["status"]["current"] == -2.5 and parts["mos"]["mosfet_temperature"] is None

    @pytest.mark.parametrize(("foreign", "what"), [
        ("dd03001d0618000001f201f400002c7c00000000000080640304030b8b0b8a0b84fa8d77", "JBD"),
        ("a50190080214000075450378" "89", "Daly UART A5"),
        ("510314ffff000205dc05dcc0100002" "8e7f0001f2c7ffff1d8e", "Daly ESS-DL p81"),
    ], ids=["jbd", "daly-uart", "daly-p81"])  # fmt: skip
    def test_another_familys_frame_is_noise(self, plugin: Plugin, foreign: str, what) -> None:
        """JBD: syssi/esphome-jbd-bms docs/pdus/JBD-SP04S034-L4S-200A-B-U.txt; Daly UART:
        jblance/mpp-solar#83 (0x90 reply, as tests/test_daly.py); p81: syssi/esphome-daly-bms
        docs/pdus/ess-dl-bms-41_260321_0323.txt (the alarm block reply, from 0x51)."""
        frames, errors, stats = extract_all(plugin, raw(foreign) + raw(SNOOP_MOS))
        assert frames == [raw(SNOOP_MOS)] and not errors, what
        assert stats.noise_bytes == len(raw(foreign))

    def test_the_real_bad_check_is_counted_and_skipped(self, plugin: Plugin) -> None:
        """SNOOP's corrupted echo, then the good one the app got on its retry."""
        frames, errors, _ = extract_all(plugin, raw(SNOOP_BAD_ECHO))
        assert not frames and [e.kind for e in errors] == ["checksum"]
        frames, errors, stats = extract_all(plugin, raw(SNOOP_BAD_ECHO + SNOOP_BALANCER_ON))
        assert frames == [raw(SNOOP_BALANCER_ON)] and stats.noise_bytes == 8

    def test_an_exception_reply_is_counted_and_skipped(self, plugin: Plugin) -> None:
        """Built (no D2 exception is captured): ``D2 83 02`` = illegal data address, as the
        simulator answers a read outside its registers."""
        exception = modbus_frame(raw("d28302"))
        frames, errors, _ = extract_all(plugin, exception + raw(SNOOP_MOS))
        assert frames == [raw(SNOOP_MOS)] and [e.kind for e in errors] == ["exception"]
        sim = simulators.create(self.plugin_name, {0xD2: BatteryModel()})
        assert sim.feed(read_request(0xC0, 0x20)) == [exception]

    def test_aios_invalid_replies(self, plugin: Plugin) -> None:
        """AIO's ``wrong_response`` "wrong CRC" and ``MockInvalidBleakClient``'s reply (17 data
        bytes, no whole register; AIO: "too short frame") are both refused."""
        frames, errors, _ = extract_all(plugin, raw(AIO_STATUS[:-4] + "dead"))
        assert not frames and [e.kind for e in errors] == ["checksum"]
        short = raw("d20311101f10291033103d0000000000000000005d0f")
        for request, kind in ((STATUS, "malformed"), (None, "unexpected")):
            with pytest.raises(FrameError) as err:
                plugin.parse(short, raw(request) if request else None, 0xD2)
            assert err.value.kind == kind

    @pytest.mark.parametrize(("request_", "reply", "kind"), [
        (MOS, I60_1, "malformed"),  # 124 bytes to a read of 9 registers
        (None, SNOOP_CC, "unexpected"),  # a 10-byte reply: no read of this family
        ("d204003e00094263", SNOOP_MOS, "unexpected"),  # an FC 04 read
        ("d203003e0009f7a4", SNOOP_MOS, "unexpected"),  # the read's CRC is wrong
        (SNOOP_BALANCER_ON, SNOOP_BALANCER_OFF, "unexpected"),  # echo of another write
    ], ids=["byte-count", "unknown-size", "fc04", "bad-request-crc", "wrong-echo"])  # fmt: skip
    def test_reply_rejected_with_its_kind(self, plugin, request_, reply, kind) -> None:
        frames, errors, _ = extract_all(plugin, raw(reply))
        assert len(frames) == 1 and not errors
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], raw(request_) if request_ else None, 0xD2)
        assert err.value.kind == kind

    @pytest.mark.parametrize(("register", "value"), [
        (0x31, 0), (0x31, 33), (0x32, 9), (0x2A, 1001), (0x29, 0),
    ], ids=["no-cells", "33-cells", "9-sensors", "soc-100.1", "current-minus-3000"])  # fmt: skip
    def test_impossible_status_is_malformed(self, plugin, register, value) -> None:
        body = bytearray(raw(I60_1)[:-2])
        body[3 + register * 2 : 5 + register * 2] = value.to_bytes(2, "big")
        with pytest.raises(FrameError) as err:
            plugin.parse(modbus_frame(bytes(body)), raw(STATUS))
        assert err.value.kind == "malformed"

    def test_state_needs_the_status_block(self, plugin: Plugin) -> None:
        with pytest.raises(FrameError) as err:
            plugin.state(parsed(plugin, SNOOP_MOS, MOS))
        assert err.value.kind == "truncated"
        window = {"status": plugin.parse(raw(SNOOP_CC), raw(SNOOP_CC_REQUEST))[1]}
        with pytest.raises(FrameError) as err:
            plugin.state(window)
        assert err.value.kind == "truncated"

    # -- polling, options, writes, simulator -----------------------------------------------
    def test_queries_follow_the_options(self) -> None:
        plugin = plugins.load(self.plugin_name, {"mos_temperature": False})
        assert [q.part for q in plugin.queries(0xD2)] == ["status", "settings", "version"]
        with pytest.raises(ValueError):
            plugin.queries(1)

    @pytest.mark.parametrize("action", sorted(SWITCHES))
    @pytest.mark.parametrize("value", [False, True])
    def test_writes_are_echoed_and_applied(self, plugin: Plugin, action: str, value: bool) -> None:
        model = BatteryModel(charge_fet=not value, discharge_fet=not value, balancer=not value)
        link = SimLink(simulators.create(self.plugin_name, {0xD2: model}))
        plugin.control(link, 0xD2, action, value, {})
        assert link.sent == [write_request(SWITCHES[action], int(value))]
        field = {"charge": "charge_fet", "discharge": "discharge_fet", "balance": "balancer"}
        assert getattr(model, field[action]) is value

    def test_balancer_writes_are_the_apps(self) -> None:
        assert write_request(0xCF, 0) == raw(SNOOP_BALANCER_OFF)
        assert write_request(0xCF, 1) == raw(SNOOP_BALANCER_ON)

    def test_a_wrong_echo_fails_the_write(self, plugin: Plugin) -> None:
        class Liar(SimLink):
            def exchange(self, request: bytes, extract: Any) -> bytes:
                self.sent.append(request)
                self.buf = bytearray(raw(SNOOP_BALANCER_OFF))
                return self.receive(extract)

        link = Liar(simulators.create(self.plugin_name, {0xD2: BatteryModel()}))
        with pytest.raises(FrameError) as err:
            plugin.control(link, 0xD2, "balance", True, {})
        assert err.value.kind == "unexpected"

    def test_simulator_answers_only_what_a_board_answers(self) -> None:
        sim = simulators.create(self.plugin_name, {0xD2: BatteryModel()})
        assert sim.feed(write_request(0xA7, 500)) == []  # SoC write: not one of the switches
        assert sim.feed(write_request(0xA5, 2)) == []  # not 0 or 1
        assert sim.feed(raw("d203003e0009f7a4")) == []  # bad CRC
        assert sim.feed(raw("01030000003ec41a")) == []  # another device address
        assert len(sim.feed(raw(STATUS_80))[0]) == 165  # ESPH's 80-register read

    def test_simulated_32s_pack_is_the_most_a_board_reports(self, plugin: Plugin) -> None:
        model = BatteryModel(cells=32, temperatures=[10.0 + i for i in range(8)])
        state = poll(plugin, simulators.create(self.plugin_name, {0xD2: model}), 0xD2)
        assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.001)
        assert state["temperatures"] == model.temperatures
        assert state["hardware"] == "Daly H1.0_SIM DL-SIMULATED sw SIM-D2-1.0"


def bmsbank(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmsbank.cli", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_decodes_notifications_as_they_arrive():
    """I55 line 1 as 20-byte notifications: an 80-register reply needs no request."""
    data = raw(I55_1)
    pieces = [data[i : i + 20].hex() for i in range(0, len(data), 20)]
    out = bmsbank("decode", "daly_ble", *pieces)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert state["bms"] == "daly_ble" and state["pack"] == "decode:210"
    assert (state["voltage"], state["current"], state["soc"]) == (52.5, -2.5, 56.1)
    assert state["cells"][:3] == [3.281, 3.282, 3.283] and len(state["cells"]) == 16
    assert state["temperatures"] == [13.0] * 4 and state["mosfet_temperature"] == 15.0


def test_cli_decodes_request_reply_pairs():
    """The app's session (SNOOP) as REQUEST=REPLY pairs, the way the poller pairs them."""
    pairs = [f"{SETTINGS}={SNOOP_SETTINGS}", f"{STATUS}={SNOOP_STATUS}",
             f"{VERSION}={SNOOP_VERSION}", f"{MOS}={SNOOP_MOS}"]  # fmt: skip
    out = bmsbank("decode", "daly_ble", *pairs)
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert (state["voltage"], state["capacity"], state["temperatures"]) == (53.3, 50.0, [28.0])
    assert state["hardware"] == "Daly E303-032DG-SMB sw B002_111132_03"


def test_cli_rejects_a_bad_check_and_a_reply_it_cannot_place():
    out = bmsbank("decode", "daly_ble", SNOOP_BAD_ECHO)
    assert out.returncode == 1 and "rejected (checksum)" in out.stderr
    out = bmsbank("decode", "daly_ble", SNOOP_CC)
    assert out.returncode == 1 and "rejected (unexpected)" in out.stderr
