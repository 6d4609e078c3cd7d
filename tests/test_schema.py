"""Message validation: bad data is rejected with the field named, never used."""

from __future__ import annotations

import math

import pytest

from bmsbank.errors import MessageError
from bmsbank.schema import pack, unpack, validate_state
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
