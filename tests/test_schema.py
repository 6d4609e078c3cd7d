"""Message validation: bad data is rejected with the field named, never used."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmsbank.errors import MessageError
from bmsbank.schema import (
    control_request,
    control_result,
    pack,
    unpack,
    validate_control,
    validate_control_result,
    validate_hello,
    validate_state,
)
from tests.factories import state_msg


def test_valid_state_round_trips_through_msgpack():
    msg = state_msg()
    assert validate_state(unpack(pack(msg))) == msg
    assert msg["power"] == pytest.approx(msg["voltage"] * 5.0)
    assert msg["cell_delta"] == 0.0


@pytest.mark.parametrize(
    "field,value",
    [
        ("voltage", math.nan),
        ("voltage", math.inf),
        ("voltage", -1.0),
        ("voltage", "52"),
        ("current", -math.inf),
        ("soc", 100.5),
        ("soc", True),
        ("capacity", None),
        ("cells", [3.3, math.nan]),
        ("cells", [3.3, 9.0]),
        ("cells", []),
        ("cells", "3.3"),
        ("temperatures", [500.0]),
        ("balancing", [0, 2]),
        ("charge_fet", 1),
        ("alarms", {"fire": 2}),
        ("alarms", {"high_cell_voltage": 3}),
        ("soh", math.nan),
        ("seq", -1),
        ("pack", ""),
        ("link", {"ok": -1}),
        ("v", 99),
        ("remaining", 1000.0),
    ],
)
def test_invalid_fields_are_rejected(field, value):
    msg = state_msg()
    msg[field] = value
    with pytest.raises(MessageError) as err:
        validate_state(msg)
    assert str(err.value).startswith((field, "state"))


def test_not_msgpack_is_a_message_error():
    with pytest.raises(MessageError):
        unpack(b"\xc1garbage")


# -- control channel ---------------------------------------------------------------------------
def control_msg(**over):
    msg = {"v": 1, "kind": "control", "id": "req-1", "pack": "rs485:3", "action": "charge",
           "value": False}  # fmt: skip
    msg.update(over)
    return msg


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"action": "discharge", "value": True},
        {"action": "balance", "value": False},
        {"action": "reset_soc", "value": True},
        {"timeout": 2.5},
        {"expires": 1.7e9},
        {"pack": "usb-0.a_B:255", "id": "x" * 64},
    ],
    ids=["charge", "discharge", "balance", "reset_soc", "timeout", "expires", "longest"],
)
def test_valid_control_requests(over):
    msg = control_msg(**over)
    assert validate_control(unpack(pack(msg))) == msg


@pytest.mark.parametrize(
    "over,field",
    [
        ({"v": 2}, "control"),
        ({"kind": "state"}, "control"),
        ({"id": ""}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"id": 7}, "id"),
        ({"pack": "rs485"}, "pack"),
        ({"pack": "rs485:256"}, "pack"),
        ({"pack": "a b:1"}, "pack"),
        ({"pack": None}, "pack"),
        ({"action": "explode"}, "action"),
        ({"action": None}, "action"),
        ({"value": 0}, "value"),
        ({"value": "off"}, "value"),
        ({"value": None}, "value"),
        ({"action": "reset_soc", "value": 50}, "value"),
        ({"action": "reset_soc", "value": False}, "value"),
        ({"timeout": math.nan}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 61}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"expires": math.inf}, "expires"),
        ({"extra": 1}, "control"),
    ],
    ids=lambda x: repr(x)[:40],
)
def test_malformed_control_requests_are_rejected(over, field):
    with pytest.raises(MessageError) as err:
        validate_control(control_msg(**over))
    assert str(err.value).startswith(field)


def test_control_request_must_be_a_map():
    for thing in ([1, 2], "control", None, 3):
        with pytest.raises(MessageError, match="expected a map"):
            validate_control(thing)


def test_control_result_echoes_what_it_can():
    ok = control_result(control_msg(), True)
    assert validate_control_result(ok) == {
        "v": 1, "kind": "control_result", "id": "req-1", "pack": "rs485:3", "action": "charge",
        "ok": True, "error": None,
    }  # fmt: skip
    junk = control_result({"id": ["x"], "pack": "nope", "action": "fly"}, False, "e" * 999)
    assert validate_control_result(junk)["id"] == "" and junk["pack"] == junk["action"] == ""
    assert len(junk["error"]) == 256
    built = control_request("a", "p:1", "balance", True, timeout=1.0)
    assert validate_control(built)["timeout"] == 1.0
    with pytest.raises(MessageError):
        control_request("a", "p:1", "balance", "yes")


@pytest.mark.parametrize(
    "over,field",
    [
        ({"ok": 1}, "ok"),
        ({"ok": True, "error": "but"}, "error"),
        ({"ok": False, "error": None}, "error"),
        ({"ok": False, "error": ""}, "error"),
        ({"ok": False, "error": "x" * 257}, "error"),
        ({"action": "fly"}, "action"),
        ({"pack": "p:999"}, "pack"),
        ({"id": 3}, "id"),
        ({"kind": "control"}, "control_result"),
        ({"surprise": 1}, "control_result"),
    ],
    ids=lambda x: repr(x)[:40],
)
def test_malformed_control_results_are_rejected(over, field):
    msg = {**control_result(control_msg(), True), **over}
    with pytest.raises(MessageError) as err:
        validate_control_result(msg)
    assert str(err.value).startswith(field)


def test_hello_names_port_and_its_packs():
    hello = {"v": 1, "kind": "hello", "port": "rs485", "bms": "jkpb", "packs": ["rs485:1"]}
    assert validate_hello(hello) is hello
    for over in ({"packs": ["usb0:1"]}, {"packs": "rs485:1"}, {"port": ""}, {"bms": 5},
                 {"packs": [f"rs485:{i % 256}" for i in range(257)]}):  # fmt: skip
        with pytest.raises(MessageError):
            validate_hello({**hello, **over})


readings = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-10, 10),
    st.booleans(),
    st.sampled_from([3.3, -0.0, 6.0, 6.0000001, None, "3.3"]),
)


@settings(max_examples=400, deadline=None)
@given(cells=st.lists(readings, min_size=1, max_size=20), temps=st.lists(readings, max_size=8),
       counters=st.dictionaries(st.sampled_from(["ok", "timeout", "checksum"]),
                                st.one_of(st.integers(-2, 5), st.booleans())))  # fmt: skip
def test_list_checks_accept_exactly_finite_readings_within_bounds(cells, temps, counters):
    def fine(xs, low, high):
        return all(type(x) in (int, float) and math.isfinite(x) and low <= x <= high for x in xs)

    msg = state_msg(cells=[3.3] * len(cells))
    msg.update(cells=cells, temperatures=temps, link=counters)
    if fine(cells, 0.0, 6.0):  # the derived values follow the cells (they are checked too)
        msg.update(min_cell_voltage=min(cells), max_cell_voltage=max(cells),
                   cell_delta=max(cells) - min(cells))  # fmt: skip
    expected = (fine(cells, 0.0, 6.0) and fine(temps, -60.0, 150.0)
                and all(type(v) is int and v >= 0 for v in counters.values()))  # fmt: skip
    try:
        validate_state(msg)
        accepted = True
    except MessageError:
        accepted = False
    assert accepted == expected


@settings(max_examples=300, deadline=None)
@given(voltage=readings, current=readings, soh=readings)
def test_number_checks_accept_exactly_finite_readings_within_bounds(voltage, current, soh):
    def fine(x, low, high):
        return type(x) in (int, float) and math.isfinite(x) and low <= x <= high

    msg = state_msg()
    msg.update(voltage=voltage, current=current, soh=soh)
    if fine(voltage, 0.0, 1000.0) and fine(current, -10000.0, 10000.0):
        msg["power"] = voltage * current  # derived: checked against the readings
    expected = (fine(voltage, 0.0, 1000.0) and fine(current, -10000.0, 10000.0)
                and (soh is None or fine(soh, 0.0, 100.0)))  # fmt: skip
    try:
        validate_state(msg)
        accepted = True
    except MessageError as exc:
        accepted = False
        assert str(exc).split(":")[0] in ("voltage", "current", "soh", "power")
    assert accepted == expected


class _Count(int):
    """An int subclass: the full checks take it, the compiled fast path leaves it to them."""


_ODD_VALUES = [
    None, True, False, 0, 1, -1, 2, 3, 255, 256, 2**53 + 1, 2**63, 2**64, 10**7, _Count(1),
    0.0, 1.0, 1.5, 3.3, 6.0000001, -60.5, 99.9, 1e13, math.nan, math.inf, -math.inf,
    "", "x", "a" * 65, [], [3.3], [3.3, 3.4], [True], [math.nan], [0, 1], [1.0], [2], ["3.3"],
    {}, {"low_voltage": 1}, {"low_voltage": 1.0}, {"bogus": 1}, {"ok": -1}, {"ok": True},
    {"ok": 3}, (3.3,),
]  # fmt: skip
_STATE_KEYS = sorted(state_msg()) + ["soh", "mosfet_temperature", "bms_ccl"]


def _mutated(changes: dict, flags_follow: bool) -> dict:
    msg = state_msg(cells=[3.3, 3.31, 3.29, 3.3], balancing=[0, 1, 0, 0])
    for key, value in changes.items():
        if value is KeyError:
            msg.pop(key, None)
        else:
            msg[key] = value
    if flags_follow and isinstance(msg.get("cells"), list) and "balancing" not in changes:
        msg["balancing"] = [0] * len(msg["cells"])  # so that the checks after it are reached
    return msg


def _fast_check_holds(msg: dict) -> bool:
    """state_ok in both implementations agrees, and says yes only to what the full checks take."""
    from bmsbank import schema
    from bmsbank.native import _messages, _messages_py

    compiled = _messages.state_ok(msg, schema.STATE_SPEC)
    assert compiled == _messages_py.state_ok(msg, schema.STATE_SPEC), msg
    try:
        schema._check_state(msg)
    except MessageError:
        assert not compiled, f"the fast check took what the full checks reject: {msg}"
    return compiled


def test_the_compiled_fast_check_is_never_laxer_for_any_single_odd_value():
    assert _fast_check_holds(_mutated({}, False))  # the usual case takes the fast path
    for key in _STATE_KEYS:
        for value in [*_ODD_VALUES, KeyError]:
            for flags_follow in (False, True):
                _fast_check_holds(_mutated({key: value}, flags_follow))


@settings(max_examples=1000, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(_STATE_KEYS),
                               st.one_of(st.sampled_from(_ODD_VALUES), st.just(KeyError)),
                               min_size=2, max_size=4),
       flags_follow=st.booleans())  # fmt: skip
def test_the_compiled_fast_check_is_never_laxer_for_odd_combinations(changes, flags_follow):
    _fast_check_holds(_mutated(changes, flags_follow))


_CELL_LISTS = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                 st.integers(-5000, 5000)), max_size=40)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(cells=_CELL_LISTS, voltage=st.floats(allow_nan=False), current=st.floats(allow_nan=False),
       as_tuple=st.booleans())  # fmt: skip
def test_state_body_derives_alike_in_both_implementations(cells, voltage, current, as_tuple):
    from bmsbank.native import _messages, _messages_py

    fields = {"voltage": voltage, "current": current, "cells": tuple(cells) if as_tuple else cells}
    defaults, header = {"soh": None, "cycles": 0}, {"v": 1, "pack": "p:1"}
    out = _messages.state_body(fields, defaults, header)
    twin = _messages_py.state_body(fields, defaults, header)
    assert list(out) == list(twin)  # same keys in the same order: the same msgpack bytes
    for key, value in twin.items():
        assert value == out[key] or (value != value and out[key] != out[key]), key
    expected_low = min(cells) if cells else 0.0
    assert out["min_cell_voltage"] is expected_low or out["min_cell_voltage"] == expected_low
    assert out["max_cell_voltage"] == (max(cells) if cells else 0.0) or math.isnan(
        out["max_cell_voltage"]
    )
    assert out["power"] == pytest.approx(voltage * current, nan_ok=True)
    assert fields == {"voltage": voltage, "current": current,
                      "cells": tuple(cells) if as_tuple else cells}  # fmt: skip (not changed)


def test_state_body_puts_fields_over_defaults_and_the_header_last():
    from bmsbank.native import _messages, _messages_py

    for impl in (_messages, _messages_py):
        out = impl.state_body({"voltage": 52, "current": -2.5, "cells": [3.3, 3.1, 3.2],
                               "soh": 97.0, "v": 9}, {"soh": None, "hardware": ""},
                              {"v": 1})  # fmt: skip
        assert out["soh"] == 97.0 and out["hardware"] == "" and out["v"] == 1
        assert out["power"] == -130.0
        assert (out["min_cell_voltage"], out["max_cell_voltage"]) == (3.1, 3.3)
        assert out["cell_delta"] == pytest.approx(0.2)
        empty = impl.state_body({"voltage": 1.0, "current": 1.0, "cells": []}, {}, {})
        assert (empty["min_cell_voltage"], empty["max_cell_voltage"], empty["cell_delta"]) == (
            0.0, 0.0, 0.0)  # fmt: skip
        with pytest.raises(KeyError):
            impl.state_body({"current": 1.0, "cells": []}, {}, {})
        with pytest.raises((TypeError, ValueError)):
            impl.state_body({"voltage": "x", "current": 1.0, "cells": []}, {}, {})


# -- strict states (issue 11): exact fields, bounded texts and counters, derived values checked
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"extra": 1}, "state"),  # an unknown field: refused, not carried on the tap
        ({"cell_delta": KeyError}, "state"),  # a missing one
        ({"min_cell_voltage": "3.3"}, "min_cell_voltage"),  # crashed `bmsbank status`
        ({"min_cell_voltage": 1.0}, "min_cell_voltage"),
        ({"max_cell_voltage": 4.0}, "max_cell_voltage"),
        ({"cell_delta": 2.0}, "cell_delta"),
        ({"power": 1.0e6}, "power"),
        ({"hardware": "x" * 129}, "hardware"),
        ({"hardware": 7}, "hardware"),
        ({"link": {"ok": 1, "made_up": 2}}, "link"),
        ({"link": {"ok": 2**63}}, "link"),
        ({"epoch": -1}, "epoch"),
        ({"epoch": True}, "epoch"),
        ({"v": True}, "state"),  # True == 1 in Python, but it is not schema version 1
        ({"cell_delta": math.nan}, "cell_delta"),  # NaN fails every comparison
        ({"port": "ttyUSB9"}, "pack"),  # a state claiming another port's pack
        ({"address": 2}, "pack"),
    ],
)
def test_a_state_is_exactly_what_a_poller_sends(change, field):
    from bmsbank import schema
    from bmsbank.native import _messages, _messages_py

    msg = state_msg()
    for key, value in change.items():
        if value is KeyError:
            del msg[key]
        else:
            msg[key] = value
    with pytest.raises(MessageError) as err:
        validate_state(msg)
    assert str(err.value).startswith(f"{field}:"), err.value
    assert not _messages.state_ok(msg, schema.STATE_SPEC)
    assert not _messages_py.state_ok(msg, schema.STATE_SPEC)


def test_every_state_make_state_builds_has_exactly_the_schema_fields():
    from bmsbank import schema

    msg = state_msg()
    assert set(msg) == schema.STATE_KEYS
    assert validate_state(msg) is msg and _fast_check_holds(msg)


def test_a_long_hardware_text_is_cut_by_make_state_not_refused():
    from bmsbank.state import make_state

    fields = dict(state_msg(), hardware="JBD-" + "x" * 300)
    for key in list(fields):
        if key not in ("voltage", "current", "soc", "capacity", "remaining", "cells",
                       "balancing", "temperatures", "charge_fet", "discharge_fet", "hardware"):
            del fields[key]  # fmt: skip
    msg = make_state("p", 1, "jbd", 0, fields, {})
    assert len(msg["hardware"]) == 128 and validate_state(msg) is msg


def test_the_largest_valid_state_fits_the_arbiters_message_size():
    from bmsbank import schema
    from bmsbank.errors import LINK_COUNTERS

    msg = state_msg(cells=[3.123456789] * 64, temperatures=[21.123456789] * 16,
                    alarms=dict.fromkeys(schema.ALARMS, 2), hardware="€" * 128,
                    soh=99.123456789, mosfet_temperature=40.123456789, bms_ccl=1.1, bms_dcl=2.2,
                    bms_cvl=200.5, cycles=10**6)  # fmt: skip
    msg.update(pack="p" * 60 + ":255", port="p" * 60, bms="b" * 64, address=255,
               seq=2**63 - 1, epoch=2**63 - 1,
               link=dict.fromkeys(LINK_COUNTERS, 2**63 - 1))  # fmt: skip
    assert validate_state(msg) is msg
    assert len(schema.pack(msg)) < 2560 < schema.MAX_STATE_BYTES
