"""Remote pollers over TCP: CURVE keys and an allow-list, never a plain listener (issue 11)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zmq

from bmsbank.config import parse
from bmsbank.errors import ConfigError
from bmsbank.schema import TOPIC_BANK, unpack
from bmsbank.services.poller.service import zmq_sender
from bmsbank.state import make_state
from tests.factories import state_msg
from tests.zmqhelp import free_tcp, running_arbiter


@pytest.fixture
def keys(tmp_path):
    """Keys of the arbiter, an allowed poller and a stranger, made by `bmsbank keys`."""
    for name, where in (("arbiter", "arbiter"), ("rack2", "allowed"), ("stranger", "other")):
        out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "keys", str(tmp_path / where),
                              name], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert (tmp_path / where / f"{name}.key_secret").stat().st_mode & 0o077 == 0
    return tmp_path


def remote_poller_config(keys, endpoint: str, who: str, where: str):
    return parse({"zmq": {"states": endpoint,
                          "curve_secret_key": str(keys / where / f"{who}.key_secret"),
                          "curve_server_key": str(keys / "arbiter" / "arbiter.key")}},
                 "remote.toml")  # fmt: skip


def bank_after(tap: str, ctx: zmq.Context, send, pred, timeout: float = 8.0) -> dict:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
    sub.connect(tap)
    deadline = time.monotonic() + timeout
    seq = 0
    try:
        while time.monotonic() < deadline:
            seq += 1
            send(make_state("rack2", 1, "jbd", seq, {k: v for k, v in state_msg().items()
                                                    if k in FIELDS}, {}))  # fmt: skip
            if sub.poll(200):
                bank = unpack(sub.recv_multipart()[1])
                if pred(bank):
                    return bank
        raise AssertionError("no such bank")
    finally:
        sub.close(0)


FIELDS = ("voltage", "current", "soc", "capacity", "remaining", "cells", "balancing",
          "temperatures", "charge_fet", "discharge_fet", "alarms")  # fmt: skip


def test_a_remote_poller_with_an_allowed_key_joins_and_a_stranger_is_refused(keys):
    remote = free_tcp()
    bank = {"strings": [["rack2:1"]], "remote_packs": ["rack2:1"]}
    zc = {"remote_states": remote, "curve_secret_key": str(keys / "arbiter" / "arbiter.key_secret"),
          "curve_clients": str(keys / "allowed")}  # fmt: skip
    with running_arbiter(zmq_extra=zc, **bank) as (arb, ctx, _states, tap):
        strange = remote_poller_config(keys, remote, "stranger", "other")
        stranger_sock, stranger = zmq_sender(strange, ctx)
        try:
            refused = bank_after(tap, ctx, stranger,
                                 lambda b: b["counters"].get("remote_refused", 0) >= 1)  # fmt: skip
            assert refused["online"] == 0 and arb.registry.counters.states == 0
        finally:
            stranger_sock.close(0)
        sock, send = zmq_sender(remote_poller_config(keys, remote, "rack2", "allowed"), ctx)
        try:
            joined = bank_after(tap, ctx, send, lambda b: b["online"] == 1)
            assert joined["packs"][0]["id"] == "rack2:1"
        finally:
            sock.close(0)


def test_remote_pollers_need_keys(keys):
    with pytest.raises(ConfigError, match="zmq.remote_states"):
        parse({"zmq": {"remote_states": "tcp://0.0.0.0:5599"}}, "t.toml")
    with pytest.raises(ConfigError, match="zmq.curve_server_key"):
        parse({"zmq": {"curve_server_key": str(keys / "arbiter" / "arbiter.key")}}, "t.toml")
    with pytest.raises(ConfigError, match="zmq.curve_secret_key"):
        parse({"zmq": {"remote_states": "tcp://0.0.0.0:5599",
                       "curve_secret_key": str(keys / "none.key_secret"),
                       "curve_clients": str(keys / "allowed")}}, "t.toml")  # fmt: skip


def test_with_keys_a_listener_beyond_loopback_is_allowed(keys):
    arbiter = parse({"zmq": {"remote_states": "tcp://0.0.0.0:5599",
                             "curve_secret_key": str(keys / "arbiter" / "arbiter.key_secret"),
                             "curve_clients": str(keys / "allowed")}}, "arbiter.toml")  # fmt: skip
    assert arbiter.zmq.remote_states == "tcp://0.0.0.0:5599"
    remote = remote_poller_config(keys, "tcp://192.168.1.10:5599", "rack2", "allowed")
    assert remote.states_endpoint == "tcp://192.168.1.10:5599"
    with pytest.raises(ConfigError, match="zmq.states"):  # the same address, without keys
        parse({"zmq": {"states": "tcp://192.168.1.10:5599"}}, "plain.toml")
