"""The "why" fields: link and health messages, and the bank's reason, link and outputs."""

from __future__ import annotations

import copy

import pytest

from bmsbank import schema
from bmsbank.errors import MessageError
from bmsbank.schema import validate_bank
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.status_schema import STATUS_VERSION, validate_health, validate_link


def link_msg(**over):
    msg = {"v": 1, "kind": "link", "port": "rs485", "device": "/dev/ttyUSB1", "state": "open",
           "since": 1.7e9, "detail": "",
           "packs": [{"address": 1, "state": "silent", "since": 1.7e9, "ok": 3, "bad": 0,
                      "timeouts": 9, "detail": "no reply for 3 polls"}]}  # fmt: skip
    msg.update(over)
    return msg


def health_msg(**outputs):
    return {"v": 1, "kind": "health", "outputs": outputs or {
        "dbus": {"ok": True, "detail": "com.victronenergy.battery.bmsbank owned"},
        "can": {"ok": None, "detail": "not configured"},
    }}  # fmt: skip


def bank():
    engine = BankEngine.from_mapping({"stale_after": 10.0, "strings": [["a:1"], ["b:2"]]})
    return validate_bank(BankComputer(engine, "t", started=0.0).compute(1.0))


def test_versions_agree():
    assert STATUS_VERSION == schema.SCHEMA_VERSION


def test_valid_link_and_health_pass():
    assert validate_link(link_msg())["port"] == "rs485"
    assert validate_health(health_msg())["outputs"]["can"]["ok"] is None


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"state": "gone"}, "state: expected one of missing, open"),
        ({"since": float("nan")}, "since"),
        ({"port": ""}, "port"),
        ({"detail": "x" * 300}, "detail"),
        ({"extra": 1}, "unknown field"),
        ({"v": True}, "unsupported schema"),
        ({"packs": [{"address": 300}]}, "packs[0]"),
        (
            {
                "packs": [
                    {
                        "address": 1,
                        "state": "silent",
                        "since": 0,
                        "ok": -1,
                        "bad": 0,
                        "timeouts": 0,
                        "detail": "",
                    }
                ]
            },
            "packs[0]: ok",
        ),  # fmt: skip
        (
            {
                "packs": [
                    {
                        "address": 1,
                        "state": "asleep",
                        "since": 0,
                        "ok": 1,
                        "bad": 0,
                        "timeouts": 0,
                        "detail": "",
                    }
                ]
            },
            "packs[0]: state",
        ),  # fmt: skip
    ],
)
def test_malformed_link_names_the_field(over, needle):
    with pytest.raises(MessageError, match=None) as err:
        validate_link(link_msg(**over))
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("outputs", "needle"),
    [
        ({"mqtt": {"ok": True, "detail": ""}}, "outputs: expected a map of dbus, can, gx"),
        ({"dbus": {"ok": 1, "detail": ""}}, "outputs.dbus: ok"),
        ({"gx": {"ok": True}}, "outputs.gx: output: missing"),
        ({"can": {"ok": False, "detail": 5}}, "outputs.can: detail"),
    ],
)
def test_malformed_health_names_the_field(outputs, needle):
    with pytest.raises(MessageError) as err:
        validate_health(health_msg(**outputs))
    assert needle in str(err.value)


def test_bank_carries_reason_link_and_outputs():
    b = bank()
    assert [p["reason"] for p in b["packs"]] == ["waiting for first state"] * 2
    assert all(p["link"] is None for p in b["packs"])
    assert set(b["outputs"]) == {"dbus", "can", "gx"}
    assert all(o["ok"] is None and o["detail"].startswith("unknown") for o in b["outputs"].values())


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("packs", 0, "reason"), 5, "packs[0].reason"),
        (("packs", 0, "reason"), "", "packs[0].reason"),
        (("packs", 0, "reason"), "x" * 600, "packs[0].reason"),
        (("packs", 0, "link"), {"state": "open"}, "packs[0].link: missing"),
        (
            ("packs", 0, "link"),
            {"state": "up", "since": None, "ok": 0, "bad": 0, "timeouts": 0},
            "packs[0].link.state",
        ),  # fmt: skip
        (
            ("packs", 0, "link"),
            {"state": "silent", "since": None, "ok": 0.5, "bad": 0, "timeouts": 0},
            "packs[0].link.ok",
        ),  # fmt: skip
        (("outputs",), {"dbus": {"ok": True, "detail": "", "age": -1.0}}, "outputs.dbus: age"),
        (("outputs",), [], "outputs: expected a map"),
    ],
)
def test_bank_rejects_malformed_why_fields(path, value, needle):
    b = copy.deepcopy(bank())
    target = b
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MessageError) as err:
        validate_bank(b)
    assert needle in str(err.value)


def test_bank_accepts_a_full_link():
    b = copy.deepcopy(bank())
    b["packs"][0]["link"] = {"state": "missing", "since": 1.7e9, "ok": 0, "bad": 2, "timeouts": 0}
    b["packs"][0]["reason"] = "port /dev/ttyUSB1 missing since 15:58"
    assert validate_bank(b) is b


def test_outputs_turn_unknown_when_the_report_is_stale():
    from bmsbank.services.arbiter.why import HEALTH_STALE, WhyBook

    book = WhyBook(started=0.0, grace=5.0)
    assert book.take_health(schema.pack(health_msg()), now=100.0)
    fresh = book.outputs(101.0)
    assert fresh["dbus"] == {"ok": True, "detail": "com.victronenergy.battery.bmsbank owned",
                             "age": 1.0}  # fmt: skip
    assert fresh["gx"]["ok"] is None and fresh["gx"]["detail"] == "not reported"
    stale = book.outputs(100.0 + HEALTH_STALE + 1.0)
    assert all(o["ok"] is None and o["detail"].startswith("unknown") for o in stale.values())
    assert not book.take_health(schema.pack({"v": 1, "kind": "health", "outputs": []}), 120.0)
    assert book.counters.rejected == 1 and book.counters.health == 1


def test_held_and_ramping_reasons_count_down():
    from tests.factories import state_msg

    engine = BankEngine.from_mapping({"stale_after": 10.0, "strings": [["a:1"]],
                                      "confirm_states": 1, "current_hold": 20.0,
                                      "current_ramp": 1.0})  # fmt: skip
    computer = BankComputer(engine, "t", started=0.0)

    def at(t, **over):
        assert engine.accept(state_msg("a", 1, seq=int(t * 10), **over), t)
        return validate_bank(computer.compute(t))

    full = at(1.0)["ccl"]
    cut = at(2.0, cells=[3.30] * 15 + [3.42])  # a high cell cuts CCL at once
    assert cut["ccl"] < full and "left of the hold" not in cut["reasons"]["ccl"]
    held = at(3.0)  # the cell is back: CCL stays down for the hold
    assert held["reasons"]["ccl"].startswith("held after a cut")
    assert held["reasons"]["ccl"].endswith("; 19 s left of the hold")
    texts = {t: at(float(t))["reasons"]["ccl"] for t in range(4, 22)}
    assert texts[12].endswith("; 10 s left of the hold")
    assert texts[21].endswith("; 1 s left of the hold")
    at(22.0)  # the hold is over: the ramp begins
    ramp = at(23.0)
    left = (full - ramp["ccl"]) / 1.0  # 1 A/s with one pack
    assert ramp["reasons"]["ccl"].startswith("ramping up to")
    assert ramp["reasons"]["ccl"].endswith(f"; about {left:.0f} s to go")
