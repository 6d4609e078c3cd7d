"""The arbiter on real ZeroMQ sockets: states in, validated states and banks out on the tap."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq

from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack, unpack
from tests.factories import state_msg
from tests.zmqhelp import running_arbiter


@pytest.fixture
def arbiter():
    bank = {"stale_after": 1.0, "current_hold": 0.0, "strings": [["p:1"]]}
    with running_arbiter(**bank) as (arb, ctx, states, tap):
        push = ctx.socket(zmq.PUSH)
        push.connect(states)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(tap)
        time.sleep(0.3)  # let the subscription reach the publisher
        yield arb, push, sub
        push.close(0)
        sub.close(0)


def next_bank(sub, pred=lambda b: True, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub.poll(100):
            topic, body = sub.recv_multipart()
            if topic == TOPIC_BANK:
                bank = unpack(body)
                if pred(bank):
                    return bank
    raise AssertionError("no matching bank")


def test_states_in_banks_out(arbiter):
    arb, push, sub = arbiter
    push.send_multipart([TOPIC_STATE, pack(state_msg("p", 1, seq=0, current=7.5))])
    bank = next_bank(sub, lambda b: b["online"] == 1)
    assert bank["current"] == pytest.approx(7.5)
    assert bank["packs"][0]["id"] == "p:1"


def test_tap_forwards_accepted_states_only(arbiter):
    arb, push, sub = arbiter
    bad = state_msg("p", 1, seq=1)
    bad["soc"] = float("nan")
    push.send_multipart([TOPIC_STATE, pack(bad)])
    push.send_multipart([TOPIC_STATE, b"\xc1 not msgpack"])
    push.send_multipart([b"weird", pack(state_msg("p", 1))])
    push.send_multipart([TOPIC_STATE, msgpack.packb([1, 2, 3])])
    push.send_multipart([TOPIC_STATE, pack(state_msg("p", 1, seq=2))])
    seen = []
    bank = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (bank is None or bank["counters"]["rejected"] < 4):
        if sub.poll(100):
            topic, body = sub.recv_multipart()
            if topic == TOPIC_STATE:
                seen.append(unpack(body)["seq"])
            else:
                bank = unpack(body)
    assert seen == [2]
    assert bank["counters"]["rejected"] == 4 and bank["online"] == 1


def test_silent_pack_goes_offline_then_back(arbiter):
    arb, push, sub = arbiter
    push.send_multipart([TOPIC_STATE, pack(state_msg("p", 1, seq=0))])
    next_bank(sub, lambda b: b["online"] == 1)
    t0 = time.monotonic()
    next_bank(sub, lambda b: b["online"] == 0)
    assert time.monotonic() - t0 <= 1.0 + 0.5  # stale_after + one bank interval and margin
    push.send_multipart([TOPIC_STATE, pack(state_msg("p", 1, seq=1))])
    bank = next_bank(sub, lambda b: b["online"] == 1, timeout=1.0)
    assert bank["ccl"] > 0
