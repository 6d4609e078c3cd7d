"""Victron CAN-bus BMS encoder (bmsbank.services.publisher.canbms) against seed 004.

Every expected value below is decoded with struct / bit arithmetic written here from the seed's
tables, independently of the encoder.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsbank.config import CanConfig, Config
from bmsbank.schema import ALARMS
from bmsbank.services.publisher import canbms, paths
from tests.test_publisher_paths import make_bank

CAN = CanConfig(manufacturer="bmsbank")
IDS = (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x372, 0x373)


def frame(bank, can_id, config=CAN):
    found = dict(canbms.frames(bank, config))
    return found[can_id]


def pairs(data: bytes) -> tuple[list[int], list[int]]:
    """0x35A as (16 alarm pairs, 16 warning pairs); pair k = bits 2(k%4)..+1 of byte k//4."""
    every = [(data[k // 4] >> (2 * (k % 4))) & 0b11 for k in range(32)]
    return every[:16], every[16:]


def test_seed_candump_0x351():
    # seed 004 §5.1: "<0x351> [8] 45 02 4c 04 4c 04 00 00" = CVL 58.1 V, CCL 110 A, DCL 110 A
    data = frame(make_bank(cvl=58.1, ccl=110.0, dcl=110.0, low_voltage=0.0), 0x351)
    assert data == bytes.fromhex("45 02 4c 04 4c 04 00 00")
    assert struct.unpack("<4H", data) == (581, 1100, 1100, 0)


def test_seed_candump_0x355():
    # seed 004 §5.1: "<0x355> [8] 59 00 64 00 ..." = SoC 89 %, SoH 100 %; bytes 4-5 high-res SoC
    data = frame(make_bank(soc=89.0), 0x355)
    assert data[:4] == bytes.fromhex("59 00 64 00")
    assert struct.unpack("<4H", data) == (89, 100, 8900, 0)


def test_seed_candump_0x356():
    # seed 004 §5.1: "<0x356> [8] 31 16 ce 00 3e 01 00 00" = 56.81 V, 20.6 A, 31.8 degC
    data = frame(make_bank(voltage=56.81, current=20.6, temperature=31.8), 0x356)
    assert data == bytes.fromhex("31 16 ce 00 3e 01 00 00")


def test_0x351_discharge_voltage():
    data = frame(make_bank(cvl=55.2, ccl=100.0, dcl=200.0, low_voltage=46.4), 0x351)
    assert struct.unpack("<4H", data) == (552, 1000, 2000, 464)


def test_0x356_signed_current_and_temperature():
    data = frame(make_bank(voltage=51.2, current=-20.6, temperature=-5.5), 0x356)
    assert data[2:4] == bytes.fromhex("32 ff")  # -206 in two's complement, little-endian
    assert struct.unpack("<3h", data[:6]) == (5120, -206, -55)


def test_every_id_present_in_order_with_8_bytes():
    frames = canbms.frames(make_bank(), CAN)
    ids = [i for i, _ in frames]
    assert ids[0] == 0x351  # the one Venus watches for liveness goes first
    assert set(IDS) <= set(ids) and len(ids) == len(set(ids))
    for can_id, data in frames:
        assert can_id < 0x800, "11-bit identifiers only"
        assert isinstance(data, bytes) and len(data) == 8


def test_every_id_present_for_empty_bank():
    frames = dict(canbms.frames(paths.empty_bank(Config()), CAN))
    assert set(IDS) <= set(frames)
    assert frames[0x351] == bytes(8)


def test_0x35e_manufacturer():
    assert frame(make_bank(), 0x35E) == b"bmsbank\x00"
    assert frame(make_bank(), 0x35E, CanConfig(manufacturer="ABCDEFGH")) == b"ABCDEFGH"


def test_0x35f_model_firmware_capacity():
    data = frame(make_bank(capacity=560.0), 0x35F)
    model, firmware = struct.unpack(">HH", data[:4])  # firmware big-endian per seed
    (capacity,) = struct.unpack("<H", data[4:6])  # capacity little-endian
    assert model == 0
    assert firmware == canbms.firmware_version()
    assert capacity == 560
    assert canbms.firmware_version("1.4.2") == 0x0104
    assert struct.pack(">H", canbms.firmware_version("2.17")) == bytes([2, 17])


def test_0x372_module_counts():
    data = frame(make_bank(online=2, blocking_charge=0, blocking_discharge=1, offline=1), 0x372)
    assert struct.unpack("<4H", data) == (2, 0, 1, 1)


def test_0x373_cells_in_mv_and_kelvin():
    bank = make_bank(min_cell_voltage=3.3214, max_cell_voltage=3.3391,
                     min_temperature=21.04, max_temperature=27.96)  # fmt: skip
    assert struct.unpack("<4H", frame(bank, 0x373)) == (3321, 3339, 294, 301)


def test_0x373_unknown_is_zero():
    bank = make_bank(min_cell_voltage=None, max_cell_voltage=None,
                     min_temperature=None, max_temperature=None)  # fmt: skip
    assert frame(bank, 0x373) == bytes(8)


def test_0x379_installed_capacity():
    assert struct.unpack("<H", frame(make_bank(installed_capacity=840.0), 0x379)[:2]) == (840,)


# ---- 0x35A ------------------------------------------------------------------------------------

SUPPORTED = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12}  # seed pairs we map; the rest must be 00


def test_0x35a_all_ok_by_hand():
    data = frame(make_bank(alarms=dict.fromkeys(ALARMS, 0)), 0x35A)
    # byte 0: pairs 1-3 = 10 -> 0b10101000; byte 1: all four = 10; byte 2: pairs 8 and 11;
    # byte 3: pair 12 (cell imbalance) only; warnings repeat in bytes 4-7.
    assert data == bytes([0xA8, 0xAA, 0x82, 0x02, 0xA8, 0xAA, 0x82, 0x02])
    alarms, warnings = pairs(data)
    for k in range(16):
        expected = 0b10 if k in SUPPORTED else 0b00
        assert alarms[k] == expected and warnings[k] == expected, k


@pytest.mark.parametrize(
    ("name", "pair"),
    [
        ("high_voltage", 1), ("high_cell_voltage", 1), ("low_voltage", 2),
        ("low_cell_voltage", 2), ("high_temperature", 3), ("low_temperature", 4),
        ("high_charge_temperature", 5), ("low_charge_temperature", 6),
        ("high_discharge_current", 7), ("high_current", 7), ("high_charge_current", 8),
        ("internal_failure", 11), ("high_internal_temperature", 11), ("bms_cable", 11),
        ("cell_imbalance", 12),
    ],
)  # fmt: skip
def test_0x35a_alarm_and_warning_pairs(name, pair):
    alarm = dict.fromkeys(ALARMS, 0) | {name: 2}
    alarms, warnings = pairs(frame(make_bank(alarms=alarm), 0x35A))
    assert alarms[pair] == 0b01 and warnings[pair] == 0b01  # an alarm is also a warning
    assert all(alarms[k] == 0b10 for k in SUPPORTED - {pair})
    warning = dict.fromkeys(ALARMS, 0) | {name: 1}
    alarms, warnings = pairs(frame(make_bank(alarms=warning), 0x35A))
    assert alarms[pair] == 0b10 and warnings[pair] == 0b01


def test_0x35a_golden_high_cell_voltage_alarm():
    data = frame(make_bank(alarms=dict.fromkeys(ALARMS, 0) | {"high_cell_voltage": 2}), 0x35A)
    assert data[0] == 0b10100100 and data[4] == 0b10100100


@pytest.mark.parametrize("name", ["short_circuit", "low_soc"])
def test_0x35a_unmapped_alarms_change_nothing(name):
    ok = frame(make_bank(alarms=dict.fromkeys(ALARMS, 0)), 0x35A)
    assert frame(make_bank(alarms=dict.fromkeys(ALARMS, 0) | {name: 2}), 0x35A) == ok


def test_0x35a_not_reported_is_not_supported():
    assert frame(make_bank(alarms={}), 0x35A) == bytes(8)
    alarms, _ = pairs(frame(make_bank(alarms={"low_voltage": 0}), 0x35A))
    assert alarms[2] == 0b10 and alarms[1] == 0b00


# ---- clamping ---------------------------------------------------------------------------------


def test_clamp_unsigned_limits():
    bank = make_bank(cvl=1000.0, ccl=10000.0, dcl=0.0, low_voltage=0.0)
    assert struct.unpack("<4H", frame(bank, 0x351)) == (10000, 65535, 0, 0)
    raw = dict(make_bank())
    raw.update(ccl=-5.0, dcl=-0.04, cvl=math.nan)  # never validated, still never wraps
    assert struct.unpack("<4H", frame(raw, 0x351))[:3] == (0, 0, 0)


def test_clamp_signed_fields():
    bank = make_bank(voltage=500.0, current=-5000.0, temperature=-60.0)
    assert struct.unpack("<3h", frame(bank, 0x356)[:6]) == (32767, -32768, -600)
    bank = make_bank(voltage=0.0, current=5000.0, temperature=math.inf)
    assert struct.unpack("<3h", frame(dict(bank), 0x356)[:6]) == (0, 32767, 32767)


def test_scaled_helper():
    assert canbms.scaled(58.1, 0.1, canbms.UN16) == 581
    assert canbms.scaled(-1.0, 0.1, canbms.UN16) == 0
    assert canbms.scaled(1e12, 0.1, canbms.UN16) == 65535
    assert canbms.scaled(None, 0.1, canbms.UN16) == 0
    assert canbms.scaled(math.nan, 0.1, canbms.SN16) == 0
    assert canbms.scaled(-math.inf, 0.1, canbms.SN16) == -32768
    assert canbms.scaled(1.7e308, 0.01, canbms.SN16) == 32767  # value / scale overflows


numbers = st.one_of(st.none(), st.floats(), st.integers(-(10**9), 10**9))


FIELDS = (
    "cvl", "ccl", "dcl", "low_voltage", "soc", "voltage", "current", "temperature", "capacity",
    "online", "offline", "min_cell_voltage", "max_temperature", "installed_capacity",
)  # fmt: skip


@given(st.fixed_dictionaries(dict.fromkeys(FIELDS, numbers)))
def test_frames_never_fail(bank):
    for can_id, data in canbms.frames(bank, CAN):
        assert len(data) == 8 and can_id < 0x800
    # the three limits as the encoder sent them decode back into the un16 range, never wrapped
    cvl, ccl, dcl, _ = struct.unpack("<4H", frame(bank, 0x351))
    for raw, value in ((cvl, bank["cvl"]), (ccl, bank["ccl"]), (dcl, bank["dcl"])):
        if isinstance(value, (int, float)) and not math.isnan(value) and value * 10 >= 65535:
            assert raw == 65535
        if isinstance(value, (int, float)) and value <= 0:
            assert raw == 0
