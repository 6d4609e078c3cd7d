"""Victron CAN-bus BMS encoder (bmsbank.services.publisher.canbms) against seed 004.

Every expected value below is decoded with struct / bit arithmetic written here from the seed's
tables, independently of the encoder.
"""

from __future__ import annotations

import math
import struct

import cantools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmsbank.config import CanConfig, Config
from bmsbank.schema import ALARMS
from bmsbank.services.publisher import canbms, paths
from tests.test_publisher_paths import make_bank

CAN = CanConfig(manufacturer="bmsbank")
IDS = (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x372, 0x373, 0x374, 0x375, 0x376, 0x377, 0x379,
       0x380, 0x381, 0x382)  # fmt: skip
DB = cantools.database.load_file(canbms.DBC, strict=True)


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
    assert frame(make_bank(name="bmsbank"), 0x35E) == b"bmsbank\x00"  # no 0x370: plain
    assert frame(make_bank(), 0x35E, CanConfig(manufacturer="ABCDEFGH")) == b"ABCDEFGH"
    assert frame(make_bank(name="house"), 0x35E) == b"bmsbank "  # = 0x370, as the seed requires


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
    bank = {**make_bank(voltage=0.0, current=5000.0), "temperature": math.inf}  # beyond the schema
    assert struct.unpack("<3h", frame(bank, 0x356)[:6]) == (0, 32767, 32767)


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


# ---- 0x370/0x371 name, 0x374-0x377 ids, 0x380/0x381 serial, 0x382 family ----------------------


def text(data: bytes) -> str:
    """An ASCII frame as the seed defines it: 7-bit characters, NUL = unused."""
    assert all(b < 0x80 for b in data)
    return data.rstrip(b"\x00").decode("ascii")


def test_0x370_0x371_name_is_manufacturer_and_bank_name():
    found = dict(canbms.frames(make_bank(name="house"), CAN))
    assert found[0x370] == b"bmsbank " and found[0x371] == b"house\x00\x00\x00"
    assert text(found[0x370] + found[0x371]) == "bmsbank house"
    # seed: "the contents of 0x35E and 0x370 must match if both are implemented"
    assert found[0x35E] == found[0x370]


def test_0x370_0x371_long_name_cut_to_16():
    found = dict(canbms.frames(make_bank(name="north_shed_bank_2"), CanConfig(manufacturer="ACME")))
    assert found[0x370] + found[0x371] == b"ACME north_shed_"
    eight = dict(canbms.frames(make_bank(name="x"), CanConfig(manufacturer="ABCDEFGH")))
    assert eight[0x370] == b"ABCDEFGH" == eight[0x35E] and eight[0x371] == b" x" + bytes(6)


@pytest.mark.parametrize("name", ["bmsbank", " ", ""])
def test_0x370_0x371_omitted_when_the_name_fits_0x35e(name):
    # seed: "If the name is 8 characters or less, it is better to use 0x35E and omit 0x370/0x371"
    found = dict(canbms.frames(dict(make_bank(), name=name), CAN))
    assert 0x370 not in found and 0x371 not in found
    assert found[0x35E] == b"bmsbank\x00"


def test_0x374_0x377_id_strings():
    found = dict(canbms.frames(make_bank(), CAN))
    # make_bank: min cell "usb0:1 C5", max cell "usb0:2 C12", min T "usb0:1 T2", max T "usb0:2 T1"
    assert found[0x374] == b"1 ::5" + bytes(3)
    assert found[0x375] == b"2 ::12" + bytes(2)
    assert found[0x376] == b"1 ::2" + bytes(3)
    assert found[0x377] == b"2 ::1" + bytes(3)


def test_id_string_uses_the_position_in_packs():
    packs = [{"id": "jkbus:1"}, {"id": "jbd:5"}, {"id": "jkbus:2"}]
    assert canbms.id_string("jkbus:2 C9", packs) == b"3 ::9\x00\x00\x00"
    assert canbms.id_string("jbd:5 T4", packs) == b"2 ::4\x00\x00\x00"
    many = [{"id": f"p:{k}"} for k in range(99)]
    assert canbms.id_string("p:98 C999", many) == b"99 ::999"  # the largest that fits 8 bytes
    assert len(canbms.id_string("p:98 C123456", many)) == 8  # longer ones are cut, never grow


@pytest.mark.parametrize(
    ("item_id", "packs"),
    [(None, [{"id": "a:1"}]), ("a:2 C1", [{"id": "a:1"}]), ("C1", [{"id": "a:1"}]),
     ("a:1 C1", None), (7, [{"id": "a:1"}]), ("a:1 C1", [])],
)  # fmt: skip
def test_id_string_unknown_is_all_nul(item_id, packs):
    # seed: "Unused characters to be set to 0": an unknown id is the empty string
    assert canbms.id_string(item_id, packs) == bytes(8)


def test_0x374_0x377_unknown_ids_in_a_bank():
    bank = make_bank(min_cell_id=None, max_cell_id=None, min_temperature_id=None,
                     max_temperature_id=None)  # fmt: skip
    found = dict(canbms.frames(bank, CAN))
    assert all(found[i] == bytes(8) for i in (0x374, 0x375, 0x376, 0x377))


def test_0x380_0x381_serial_is_the_bank_name():
    found = dict(canbms.frames(make_bank(name="house"), CAN))
    # seed: both always sent; a serial of 8 characters or less leaves 0x381 all zero
    assert found[0x380] == b"house\x00\x00\x00" and found[0x381] == bytes(8)
    found = dict(canbms.frames(make_bank(name="north_shed_bank_2"), CAN))
    assert found[0x380] == b"north_sh" and found[0x381] == b"ed_bank_"
    found = dict(canbms.frames(dict(make_bank(), name=None), CAN))
    assert 0x380 not in found and 0x381 not in found


def test_0x382_family_name():
    assert frame(make_bank(), 0x382) == b"bmsbank\x00"


def test_ascii_bytes_is_7_bit_printable():
    assert canbms.ascii_bytes("caf\u00e9\tx") == b"caf??x\x00\x00"
    assert canbms.ascii_bytes("0123456789") == b"01234567"
    assert canbms.ascii_bytes("ab", 16) == b"ab" + bytes(14)


# ---- the DBC file -----------------------------------------------------------------------------


BMS_MESSAGES = [m for m in DB.messages if m.senders == ["BMS"]]


def every_frame(bank):
    """Every frame the encoder can send, 0x360 and 0x378 included (they are optional args)."""
    return canbms.frames(bank, CAN, force_charge=True, energy=(12345.6, 789.0))


def test_dbc_describes_every_frame_we_send():
    # 0x360 and 0x378 are only sent when asked for (force-charge rule on, an energy counter)
    sent = every_frame(make_bank())
    assert {i for i, _ in sent} == {m.frame_id for m in BMS_MESSAGES}
    for can_id, data in sent:
        assert DB.get_message_by_frame_id(can_id).length == len(data)


def chars(decoded: dict, first: int = 0) -> str:
    return bytes(decoded[f"Char{k}"] for k in range(first, first + 8)).rstrip(b"\x00").decode()


def test_dbc_decodes_every_frame_as_the_bank():
    bank = make_bank(alarms=dict.fromkeys(ALARMS, 0) | {"high_cell_voltage": 2, "low_soc": 1,
                                                        "cell_imbalance": 1})  # fmt: skip
    sent = every_frame(dict(bank, soh=87.4))
    d = {i: DB.decode_message(i, data, decode_choices=False) for i, data in sent}
    assert len(d) == len(BMS_MESSAGES)
    assert d[0x351]["ChargeVoltageLimit"] == pytest.approx(bank["cvl"], abs=0.05)
    assert d[0x351]["ChargeCurrentLimit"] == pytest.approx(bank["ccl"], abs=0.05)
    assert d[0x351]["DischargeCurrentLimit"] == pytest.approx(bank["dcl"], abs=0.05)
    assert d[0x351]["DischargeVoltage"] == pytest.approx(bank["low_voltage"], abs=0.05)
    assert d[0x355]["SoC"] == pytest.approx(bank["soc"], abs=0.5)
    assert d[0x355]["SoH"] == 87
    assert d[0x355]["SoCHighRes"] == pytest.approx(bank["soc"], abs=0.005)
    assert d[0x356]["BatteryVoltage"] == pytest.approx(bank["voltage"], abs=0.005)
    assert d[0x356]["BatteryCurrent"] == pytest.approx(bank["current"], abs=0.05)
    assert d[0x356]["BatteryTemperature"] == pytest.approx(bank["temperature"], abs=0.05)
    alarms = d[0x35A]
    assert alarms["HighVoltageAlarm"] == 1 and alarms["HighVoltageWarning"] == 1
    assert alarms["CellImbalanceAlarm"] == 2 and alarms["CellImbalanceWarning"] == 1
    ok = ("LowVoltage", "HighTemperature", "LowTemperature", "HighTemperatureCharge",
          "LowTemperatureCharge", "HighCurrent", "HighChargeCurrent", "BmsInternal")  # fmt: skip
    for name in ok:
        assert alarms[f"{name}Alarm"] == 2 and alarms[f"{name}Warning"] == 2, name
    for name in ("General", "Contactor", "ShortCircuit"):
        assert alarms[f"{name}Alarm"] == 0 and alarms[f"{name}Warning"] == 0, name
    assert chars(d[0x35E]) == f"{CAN.manufacturer} {bank['name']}"[:8]  # = 0x370
    assert d[0x35F]["BatteryModel"] == 0
    assert d[0x35F]["FirmwareVersion"] == canbms.firmware_version()
    assert d[0x35F]["OnlineCapacity"] == pytest.approx(bank["capacity"], abs=0.5)
    assert chars(d[0x370]) + chars(d[0x371], 8) == f"{CAN.manufacturer} {bank['name']}"
    assert d[0x372] == {"ModulesOnline": bank["online"], "ModulesOffline": bank["offline"],
                        "ModulesBlockingCharge": bank["blocking_charge"],
                        "ModulesBlockingDischarge": bank["blocking_discharge"]}  # fmt: skip
    assert d[0x373]["MinCellVoltage"] == pytest.approx(bank["min_cell_voltage"], abs=0.0005)
    assert d[0x373]["MaxCellVoltage"] == pytest.approx(bank["max_cell_voltage"], abs=0.0005)
    kelvin = bank["min_temperature"] + 273.15, bank["max_temperature"] + 273.15
    assert d[0x373]["MinCellTemperature"] == pytest.approx(kelvin[0], abs=0.5)
    assert d[0x373]["MaxCellTemperature"] == pytest.approx(kelvin[1], abs=0.5)
    position = {p["id"]: k + 1 for k, p in enumerate(bank["packs"])}
    for can_id, key in ((0x374, "min_cell_id"), (0x375, "max_cell_id"),
                        (0x376, "min_temperature_id"), (0x377, "max_temperature_id")):  # fmt: skip
        pack, item = bank[key].split(" ")
        assert chars(d[can_id]) == f"{position[pack]} ::{item[1:]}", key
    assert d[0x360]["ForceCharge"] == 0xFF
    assert d[0x378] == {"EnergyIn": 12300, "EnergyOut": 700}  # whole 100 Wh units
    assert d[0x379]["InstalledCapacity"] == pytest.approx(bank["installed_capacity"], abs=0.5)
    assert chars(d[0x380]) + chars(d[0x381], 8) == bank["name"]
    assert chars(d[0x382]) == canbms.FAMILY


def test_dbc_decodes_an_arbiter_bank():
    # a bank straight from the arbiter code: nothing online yet, every id unknown
    from tests.test_publisher_paths import arbiter_bank

    bank = arbiter_bank(Config())
    for can_id, data in canbms.frames(bank, CAN):
        decoded = DB.decode_message(can_id, data, decode_choices=False)
        if 0x374 <= can_id <= 0x377:
            assert chars(decoded) == ""
    assert DB.decode_message(0x351, frame(bank, 0x351))["ChargeCurrentLimit"] == bank["ccl"]


# seed 004 §5.1 candump lines and what they mean (seed §2 scaling)
CANDUMP = [
    (0x351, "45 02 4c 04 4c 04 00 00",
     {"ChargeVoltageLimit": 58.1, "ChargeCurrentLimit": 110.0, "DischargeCurrentLimit": 110.0}),
    (0x355, "59 00 64 00 00 00 00 00", {"SoC": 89, "SoH": 100}),
    (0x356, "31 16 ce 00 3e 01 00 00",
     {"BatteryVoltage": 56.81, "BatteryCurrent": 20.6, "BatteryTemperature": 31.8}),
    (0x356, "31 16 d1 00 3e 01 00 00",
     {"BatteryVoltage": 56.81, "BatteryCurrent": 20.9, "BatteryTemperature": 31.8}),
    (0x356, "31 16 d0 00 3e 01 00 00",
     {"BatteryVoltage": 56.81, "BatteryCurrent": 20.8, "BatteryTemperature": 31.8}),
    (0x35A, "00 00 00 00 00 00 00 00", {"HighVoltageAlarm": 0, "CellImbalanceWarning": 0}),
]  # fmt: skip


@pytest.mark.parametrize(("can_id", "hexdata", "expected"), CANDUMP)
def test_dbc_decodes_the_seed_candump(can_id, hexdata, expected):
    decoded = DB.decode_message(can_id, bytes.fromhex(hexdata), decode_choices=False)
    for name, value in expected.items():
        assert decoded[name] == pytest.approx(value, abs=1e-9), name


BANK_FOR_CANDUMP = {
    0x351: {"cvl": 58.1, "ccl": 110.0, "dcl": 110.0},
    0x355: {"soc": 89.0},
    0x356: {"voltage": 56.81, "temperature": 31.8},
}


@pytest.mark.parametrize(("can_id", "hexdata", "expected"), CANDUMP[:5])
def test_encoder_reproduces_the_seed_candump(can_id, hexdata, expected):
    overrides = BANK_FOR_CANDUMP[can_id]
    if can_id == 0x356:
        overrides = overrides | {"current": expected["BatteryCurrent"]}
    data = frame(make_bank(**overrides), can_id)
    size = 4 if can_id == 0x355 else 6  # 0x355 bytes 4-5: our high-res SoC, 0 in the dump
    assert data[:size] == bytes.fromhex(hexdata)[:size]


# ---- 0x355 SoH, 0x360 force charge, 0x372 unknown counts, 0x378 energy --------------------------


@pytest.mark.parametrize(
    ("soh", "raw"), [(87.4, 87), (99.5, 100), (0.0, 0), (None, 100), (math.nan, 100), (150.0, 100)]
)
def test_0x355_soh_is_the_banks_or_100_when_unknown(soh, raw):
    bank = dict(make_bank(soc=89.0), soh=soh)
    assert struct.unpack("<4H", frame(bank, 0x355)) == (89, raw, 8900, 0)


def test_0x355_soh_missing_from_the_bank_is_100():
    bank = make_bank()
    bank.pop("soh", None)
    assert struct.unpack("<H", frame(bank, 0x355)[2:4]) == (100,)


def test_0x360_force_charge_byte():
    # seed: "To force charging of the battery, send 0xFF in the first byte. Any other value
    # indicates that battery charging should not be forced."
    on = dict(canbms.frames(make_bank(), CAN, force_charge=True))[0x360]
    off = dict(canbms.frames(make_bank(), CAN, force_charge=False))[0x360]
    assert on == b"\xff" + bytes(7) and off == bytes(8)
    assert 0x360 not in dict(canbms.frames(make_bank(), CAN))  # rule off: frame not sent
    assert DB.decode_message(0x360, on, decode_choices=True)["ForceCharge"] == "force charge"


def test_0x360_and_0x378_sit_in_id_order():
    ids = [i for i, _ in every_frame(make_bank())]
    assert ids[0] == 0x351 and ids[1:] == sorted(ids[1:])


def test_0x372_unknown_count_is_not_supported():
    # seed: "Send 0xFFFF for fields that are not supported"
    bank = dict(make_bank(online=2, offline=1), blocking_charge=None)
    bank.pop("blocking_discharge")
    assert struct.unpack("<4H", frame(bank, 0x372)) == (2, 0xFFFF, 0xFFFF, 1)


@pytest.mark.parametrize(
    ("wh", "units"),
    [
        (0.0, 0), (99.99, 0), (100.0, 1), (1234.5, 12), (None, 0), (-5.0, 0), (math.inf, 0),
        (2**32 * 100.0 - 0.5, 2**32 - 1),  # the largest value the un32 holds
        (2**32 * 100.0 + 250.0, 2),  # past it: rolled over to zero and counting again
    ],
)  # fmt: skip
def test_0x378_energy_units(wh, units):
    assert canbms.energy_units(wh) == units
    data = canbms.energy_bytes(wh, 1000.0)
    assert struct.unpack("<2I", data) == (units, 10)


def test_0x378_energy_in_and_out_little_endian():
    data = dict(canbms.frames(make_bank(), CAN, energy=(0x01020304 * 100.0, 25_600.0)))[0x378]
    assert data == bytes([4, 3, 2, 1, 0, 1, 0, 0])


def test_dbc_decodes_the_gx_keepalive_and_identification():
    # seed §3: 0x305 is 8 zero bytes; 0x307 is 12 34 56 78 'V' 'I' 'C' 00
    assert DB.decode_message(0x305, bytes(8)) == {"KeepAlive": 0}
    ident = DB.decode_message(0x307, bytes.fromhex("12345678") + b"VIC\x00")
    assert bytes(ident[f"Char{k}"] for k in (4, 5, 6)) == b"VIC"
    assert [ident[f"Byte{k}"] for k in range(4)] == [0x12, 0x34, 0x56, 0x78]
