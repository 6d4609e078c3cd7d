"""Every file a service keeps across restarts, corrupted every way we could think of.

The arbiter's state file, the publisher's energy file and its names file: for each, a table of
bad contents (wrong types at every field, NaN and infinities, huge numbers, negative ages, lists
of the wrong length, nested garbage, not JSON, not UTF-8, too large, a directory). The service
starts, logs exactly one warning and carries on as with no file; the good file next to each
table shows the same check passes when the file is fine. The arbiter runs on real ZeroMQ
sockets, in-process and once as a real process (the crash loop of issue 11), with whichever
limits engine this run uses; the engines' own ``restore`` is checked on both.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from bmsbank.config import parse
from bmsbank.persisted import MAX_BYTES
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack, unpack
from bmsbank.services.arbiter.service import Arbiter
from bmsbank.services.publisher.energy import ROLLOVER_WH, EnergyFile
from bmsbank.services.publisher.identity import NameStore
from bmsbank.topology import engine_params
from tests.factories import state_msg
from tests.zmqhelp import free_tcp

DIR = object()  #: make the path a directory
NAN, INF = float("nan"), float("inf")
HUGE = 10**400  # an integer no float can hold

# ---- the arbiter's state file ------------------------------------------------------------------

GOOD_SNAPSHOT = {"since_full": [3600.0, None], "since_reset": None, "soc": 55.0}


def state_file(**engine: Any) -> dict[str, Any]:
    """A state file for the two-pack bank below, ``engine`` fields replaced."""
    return {"saved": time.time(), "engine": {**GOOD_SNAPSHOT, **engine}}


def raw(text: str) -> bytes:
    return text.encode()


BAD_ENGINE_FIELDS = {
    "since_full: a string": {"since_full": "3600"},
    "since_full: a number": {"since_full": 3600},
    "since_full: an object": {"since_full": {"a:1": 3600}},
    "since_full: too short": {"since_full": [3600.0]},
    "since_full: too long": {"since_full": [3600.0, None, 1.0]},
    "since_full: empty": {"since_full": []},
    "since_full: a string age": {"since_full": ["3600", None]},
    "since_full: a bool age": {"since_full": [True, None]},
    "since_full: a list age": {"since_full": [[3600.0], None]},
    "since_full: an object age": {"since_full": [{"s": 1}, None]},
    "since_full: a negative age": {"since_full": [-5.0, None]},
    "since_full: an age of 1e300": {"since_full": [1e300, None]},
    "since_full: a huge integer age": {"since_full": [HUGE, None]},
    "since_reset: a string": {"since_reset": "1"},
    "since_reset: a list": {"since_reset": [1.0]},
    "since_reset: negative": {"since_reset": -1.0},
    "since_reset: a huge integer": {"since_reset": HUGE},
    "soc: a string": {"soc": "55"},
    "soc: a bool": {"soc": True},
    "soc: a list": {"soc": [55.0]},
    "soc: above 100": {"soc": 100.5},
    "soc: negative": {"soc": -0.1},
    "soc: a huge integer": {"soc": HUGE},
}
BAD_STATE_FILES: dict[str, Any] = {
    **{name: state_file(**fields) for name, fields in BAD_ENGINE_FIELDS.items()},
    "engine: a list": {"saved": time.time(), "engine": [1, 2]},
    "engine: a string": {"saved": time.time(), "engine": "since_full"},
    "engine: null": {"saved": time.time(), "engine": None},
    "engine: missing": {"saved": time.time()},
    "saved: a string": {**state_file(), "saved": "yesterday"},
    "saved: missing": {"engine": GOOD_SNAPSHOT},
    "saved: negative": {**state_file(), "saved": -5.0},
    "saved: a huge integer": {**state_file(), "saved": HUGE},
    "saved: NaN": raw('{"saved": NaN, "engine": {}}'),
    "saved: Infinity": raw('{"saved": Infinity, "engine": {}}'),
    "saved: 1e400 (infinity)": raw('{"saved": 1e400, "engine": {}}'),
    "soc: NaN": raw(f'{{"saved": {time.time()}, "engine": {{"soc": NaN}}}}'),
    "since_full: -Infinity": raw(f'{{"saved": {time.time()}, "engine": '
                                 '{"since_full": [-Infinity, null]}}'),  # fmt: skip
    "a list": [GOOD_SNAPSHOT],
    "a string": "state",
    "a number": 5,
    "null": None,
    "nested garbage": {"saved": time.time(), "engine": {"since_full": [[[[[{"x": [1]}]]]], None]}},
    "nested past reason": raw('{"engine": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "empty": b"",
    "not JSON": b"{not json",
    "truncated": json.dumps(state_file()).encode()[:-7],
    "not UTF-8": b'{"saved": 1, "engine": {"soc": "\xff\xfe"}}',
    "larger than the limit": b" " * (MAX_BYTES + 1) + json.dumps(state_file()).encode(),
    "a directory": DIR,
}  # fmt: skip


def write(path: Path, content: Any) -> None:
    if content is DIR:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content))


def warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith(logger)]  # fmt: skip


def arbiter_config(path: Path | None, **bank: Any):
    """An arbiter's config on loopback keeping its memory in ``path`` (None: no file)."""
    zmq_cfg = {"states": free_tcp(), "tap": free_tcp(), "control": free_tcp()}
    where = "" if path is None else str(path)
    bank = {"interval": 0.2, "stale_after": 2.0, "coulomb_counting": True, "state_file": where,
            "strings": [["p:1"], ["p:2"]], **bank}  # fmt: skip
    return parse({"bank": bank, "zmq": zmq_cfg}, "test")


def restored(path: Path, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """Start an arbiter on the file, publish one bank, close it: what it remembered."""
    ctx = zmq.Context()
    arb = Arbiter(arbiter_config(path), ctx)
    try:
        arb.handle([TOPIC_STATE, pack(state_msg("p", 1, soc=20.0))], time.monotonic())
        arb.handle([TOPIC_STATE, pack(state_msg("p", 2, soc=20.0))], time.monotonic())
        bank = arb.publish_bank(time.monotonic())
        assert bank["online"] == 2 and bank["ccl"] > 0.0  # carries on: the bank is computed
        return {"soc": bank["soc"], "days": bank["days_since_full"], **arb.engine.snapshot()}
    finally:
        arb.pull.close()
        arb.tap.close()
        arb.control.close()
        ctx.term()


def test_a_good_state_file_is_restored(tmp_path, caplog):
    path = tmp_path / "state.json"
    write(path, state_file(since_full=[3600.0, 7200.0]))
    memory = restored(path, caplog)
    assert memory["soc"] == pytest.approx(55.0)  # the counted SoC, not the packs' 20 %
    assert memory["days"] == pytest.approx(7200.0 / 86400.0, abs=1e-4)
    assert warnings(caplog, "bmsbank") == []


@pytest.mark.parametrize("content", BAD_STATE_FILES.values(), ids=BAD_STATE_FILES.keys())
def test_a_corrupt_state_file_is_logged_once_and_ignored(tmp_path, caplog, content):
    path = tmp_path / "state.json"
    write(path, content)
    memory = restored(path, caplog)
    assert memory["soc"] == pytest.approx(20.0)  # as with no file: the packs' SoC
    assert memory["days"] is None and memory["since_full"] == [None, None]
    assert memory["since_reset"] is None
    said = warnings(caplog, "bmsbank")
    assert len(said) == 1 and "state file" in said[0] and "\n" not in said[0], said


@pytest.mark.parametrize("fields", BAD_ENGINE_FIELDS.values(), ids=BAD_ENGINE_FIELDS.keys())
def test_both_engines_refuse_the_same_bad_snapshots_and_keep_their_memory(limits_impls, fields):
    config = arbiter_config(None)
    topo = config.topology()
    errors = []
    for impl in limits_impls:
        engine = impl.Engine(engine_params(config.bank, topo), topo.strings, topo.cells,
                             topo.capacities)  # fmt: skip
        engine.restore(0.0, {"since_full": [10.0, 20.0], "since_reset": 5.0, "soc": 40.0})
        engine.step(0.0, [None, None], [NAN, NAN])
        before = engine.snapshot()
        assert before["since_full"] == [10.0, 20.0] and before["soc"] == 40.0
        with pytest.raises(ValueError) as exc:
            engine.restore(0.0, {**GOOD_SNAPSHOT, **fields})
        assert engine.snapshot() == before  # refused before anything was taken
        errors.append(str(exc.value))
    assert errors[0] == errors[1]


def wait_bank(sub: zmq.Socket, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub.poll(100):
            topic, body = sub.recv_multipart()
            if topic == TOPIC_BANK and pred(bank := unpack(body)):
                return bank
    raise AssertionError("no matching bank")


def test_the_arbiter_process_runs_on_with_a_wrongly_typed_field(tmp_path):
    """The finding: valid JSON, one field of the wrong type, and the arbiter crash-looped."""
    path = tmp_path / "state.json"
    write(path, state_file(since_full=["3600", {"x": 1}], soc=[1]))
    cfg = arbiter_config(path)
    text = (f'[bank]\ninterval = 0.2\nstale_after = 2.0\nstate_file = "{path}"\n'
            f'strings = [["p:1"], ["p:2"]]\n[zmq]\nstates = "{cfg.states_endpoint}"\n'
            f'tap = "{cfg.tap_endpoint}"\ncontrol = "{cfg.control_endpoint}"\n')  # fmt: skip
    toml = tmp_path / "bmsbank.toml"
    toml.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.services.arbiter", "--config", str(toml)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ctx = zmq.Context()
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    try:
        push.connect(cfg.states_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(cfg.tap_endpoint)
        for seq in range(20):
            for addr in (1, 2):
                push.send_multipart([TOPIC_STATE, pack(state_msg("p", addr, seq=seq))])
            if seq > 5:
                try:
                    bank = wait_bank(sub, lambda b: b["online"] == 2, timeout=0.3)
                    break
                except AssertionError:
                    pass
            time.sleep(0.2)
        else:
            raise AssertionError("the arbiter published no bank with both packs")
        assert bank["ccl"] > 0.0 and bank["dcl"] > 0.0 and proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        push.close(0)
        sub.close(0)
        ctx.term()
    assert proc.returncode == 0, err
    assert err.count("WARNING") == 1 and "state file" in err and "Traceback" not in err, err


# ---- the publisher's energy file ---------------------------------------------------------------

GOOD_ENERGY = {"v": 1, "saved": 1.0, "energy_in_wh": 1234.5, "energy_out_wh": 678.0}
BAD_ENERGY: dict[str, Any] = {
    **{f"{key}: {name}": {**GOOD_ENERGY, key: value}
       for key in ("energy_in_wh", "energy_out_wh")
       for name, value in [("a string", "1"), ("a bool", True), ("null", None), ("a list", [1.0]),
                           ("an object", {"wh": 1}), ("negative", -1.0),
                           ("beyond the rollover", ROLLOVER_WH * 2), ("a huge integer", HUGE)]},
    "energy_in_wh: missing": {"v": 1, "energy_out_wh": 1.0},
    "energy_out_wh: missing": {"v": 1, "energy_in_wh": 1.0},
    "v: another version": {**GOOD_ENERGY, "v": 2},
    "v: true": {**GOOD_ENERGY, "v": True},
    "v: a string": {**GOOD_ENERGY, "v": "1"},
    "NaN": raw('{"energy_in_wh": NaN, "energy_out_wh": 0}'),
    "Infinity": raw('{"energy_in_wh": 0, "energy_out_wh": Infinity}'),
    "1e400": raw('{"energy_in_wh": 1e400, "energy_out_wh": 0}'),
    "a list": [1234.5, 678.0],
    "a number": 5,
    "null": None,
    "nested past reason": raw("[" * 100_000 + "]" * 100_000),
    "empty": b"",
    "not JSON": b"{not json",
    "not UTF-8": b'{"energy_in_wh": 1, "\xff": 2}',
    "larger than the limit": b" " * (MAX_BYTES + 1) + json.dumps(GOOD_ENERGY).encode(),
    "a directory": DIR,
}  # fmt: skip


def test_a_good_energy_file_is_loaded(tmp_path, caplog):
    path = tmp_path / "energy.json"
    write(path, GOOD_ENERGY)
    assert EnergyFile(str(path)).load() == (1234.5, 678.0)
    assert warnings(caplog, "bmsbank") == []


@pytest.mark.parametrize("content", BAD_ENERGY.values(), ids=BAD_ENERGY.keys())
def test_a_corrupt_energy_file_is_logged_once_and_counting_starts_from_zero(
    tmp_path, caplog, content
):
    path = tmp_path / "energy.json"
    write(path, content)
    store = EnergyFile(str(path))
    assert store.load() == (0.0, 0.0)
    said = warnings(caplog, "bmsbank")
    assert len(said) == 1 and "energy file" in said[0] and "\n" not in said[0], said
    if content is not DIR:
        assert store.save((5.0, 6.0)) and EnergyFile(str(path)).load() == (5.0, 6.0)  # carries on


# ---- the publisher's names file ----------------------------------------------------------------

GOOD_NAMES = {"bmsbank_house": "House bank", "bmsbank_house_p_1": "Pack 1"}
BAD_NAMES: dict[str, Any] = {
    "a name: a number": {**GOOD_NAMES, "bmsbank_house": 5},
    "a name: null": {**GOOD_NAMES, "bmsbank_house": None},
    "a name: a bool": {**GOOD_NAMES, "bmsbank_house": True},
    "a name: a list": {**GOOD_NAMES, "bmsbank_house": ["House"]},
    "a name: an object": {**GOOD_NAMES, "bmsbank_house": {"name": "House"}},
    "a name: empty": {**GOOD_NAMES, "bmsbank_house": ""},
    "a name: too long": {**GOOD_NAMES, "bmsbank_house": "x" * 65},
    "a name: a megabyte": {**GOOD_NAMES, "bmsbank_house": "x" * 1_000_000},
    "a unique id: empty": {**GOOD_NAMES, "": "Nameless"},
    "a unique id: too long": {**GOOD_NAMES, "u" * 256: "Long"},
    "NaN": raw('{"bmsbank_house": NaN}'),
    "a list": [["bmsbank_house", "House bank"]],
    "a string": "House bank",
    "null": None,
    "nested past reason": raw('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "empty": b"",
    "not JSON": b"{not json",
    "not UTF-8": b'{"bmsbank_house": "\xff\xfe"}',
    "a directory": DIR,
}  # fmt: skip


def test_a_good_names_file_is_read(tmp_path, caplog):
    path = tmp_path / "names.json"
    write(path, GOOD_NAMES)
    assert NameStore(str(path)).get("bmsbank_house", "default") == "House bank"
    assert warnings(caplog, "bmsbank") == []


@pytest.mark.parametrize("content", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_corrupt_names_file_is_logged_once_and_taken_as_empty(tmp_path, caplog, content):
    path = tmp_path / "names.json"
    write(path, content)
    store = NameStore(str(path))
    for _ in range(3):  # read at every start of a service and every rename: warned once
        assert store.get("bmsbank_house", "default") == "default"
        assert store.get("bmsbank_house_p_1", "Pack") == "Pack"
    said = warnings(caplog, "bmsbank")
    assert len(said) == 1 and "custom-name file" in said[0] and "\n" not in said[0], said
    if content is not DIR:
        store.put("bmsbank_house", "Renamed")  # carries on: the next name is kept
        assert NameStore(str(path)).get("bmsbank_house", "default") == "Renamed"
