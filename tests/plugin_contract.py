"""The contract every protocol plugin test class subclasses.

A plugin's test module defines ``class TestXxx(PluginContract)`` with captured frames (each with a
comment saying where it comes from and what it decodes to) and inherits these generic checks:
registration, framing of captured replies, corruption handling, noise between frames, fuzzing, a
round trip through the plugin's own simulator, and its control actions: each one it declares is
acknowledged by its simulator, each other one is refused with "<bms> does not support <action>".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsbank.errors import ControlError, FrameError, LinkTimeout
from bmsbank.schema import CONTROL_ACTIONS, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state

#: every plugin's test class runs the same hypothesis tests with its own plugin fixture
SHARED_TEST = [HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]


@dataclass(frozen=True)
class Captured:
    """A reply captured from a real BMS (or published by a reference implementation).

    Attributes:
        source: where the bytes come from (repository + path, or a forum thread).
        hex: the frame as hex, in arrival order.
        part: the part name ``Plugin.parse`` must return.
        expect: a subset of the decoded fields with their expected values.
    """

    source: str
    hex: str
    part: str
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        """The frame bytes."""
        return bytes.fromhex(self.hex)


def assert_close(actual: Any, expected: Any, path: str = "", tol: float = 1e-6) -> None:
    """Compare nested values, floats within ``tol``."""
    if isinstance(expected, dict):
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing"
            assert_close(actual[k], v, f"{path}.{k}", tol)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{path}[{i}]", tol)
    elif isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=0, abs_tol=tol), (
            f"{path}: {actual} != {expected}"
        )
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def extract_all(plugin: Plugin, data: bytes, address: int | None = None):
    """Feed ``data`` and return (frames, errors, stats)."""
    buf = bytearray(data)
    stats = LinkStats()
    frames, errors = [], []
    while True:
        try:
            frame = plugin.extract(buf, address, stats)
        except FrameError as exc:
            errors.append(exc)
            continue
        if frame is None:
            return frames, errors, stats
        frames.append(frame)


class SimLink:
    """A ``ControlLink`` wired straight into a simulator (no pty): byte-level tests of writes."""

    def __init__(self, sim: Any, timeout: float = 0.5) -> None:
        self.sim = sim
        self.timeout = timeout
        self.sent: list[bytes] = []

    def exchange(self, request: bytes, extract: Any) -> bytes:
        self.sent.append(request)
        buf = bytearray(b"".join(self.sim.feed(request)))
        frame = extract(buf)
        if frame is None:
            raise LinkTimeout("truncated" if buf else "timeout")
        return frame


class PluginContract:
    """Generic checks; subclasses set the class attributes below."""

    plugin_name: ClassVar[str]
    #: captured replies with expected decoded values
    captured: ClassVar[list[Captured]]
    #: address the captured replies answer (None when the protocol has no addresses)
    address: ClassVar[int | None] = None
    #: tolerance for simulator round trips, per state field (protocol scaling)
    roundtrip_tolerance: ClassVar[dict[str, float]] = {}

    @pytest.fixture
    def plugin(self) -> Plugin:
        return plugins.load(self.plugin_name)

    # -- registration and requests -----------------------------------------------------------
    def test_registered(self, plugin: Plugin) -> None:
        assert plugin.name == self.plugin_name
        assert plugin.title and plugin.baudrate > 0 and plugin.reply_timeout > 0

    def test_queries_have_bytes(self, plugin: Plugin) -> None:
        queries = plugin.queries(plugin.default_address)
        assert queries, "a poll cycle sends at least one request"
        for q in queries:
            assert isinstance(q.request, bytes) and q.request

    # -- captured frames --------------------------------------------------------------------
    def test_captured_frames_decode(self, plugin: Plugin) -> None:
        for cap in self.captured:
            frames, errors, _ = extract_all(plugin, cap.raw, self.address)
            assert not errors, f"{cap.source}: {errors}"
            assert len(frames) == 1, cap.source
            part, fields = plugin.parse(frames[0])
            assert part == cap.part, cap.source
            assert_close(fields, cap.expect, cap.source, tol=1e-6)

    def test_bad_checksum_is_rejected_and_counted(self, plugin: Plugin) -> None:
        for cap in self.captured:
            bad = bytearray(cap.raw)
            bad[self.checksum_index(len(bad))] ^= 0x01
            frames, errors, _ = extract_all(plugin, bytes(bad), self.address)
            assert not frames, cap.source
            assert errors and errors[0].kind == "checksum", (cap.source, errors)
            assert bytes(bad)[:4].hex() in errors[0].raw.hex() or errors[0].raw

    def checksum_index(self, length: int) -> int:
        """Index of a byte of the check value.

        Override it when the frame does not end with its check value (a fixed trailer such as
        JBD's 0x77, or an ack after the frame), or the flip hits the trailer instead.
        """
        return length - 1

    def test_truncated_frame_waits_for_more(self, plugin: Plugin) -> None:
        for cap in self.captured:
            buf = bytearray(cap.raw[: len(cap.raw) // 2])
            assert plugin.extract(buf, self.address, LinkStats()) is None, cap.source

    def test_noise_and_partial_frames_between_good_ones(self, plugin: Plugin) -> None:
        cap = self.captured[0]
        raw = cap.raw
        stream = b"\x00\x13\xfe" + raw + raw[: len(raw) // 3] + b"\x42" * 5 + raw
        frames, errors, stats = extract_all(plugin, stream, self.address)
        assert frames == [raw, raw]
        assert stats.noise_bytes >= 3

    @settings(max_examples=200, deadline=None, suppress_health_check=SHARED_TEST)
    @given(data=st.binary(max_size=700))
    def test_fuzz_never_crashes(self, plugin: Plugin, data: bytes) -> None:
        buf = bytearray(data)
        stats = LinkStats()
        for _ in range(len(data) + 2):
            try:
                frame = plugin.extract(buf, None, stats)
            except FrameError:
                continue
            if frame is None:
                break
            try:
                plugin.parse(frame)
            except FrameError:
                pass

    @settings(max_examples=100, deadline=None, suppress_health_check=SHARED_TEST)
    @given(data=st.data())
    def test_fuzz_mutated_captured_frames(self, plugin: Plugin, data) -> None:
        cap = data.draw(st.sampled_from(self.captured))
        raw = bytearray(cap.raw)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        frames, _, _ = extract_all(plugin, bytes(raw), None)
        for frame in frames:
            try:
                plugin.parse(frame)
            except FrameError:
                pass

    # -- control actions --------------------------------------------------------------------
    def test_controls_are_known_actions(self, plugin: Plugin) -> None:
        assert plugin.controls <= set(CONTROL_ACTIONS)
        assert plugins.controls(self.plugin_name) == plugin.controls

    @pytest.mark.parametrize("action", list(CONTROL_ACTIONS))
    def test_each_action_is_acknowledged_or_refused(self, plugin: Plugin, action: str) -> None:
        models = self.make_models()
        address = self.sim_address()
        link = SimLink(simulators.create(self.plugin_name, models))
        value = True if CONTROL_ACTIONS[action] == "true" else False
        if action in plugin.controls:
            plugin.control(link, address, action, value, {})
            assert link.sent, "a supported action writes to the BMS"
        else:
            with pytest.raises(ControlError, match=f"{plugin.name} does not support {action}"):
                plugin.control(link, address, action, value, {})
            assert not link.sent

    # -- simulator round trip ---------------------------------------------------------------
    def make_models(self) -> dict[int, BatteryModel]:
        """Packs behind the simulator for the round trip (override for protocol limits)."""
        return {
            self.sim_address(): BatteryModel(
                cells=16,
                capacity=280.0,
                soc=63.5,
                current=-12.3,
                imbalance=0.031,
                temperatures=[21.5, 23.0],
                faults={"high_charge_temperature"},
            )
        }

    def sim_address(self) -> int:
        return self.address if self.address is not None else 1

    def test_simulator_round_trip(self, plugin: Plugin) -> None:
        models = self.make_models()
        sim = simulators.create(self.plugin_name, models)
        for addr, model in models.items():
            parts = {}
            for q in plugin.queries(addr):
                replies = sim.feed(q.request)
                if not q.expects_reply:
                    continue
                frames, errors, _ = extract_all(plugin, b"".join(replies), addr)
                assert not errors and len(frames) == 1, (q.part, errors)
                part, fields = plugin.parse(frames[0])
                assert part == q.part
                parts[part] = fields
            fields = plugin.state(parts)
            state = validate_state(make_state("sim", addr, plugin.name, 0, fields, {}))
            truth = model.snapshot()
            tol = {
                "voltage": 0.01,
                "current": 0.01,
                "soc": 1.0,
                "capacity": 0.01,
                "remaining": 0.01,
                "cells": 0.001,
                "temperatures": 0.1,
            }
            tol.update(self.roundtrip_tolerance)
            for key, t in tol.items():
                assert_close(state[key], truth[key], key, tol=t)
            assert state["charge_fet"] == truth["charge_fet"]
            assert state["discharge_fet"] == truth["discharge_fet"]
            for name in truth["alarms"]:
                assert state["alarms"].get(name) == 2, (name, state["alarms"])
