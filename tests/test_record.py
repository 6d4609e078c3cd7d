"""``bmsbank record`` / ``replay``: the file format, rotation, damage, and an exact replay of a
real arbiter process on real ZeroMQ."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgpack
import pytest
import zmq

from bmsbank import recording
from bmsbank.recording import BANK, STATE, Reader, RecordingError, Writer
from bmsbank.schema import TOPIC_STATE, pack, unpack
from tests.factories import state_msg
from tests.zmqhelp import free_tcp

ENV = {**os.environ}


def _write(path: Path, n: int, max_bytes: int = 10**9, keep: int = 2) -> Writer:
    w = Writer(str(path), {"bank": {"stale_after": 5.0}, "packs": ["a:1"]}, max_bytes, keep)
    for k in range(n):
        w.write(STATE if k % 2 else BANK, pack({"k": k, "pad": "x" * (k % 50)}), 1000.0 + k)
    return w


def test_roundtrip_keeps_bodies_times_kinds_and_header(tmp_path):
    path = tmp_path / "r.rec"
    w = _write(path, 500)
    w.close()
    reader = Reader(str(path))
    assert reader.header["format"] == recording.FORMAT and reader.header["packs"] == ["a:1"]
    assert reader.header["bank"] == {"stale_after": 5.0}
    recs = list(reader.records())
    assert [unpack(r.body)["k"] for r in recs] == list(range(500))
    assert [r.received for r in recs] == [1000.0 + k for k in range(500)]
    assert [r.kind for r in recs[:2]] == [BANK, STATE]
    assert reader.problems == []
    raw = sum(len(r.body) + recording.RECORD.size for r in recs)
    assert path.stat().st_size < raw / 3  # compact: the deflate stream pays


def test_flushed_records_survive_a_crash_and_a_cut_last_record_is_reported(tmp_path):
    path = tmp_path / "r.rec"
    w = _write(path, 100)
    w.flush()  # what the recorder does every second
    size = path.stat().st_size
    # the process dies mid-record: a partial record after the flush point, never finished
    assert w.fh is not None
    w.fh.write(w.deflate.compress(recording.RECORD.pack(1.0, STATE, 400) + b"y" * 100))
    w.fh.write(w.deflate.flush(zlib.Z_SYNC_FLUSH))
    w.fh.flush()
    reader = Reader(str(path))
    recs = list(reader.records())
    assert len(recs) == 100
    assert len(reader.problems) == 1 and "last record is cut" in reader.problems[0]
    # a power cut in the middle of the deflate data: everything before the cut is read
    path.write_bytes(path.read_bytes()[: size - 7])
    reader = Reader(str(path))
    assert 0 < len(list(reader.records())) <= 100


def test_rotation_keeps_n_files_each_a_whole_recording(tmp_path):
    path = tmp_path / "r.rec"
    w = Writer(str(path), {"packs": []}, 2000, keep=2, flush_every=0.0)
    for k in range(12):  # incompressible: each flush passes the size
        w.write(STATE, os.urandom(600) + bytes([k]), float(k))
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["r.rec", "r.rec.1", "r.rec.2"]
    assert w.rotations == 3  # 4 records of 600 bytes pass 2000
    got = [r.body[-1] for f in recording.rotated(str(path), 2) for r in Reader(f).records()]
    assert got == sorted(got) and got[-1] == 11  # oldest first, the newest records kept
    assert all(os.path.getsize(tmp_path / n) < 2000 + 1000 for n in names)  # bounded


def test_not_a_recording_or_damaged_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.rec"
    bad.write_bytes(b"hello world, not a recording at all")
    with pytest.raises(RecordingError, match="x.rec: not a bmsbank recording"):
        Reader(str(bad))
    head = msgpack.packb({"format": 99})
    bad.write_bytes(recording.MAGIC + recording.LENGTH.pack(len(head)) + head)
    with pytest.raises(RecordingError, match="format 99"):
        Reader(str(bad))
    path = tmp_path / "d.rec"
    _write(path, 50).close()
    data = bytearray(path.read_bytes())
    data[-40:-20] = b"\xff" * 20  # damage inside the stream
    path.write_bytes(bytes(data))
    reader = Reader(str(path))
    recs = list(reader.records())
    assert len(recs) < 50 and reader.problems
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "replay", str(bad)],
                         capture_output=True, text=True, env=ENV)  # fmt: skip
    assert out.returncode == 2 and "x.rec" in out.stderr


# -- end to end: a real arbiter, a real recorder, then a replay ---------------------------------

CONFIG = """
runtime_dir = "{rundir}"
[bank]
stale_after = 2.0
interval = 0.2
state_file = ""
max_charge_current = 100.0
current_hold = 0.6
current_ramp = 40.0
[zmq]
states = "{states}"
tap = "{tap}"
control = "{control}"
[[ports]]
name = "a"
device = "/dev/ttyNOPE0"
bms = "jbd"
interval = 0.2
timeout = 0.3
[[ports]]
name = "b"
device = "/dev/ttyNOPE1"
bms = "jbd"
interval = 0.2
timeout = 0.3
"""


def _bound(endpoint: str, timeout: float = 10.0) -> None:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound at {endpoint}")


def _feed(push: zmq.Socket) -> None:
    """Two packs for about 7 s: a charge FET off (a confirmed cut), a silent pack, a rejoin."""
    seq = {"a": 0, "b": 0}
    start = time.monotonic()
    while (t := time.monotonic() - start) < 7.0:
        for port in ("a", "b"):
            if port == "a" and 4.0 <= t < 6.5:
                continue  # silent for more than stale_after: offline, then rejoins
            over = {"current": 5.0 + t, "cells": [3.30 + 0.01 * t] * 16}
            if port == "b" and 1.5 <= t < 2.5:
                over["charge_fet"] = False
            push.send_multipart([TOPIC_STATE, pack(state_msg(port, 1, seq[port], **over))])
            seq[port] += 1
        time.sleep(0.07)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(recording path, config path, recorded banks) of a live run (one for the module)."""
    tmp_path = tmp_path_factory.mktemp("live")
    states, tap, control = free_tcp(), free_tcp(), free_tcp()
    cfg = tmp_path / "bank.toml"
    cfg.write_text(CONFIG.format(rundir=tmp_path, states=states, tap=tap, control=control))
    rec = tmp_path / "night.rec"
    py = sys.executable
    recorder = subprocess.Popen([py, "-m", "bmsbank.cli", "record", str(rec), "--config", str(cfg)],
                                stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    arbiter = subprocess.Popen([py, "-m", "bmsbank.services.arbiter", "--config", str(cfg)],
                               stderr=subprocess.DEVNULL, env=ENV)  # fmt: skip
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        _bound(tap)
        time.sleep(0.5)  # the recorder's reconnect and subscription reach the publisher
        push.connect(states)
        _feed(push)
        time.sleep(0.5)
    finally:
        arbiter.send_signal(signal.SIGTERM)
        arbiter.wait(10)
        time.sleep(0.3)
        recorder.send_signal(signal.SIGTERM)
        _, err = recorder.communicate(timeout=10)
        push.close()
        ctx.term()
    assert recorder.returncode == 0, err
    banks = [unpack(r.body) for r in Reader(str(rec)).records() if r.kind == BANK]
    return rec, cfg, banks


def test_replay_reproduces_the_live_arbiters_limits_exactly(recorded, tmp_path):
    rec, cfg, banks = recorded
    # the run exercised what makes a replay hard: a confirmed cut, a hold and ramp, a lost pack
    assert banks[0]["seq"] == 1 and len(banks) >= 25
    ccls = [b["ccl"] for b in banks]
    assert 0.0 in ccls and len(set(ccls)) >= 5
    assert any(b["offline"] == 1 for b in banks[5:]) and banks[-1]["online"] == 2
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "replay", str(rec), "--all"],
                         capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["seq"] for x in lines] == [b["seq"] for b in banks]
    for line, bank in zip(lines, banks, strict=True):
        assert line["replayed"] == {k: bank[k] for k in ("cvl", "ccl", "dcl", "charge_state")}
        assert line["differs"] == []
    assert f"{len(banks)} bank(s), limits and charge state equal" in out.stderr


def test_replay_with_another_config_shows_the_differences(recorded, tmp_path):
    rec, cfg, banks = recorded
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace("max_charge_current = 100.0",
                                             "max_charge_current = 30.0"))  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "replay", str(rec),
                          "--config", str(other)], capture_output=True, text=True, env=ENV,
                         timeout=60)  # fmt: skip
    assert out.returncode == 1
    diffs = [json.loads(x) for x in out.stdout.splitlines()]
    assert diffs and all("ccl" in d["differs"] for d in diffs)
    assert all(d["replayed"]["ccl"] <= 60.0 for d in diffs)  # 2 packs x 30 A
