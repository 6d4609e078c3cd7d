"""Stable pack identity: the arbiter warns once on a duplicate or changed serial number."""

from __future__ import annotations

import logging

from bmsbank.services.arbiter.registry import PackRegistry
from bmsbank.services.arbiter.serials import SerialWatch
from tests.factories import state_msg


def test_a_changed_serial_warns_once_per_change():
    w = SerialWatch()
    assert w.see("a:1", "SN1") == []
    assert w.see("a:1", "SN1") == []
    (warning,) = w.see("a:1", "SN2")
    assert "'SN1' to 'SN2'" in warning and "swapped cable" in warning
    assert w.see("a:1", "SN2") == []
    assert w.see("a:1", "") == [] and w.serials["a:1"] == "SN2"  # a reply without it: no news
    assert len(w.see("a:1", "SN1")) == 1  # swapped back: another change


def test_two_packs_with_one_serial_warn_once_per_pair():
    w = SerialWatch()
    w.see("a:1", "SN1")
    (warning,) = w.see("b:1", "SN1")
    assert "b:1" in warning and "a:1" in warning and "configured twice" in warning
    assert w.see("b:1", "SN1") == [] and w.see("a:1", "SN1") == []
    assert w.see("c:1", "SN9") == []


def test_the_registry_watches_accepted_states_only(caplog):
    r = PackRegistry(["a:1", "a:2"], 10.0, wall=None)
    with caplog.at_level(logging.WARNING):
        assert r.accept(state_msg("a", 1, seq=1, serial="X1"), 1.0) is not None
        assert r.accept(state_msg("a", 2, seq=2, serial="X1"), 1.0) is not None
        assert r.accept(state_msg("a", 2, seq=3, serial="X1"), 2.0) is not None
        assert r.accept(state_msg("a", 1, seq=4, serial="X1", voltage=float("nan")), 2.0) is None
    dupes = [m for m in caplog.messages if "configured twice" in m]
    assert len(dupes) == 1 and r.serials.serials == {"a:1": "X1", "a:2": "X1"}
