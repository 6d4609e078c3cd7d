"""The contract every BMS family's test class subclasses: the generic checks, written once.

A family's test module defines ``class TestXxx(PluginContract)`` with its captured frames (each
with a comment saying where it comes from and what it decodes to) and the request bytes the
protocol documents, and inherits: registration and metadata, requests byte-exact, captured
frames decoding, bad check values counted as such, truncated frames waiting, noise between
frames, fuzzing (random and mutated captures), the simulator round trip through the same
:func:`run_query` the poller uses, current sign both ways, every alarm the family reports raised
through its simulator, daisy chains for multidrop families (and foreign replies rejected),
multi-frame replies with a missing or repeated frame, the TX echo dropped by a real transport on
a pseudo-terminal, and control actions acknowledged or refused. The family's own file keeps
only its captures and what is truly specific to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsbank.errors import FRAME_KINDS, ControlError, FrameError, LinkTimeout
from bmsbank.schema import ALARMS, CONTROL_ACTIONS, validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, Query, run_query
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.state import make_state

#: every family's test class runs the same hypothesis tests with its own plugin fixture
SHARED_TEST = [HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]


@dataclass(frozen=True)
class Captured:
    """A reply captured from a real BMS (or published by a reference implementation).

    Attributes:
        source: where the bytes come from (repository + path, or a forum thread).
        hex: the frame as hex, in arrival order (spaces allowed).
        part: the part name ``Plugin.parse`` must return.
        expect: a subset of the decoded fields with their expected values.
        request: the request it answers, as hex, where replies do not say (Modbus).

    """

    source: str
    hex: str
    part: str
    expect: dict[str, Any] = field(default_factory=dict)
    request: str | None = None

    @property
    def raw(self) -> bytes:
        """The frame bytes."""
        return bytes.fromhex(self.hex)

    @property
    def request_bytes(self) -> bytes | None:
        """The request bytes, when given."""
        return bytes.fromhex(self.request) if self.request else None


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


def extract_all(plugin: Plugin, data: bytes) -> tuple[list[bytes], list[FrameError], LinkStats]:
    """Feed ``data`` and return (frames, errors, stats)."""
    buf = bytearray(data)
    stats = LinkStats()
    frames, errors = [], []
    while True:
        try:
            frame = plugin.extract(buf, stats)
        except FrameError as exc:
            errors.append(exc)
            continue
        if frame is None:
            return frames, errors, stats
        frames.append(frame)


class SimLink:
    """A ``Link`` wired straight into a simulator (no pty): byte-level tests."""

    def __init__(self, sim: Any, timeout: float = 0.5) -> None:
        self.sim = sim
        self.timeout = timeout
        self.sent: list[bytes] = []
        self.buf = bytearray()

    def exchange(self, request: bytes, extract: Any) -> bytes:
        self.sent.append(request)
        self.buf = bytearray(b"".join(self.sim.feed(request)))
        return self.receive(extract)

    def receive(self, extract: Any) -> bytes:
        frame = extract(self.buf)
        if frame is None:
            raise LinkTimeout("truncated" if self.buf else "timeout")
        return frame


class NotifyLink(SimLink):
    """A ``Link`` that hands a simulator's replies over in ``chunk``-byte notifications (BLE).

    What is left of one exchange is dropped before the next, as BleTransport.drain does.
    """

    def __init__(self, sim: Any, chunk: int = 20) -> None:
        super().__init__(sim)
        self.chunk = chunk  #: bytes per notification (20: the ATT payload at the default MTU)
        self.pending: list[bytes] = []

    def exchange(self, request: bytes, extract: Any) -> bytes:
        self.sent.append(request)
        n = self.chunk
        self.pending = [b[i : i + n] for b in self.sim.feed(request) for i in range(0, len(b), n)]
        self.buf = bytearray()
        return self.receive(extract)

    def receive(self, extract: Any) -> bytes:
        while (frame := extract(self.buf)) is None:
            if not self.pending:
                raise LinkTimeout("truncated" if self.buf else "timeout")
            self.buf += self.pending.pop(0)
        return frame


def poll(plugin: Plugin, sim: Any, address: int) -> dict[str, Any]:
    """One poll cycle of every query through ``sim``, as the poller runs it; the state message."""
    link, stats, parts = SimLink(sim), LinkStats(), {}
    for q in plugin.queries(address):
        fields = run_query(plugin, link, q, address, parts, stats)
        if q.expects_reply:
            parts[q.part] = fields
    fields = plugin.state(parts)
    return validate_state(make_state("sim", address, plugin.name, 0, fields, stats.as_dict()))


class PluginContract:
    """Generic checks; subclasses set the class attributes below."""

    plugin_name: ClassVar[str]
    #: captured replies with expected decoded values
    captured: ClassVar[list[Captured]]
    #: part -> the request bytes (hex) the protocol documents, for the pack at ``sim_address()``
    requests: ClassVar[dict[str, str]] = {}
    #: address the captured replies answer (None when the protocol has no addresses)
    address: ClassVar[int | None] = None
    #: tolerance for simulator round trips, per state field (protocol scaling)
    roundtrip_tolerance: ClassVar[dict[str, float]] = {}

    @pytest.fixture
    def plugin(self) -> Plugin:
        return plugins.load(self.plugin_name)

    # -- registration and requests -----------------------------------------------------------
    def test_registered(self, plugin: Plugin) -> None:
        info = plugins.families()[self.plugin_name]
        assert plugin.info is info and plugin.name == info.name == self.plugin_name
        assert plugin.title and plugin.baudrate > 0 and plugin.reply_timeout > 0
        assert info.default_address in info.addresses
        assert info.parity in ("N", "E", "O")
        assert plugins.simulator_class(self.plugin_name).family is type(plugin)

    def test_requests_byte_exact(self, plugin: Plugin) -> None:
        queries = plugin.queries(self.sim_address())
        assert queries, "a poll cycle sends at least one request"
        by_part = {q.part: q.request for q in queries}
        for q in queries:
            assert isinstance(q.request, bytes) and q.request
        for part, hex_ in self.requests.items():
            assert by_part[part] == bytes.fromhex(hex_), part

    # -- captured frames --------------------------------------------------------------------
    def test_captured_frames_decode(self, plugin: Plugin) -> None:
        for cap in self.captured:
            frames, errors, _ = extract_all(plugin, cap.raw)
            assert not errors, f"{cap.source}: {errors}"
            assert len(frames) == 1, cap.source
            part, fields = plugin.parse(frames[0], cap.request_bytes, self.address)
            assert part == cap.part, cap.source
            assert_close(fields, cap.expect, cap.source, tol=1e-6)

    def test_bad_checksum_is_rejected_and_counted(self, plugin: Plugin) -> None:
        for cap in self.captured:
            bad = bytearray(cap.raw)
            i = self.checksum_index(len(bad))
            bad[i] ^= 0x03 if bad[i] in b"AFaf" else 0x01  # an ASCII hex digit stays one
            frames, errors, _ = extract_all(plugin, bytes(bad))
            assert not frames, cap.source
            assert errors and errors[0].kind == "checksum", (cap.source, errors)

    def checksum_index(self, length: int) -> int:
        """Index of a byte of the check value (override when the frame does not end with it)."""
        return length - 1

    def test_truncated_frame_waits_for_more(self, plugin: Plugin) -> None:
        for cap in self.captured:
            buf = bytearray(cap.raw[: len(cap.raw) // 2])
            assert plugin.extract(buf, LinkStats()) is None, cap.source

    def test_noise_and_partial_frames_between_good_ones(self, plugin: Plugin) -> None:
        raw = self.captured[0].raw
        stream = b"\x13\xfe" + raw + raw[: len(raw) // 3] + b"\x42" * 5 + raw
        frames, errors, stats = extract_all(plugin, stream)
        assert frames == [raw, raw]
        assert stats.noise_bytes >= 2
        assert all(e.kind in FRAME_KINDS for e in errors)

    @settings(max_examples=150, deadline=None, suppress_health_check=SHARED_TEST)
    @given(data=st.binary(max_size=700))
    def test_fuzz_never_crashes(self, plugin: Plugin, data: bytes) -> None:
        buf = bytearray(data)
        stats = LinkStats()
        for _ in range(len(data) + 2):
            try:
                frame = plugin.extract(buf, stats)
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
        frames, _, _ = extract_all(plugin, bytes(raw))
        for frame in frames:
            try:
                part, fields = plugin.parse(frame, cap.request_bytes)
            except FrameError:
                continue
            try:  # a frame that passes its check may still be nonsense: never a crash
                plugin.state({part: fields})
            except FrameError:
                pass

    # -- simulator: round trip, sign, alarms, daisy chain, multi-frame, echo -----------------
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
        return self.address if self.address is not None else plugins.info(
            self.plugin_name).default_address  # fmt: skip

    def check_state(self, state: dict[str, Any], model: BatteryModel) -> None:
        truth = model.snapshot()
        tol = {"voltage": 0.01, "current": 0.01, "soc": 1.0, "capacity": 0.01,
               "remaining": 0.01, "cells": 0.001, "temperatures": 0.1}  # fmt: skip
        tol.update(self.roundtrip_tolerance)
        for key, t in tol.items():
            assert_close(state[key], truth[key], key, tol=t)
        assert state["charge_fet"] == truth["charge_fet"]
        assert state["discharge_fet"] == truth["discharge_fet"]

    def test_simulator_round_trip(self, plugin: Plugin) -> None:
        models = self.make_models()
        sim = simulators.create(self.plugin_name, models)
        for addr, model in models.items():
            state = poll(plugin, sim, addr)
            self.check_state(state, model)
            for name in model.active_alarms & set(state["alarms"]):
                assert state["alarms"][name] == 2, (name, state["alarms"])

    @pytest.mark.parametrize("amps", [25.0, -25.0])
    def test_current_sign(self, plugin: Plugin, amps: float) -> None:
        models = self.make_models()
        for model in models.values():
            model.current, model.faults = amps, set()
        sim = simulators.create(self.plugin_name, models)
        addr = next(iter(models))
        state = poll(plugin, sim, addr)
        assert state["current"] == pytest.approx(amps, abs=0.1), "+ = charge, as on the wire"

    def test_every_reported_alarm_can_be_raised(self, plugin: Plugin) -> None:
        models = self.make_models()
        addr = next(iter(models))
        model = models[addr]
        model.faults = set()
        calm = poll(plugin, simulators.create(self.plugin_name, models), addr)["alarms"]
        assert calm and set(calm) <= set(ALARMS), "a family reports the alarms it supports"
        assert not any(calm.values()), calm
        for name in calm:
            model.faults = {name}
            raised = poll(plugin, simulators.create(self.plugin_name, models), addr)["alarms"]
            assert raised[name] == 2, (name, raised)

    def test_echo_is_dropped_by_the_transport(self, plugin: Plugin) -> None:
        from bmsbank.services.poller.simulators.ptyserver import PtyServer
        from bmsbank.services.poller.transport import SerialTransport

        models = self.make_models()
        addr = next(iter(models))
        server = PtyServer(simulators.create(self.plugin_name, models, echo=True),
                           model_wire=False).start()  # fmt: skip
        transport = SerialTransport(server.device, plugin.baudrate, echo="auto")
        transport.open()
        try:

            class PtyLink:
                timeout = 1.0

                def exchange(self, request: bytes, extract: Any) -> bytes:
                    transport.drain()
                    transport.send(request)
                    return transport.receive(extract, self.timeout)

                def receive(self, extract: Any) -> bytes:
                    return transport.receive(extract, self.timeout)

            stats, parts, link = LinkStats(), {}, PtyLink()
            for q in plugin.queries(addr):
                parts[q.part] = run_query(plugin, link, q, addr, parts, stats)
            assert transport.echoes >= 1 and stats.noise_bytes == 0
            self.check_state(validate_state(make_state(
                "sim", addr, plugin.name, 0, plugin.state(parts), {})), models[addr])  # fmt: skip
        finally:
            transport.close()
            server.stop()

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


class MultidropContract(PluginContract):
    """The contract of a family whose packs share one bus, told apart by address."""

    def test_daisy_chain(self, plugin: Plugin) -> None:
        assert plugin.multidrop
        addresses = list(plugin.addresses)[:1] + list(plugin.addresses)[-2:]
        models = {a: BatteryModel(cells=16, soc=30.0 + 20 * i, current=4.0 - 3 * i,
                                  temperatures=[20.0 + i, 21.0 + i])
                  for i, a in enumerate(addresses)}  # fmt: skip
        sim = simulators.create(self.plugin_name, models)
        for addr, model in models.items():
            self.check_state(poll(plugin, sim, addr), model)
        first, other = addresses[0], addresses[1]
        q = plugin.queries(first)[0]
        frames, _, _ = extract_all(plugin, b"".join(sim.feed(q.request)))
        with pytest.raises(FrameError) as err:
            plugin.parse(frames[0], q.request, other)
        assert err.value.kind == "address"


class MultiFrameContract(PluginContract):
    """The contract of a family with requests answered by several frames."""

    def collecting_queries(self, plugin: Plugin) -> list[Query]:
        return [q for q in plugin.queries(self.sim_address()) if q.collect is not None]

    @pytest.mark.parametrize("fault", ["drop_frame", "repeat_frame"])
    def test_multi_frame_reply_with_a_missing_or_repeated_frame(self, plugin, fault) -> None:
        collecting = self.collecting_queries(plugin)
        assert collecting
        models = self.make_models()
        sim = simulators.create(self.plugin_name, models)
        addr = self.sim_address()
        link, stats, parts = SimLink(sim), LinkStats(), {}
        for q in plugin.queries(addr):
            if q.collect is None:
                parts[q.part] = run_query(plugin, link, q, addr, parts, stats)
        setattr(sim, fault, 2)
        for q in collecting:
            with pytest.raises(FrameError) as err:
                run_query(plugin, link, q, addr, parts, stats)
            assert err.value.kind == "sequence", err.value
