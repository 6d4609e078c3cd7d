"""The web view's history store, its service process and its config (issue 15 item 3).

Banks come from the real arbiter code (BankEngine + BankComputer); the service test runs
``python -m bmsbank.web`` as a process against a real ZeroMQ PUB socket and reads it over HTTP.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from bmsbank import config as configuration
from bmsbank.errors import ConfigError
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack, validate_bank
from bmsbank.services.arbiter.bank import BankComputer
from bmsbank.services.arbiter.engine import BankEngine
from bmsbank.web.history import History, csv_text
from tests.factories import state_msg

PACKS = [f"p{i}:1" for i in range(12)]


def _banks(start: float, step: float, n: int, cut_at: int | None = None):
    """``n`` validated bank messages ``step`` s apart from unix time ``start``."""
    engine = BankEngine.from_mapping(
        {"stale_after": 1e9, "share": "count", "strings": [[p] for p in PACKS],
         "confirm_states": 1}, "test")  # fmt: skip
    computer = BankComputer(engine, "test", started=0.0)
    for k in range(n):
        for i, pid in enumerate(PACKS):
            over = {"charge_fet": False} if cut_at is not None and k >= cut_at and i == 2 else {}
            engine.accept(state_msg(pid.split(":")[0], 1, seq=k + 1, **over), k + 1.0)
        bank = computer.compute(k + 1.0)
        bank["time"] = start + k * step
        yield validate_bank(bank)


def test_history_survives_a_restart_and_logs_limit_changes_with_reasons(tmp_path):
    path = str(tmp_path / "h" / "history.sqlite3")
    h = History(path, 8 << 20)
    banks = list(_banks(1.8e9, 10.0, 40, cut_at=30))
    for b in banks:
        h.add(b)
    h.close()
    again = History(path, 8 << 20)
    pts = again.points("24h", since=0)
    assert [p["t"] for p in pts] == [b["time"] for b in banks]
    assert pts[0]["voltage"] == pytest.approx(banks[0]["voltage"], abs=1e-3)
    assert pts[-1]["ccl"] == banks[-1]["ccl"] and set(pts[-1]["spread"]) == set(PACKS)
    assert len(again.points("7d", since=0)) == 7  # 400 s of points in 1-min buckets
    (event,) = [e for e in again.events() if e["text"].startswith("CCL")]
    assert event["t"] == banks[30]["time"]
    assert (
        f"{banks[29]['ccl']:.0f}→{banks[30]['ccl']:.0f} A: {banks[30]['reasons']['ccl']}"
        in (event["text"])
    )
    csv = csv_text(pts).splitlines()
    assert csv[0].startswith("time_utc,t,voltage,current,soc,cvl,ccl,dcl,spread_mv_p0:1")
    assert len(csv) == 41


def test_history_never_exceeds_its_bound_and_keeps_the_newest(tmp_path):
    path = str(tmp_path / "history.sqlite3")
    bound = 256 * 1024
    h = History(path, bound)
    sizes = []
    last = None
    for k, b in enumerate(_banks(1.8e9, 10.0, 3000)):  # 8.3 h of 10 s points, ~1.5 MB unbounded
        h.add(b)
        last = b
        if k % 100 == 0:
            sizes.append(os.path.getsize(path))
    h.close()
    sizes.append(os.path.getsize(path))
    assert h.trimmed > 0 and max(sizes) <= bound, sizes
    pts = History(path, bound).points("24h", since=0)
    assert pts[-1]["t"] == last["time"] and pts[0]["t"] > 1.8e9  # the oldest went first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def _start(cfg: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bmsbank.web", "--config", cfg],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)


class _Stream:
    """An open /events stream: the browser's side of Server-Sent Events."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", f"/events?token={token}")
        self.r = self.conn.getresponse()
        assert self.r.status == 200 and self.r.getheader("Content-Type") == "text/event-stream"

    def next(self, event: str) -> dict:
        while True:
            line = self.r.fp.readline().decode()
            if line.startswith(f"event: {event}"):
                return json.loads(self.r.fp.readline().decode()[len("data: ") :])


def test_service_counts_bad_tap_messages_keeps_history_over_a_restart_and_needs_its_token(
    tmp_path,
):
    port = _free_port()
    cfg = tmp_path / "bmsbank.toml"
    cfg.write_text(f'runtime_dir = "{tmp_path}"\n[web]\nport = {port}\ntoken = "s3cret"\n'
                   f'history_dir = "{tmp_path}/history"\n')  # fmt: skip
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"ipc://{tmp_path}/tap.ipc")
    proc = _start(str(cfg), port)
    try:
        assert _get(port, "/")[0] == 403 and _get(port, "/history.json?token=nope")[0] == 403
        status, page = _get(port, "/?token=s3cret")
        assert status == 200 and b"<title>bmsbank</title>" in page
        time.sleep(0.5)  # the service's SUB connects
        banks = list(_banks(time.time() - 60, 2.0, 30))
        bad = [
            b"\xc1 not msgpack",
            pack({**banks[0], "cvl": float("nan")}),
            msgpack.packb({"v": 1, "kind": "bank"}),
        ]
        for b in banks[:10]:
            pub.send_multipart([TOPIC_BANK, pack(b)])
        for body in bad:
            pub.send_multipart([TOPIC_BANK, body])
        pub.send_multipart([TOPIC_STATE, b"junk"])  # not subscribed while nobody looks
        for b in banks[10:]:
            pub.send_multipart([TOPIC_BANK, pack(b)])
        time.sleep(0.5)
        stream = _Stream(port, "s3cret")
        seen = stream.next("bank")
        assert seen["seq"] == banks[-1]["seq"] and seen["ccl"] == banks[-1]["ccl"]
        assert seen["web"]["bad"] == {"bank": 3, "state": 0, "other": 0}
        time.sleep(0.3)  # a browser looks: states are subscribed now
        state = state_msg("p0", 1, seq=99)
        for body in (b"junk", pack({**state, "cells": []}), pack(state)):
            pub.send_multipart([TOPIC_STATE, body])
        pub.send_multipart([b"states", b"x"])  # starts with "state": the SUB lets it through
        assert stream.next("states")["p0:1"]["cells"] == state["cells"]
        pub.send_multipart([TOPIC_BANK, pack(banks[-1])])
        assert stream.next("bank")["web"]["bad"] == {"bank": 3, "state": 2, "other": 1}
        stream.conn.close()
        log = "".join(_stop_and_read(proc))
        assert "bad bank message skipped" in log and "Traceback" not in log, log
        proc = _start(str(cfg), port)  # a restart of the web service
        status, body = _get(port, "/history.json?span=24h&token=s3cret")
        pts = json.loads(body)
        assert status == 200 and [p["t"] for p in pts] == sorted(
            {b["time"] - b["time"] % 10 for b in banks}
        )
        status, csv = _get(port, "/history.csv?span=7d&token=s3cret")
        assert status == 200 and csv.startswith(b"time_utc,t,voltage")
    finally:
        _stop_and_read(proc)
        pub.close()


def _stop_and_read(proc: subprocess.Popen) -> list[str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return proc.stderr.readlines() if proc.stderr else []


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.168.1.10", "::"])
def test_a_listen_address_off_loopback_needs_a_token(tmp_path, listen):
    cfg = tmp_path / "b.toml"
    cfg.write_text(f'[web]\nlisten = "{listen}"\n')
    with pytest.raises(ConfigError) as err:
        configuration.load(str(cfg))
    assert "web.token" in str(err.value) and listen in str(err.value)
    cfg.write_text(f'[web]\nlisten = "{listen}"\ntoken = "abc"\n')
    assert configuration.load(str(cfg)).web.token == "abc"


@pytest.mark.parametrize("text, key", [
    ('[web]\nlisten = "localhost:80"\n', "web.listen"),
    ("[web]\nport = 0\n", "web.port"),
    ("[web]\nhistory_max_mb = 0.5\n", "web.history_max_mb"),
    ('[web]\nhistory_dir = "rel/dir"\n', "web.history_dir"),
    ("[web]\nprot = 8088\n", "web.prot"),
])  # fmt: skip
def test_bad_web_keys_are_named(tmp_path, text, key):
    cfg = tmp_path / "b.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        configuration.load(str(cfg))
    assert key in str(err.value)
