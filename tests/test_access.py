"""No way in for other local users (issue 11, point 5).

The arbiter's ipc:// sockets are files only their user may open and the demo's private D-Bus takes
connections from its own user only: an unprivileged user cannot push states, read the tap or
switch a FET. The tests run as root and try as ``nobody`` (setpriv), in a runtime directory
anyone may traverse, so the sockets' own modes are what stops them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
import zmq

from bmsbank.config import parse
from bmsbank.demo import PRIVATE_BUS_CONF
from bmsbank.schema import TOPIC_BANK
from bmsbank.services.arbiter.service import Arbiter


def _nobody() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as another user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def open_dir():
    """A runtime directory anyone may enter (as a loosely made /run/bmsbank would be)."""
    path = tempfile.mkdtemp(prefix="bmsbank-access-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


INTRUDER = textwrap.dedent(
    """
    import sys, time, zmq
    from bmsbank.schema import control_request, pack
    from tests.factories import state_msg
    run = sys.argv[1]
    ctx = zmq.Context()
    tap = ctx.socket(zmq.SUB); tap.setsockopt(zmq.SUBSCRIBE, b""); tap.connect(f"ipc://{run}/tap.ipc")
    push = ctx.socket(zmq.PUSH); push.connect(f"ipc://{run}/states.ipc")
    ctl = ctx.socket(zmq.DEALER); ctl.connect(f"ipc://{run}/control.ipc")
    ctl.send_multipart([b"control", pack(control_request("x1", "p:1", "charge", False))])
    for i in range(5):
        try:
            push.send_multipart([b"state", pack(state_msg("p", 1, seq=100 + i))], zmq.NOBLOCK)
        except zmq.Again:
            pass
    heard = replies = 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        heard += bool(tap.poll(50)) and bool(tap.recv_multipart())
        replies += bool(ctl.poll(0)) and bool(ctl.recv_multipart())
    print(heard, replies)
    ctx.destroy(0)
    """
)


def test_an_unprivileged_user_cannot_push_states_read_the_tap_or_switch_a_fet(open_dir):
    as_nobody = _nobody()
    run = os.path.join(open_dir, "run")
    cfg = parse({"runtime_dir": run, "bank": {"strings": [["p:1"]], "interval": 0.2,
                                                "state_file": ""}}, "test")  # fmt: skip
    os.makedirs(run, mode=0o755)  # loose, on purpose: the socket files must hold on their own
    ctx = zmq.Context()
    old = os.umask(0)  # a service started with umask 0 (a container's default): no help from it
    try:
        arbiter = Arbiter(cfg, ctx)
    finally:
        os.umask(old)
    stop = threading.Event()
    thread = threading.Thread(target=arbiter.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        for name in ("states", "tap", "control"):
            mode = stat.S_IMODE(os.stat(f"{run}/{name}.ipc").st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))  # nothing for group or others
        root_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = subprocess.run([*as_nobody, sys.executable, "-c", INTRUDER, run], cwd=root_dir,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert code.returncode == 0, code.stderr
        assert code.stdout.split() == ["0", "0"]  # no bank heard, no control result
        assert arbiter.registry.counters.states == 0
        assert arbiter.control.counters.requests == 0
        sub = ctx.socket(zmq.SUB)  # the service user still can
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
        sub.connect(cfg.tap_endpoint)
        assert sub.poll(3000), "the service user reads the tap"
        sub.close(0)
    finally:
        stop.set()
        thread.join(2)
        arbiter.close()
        ctx.term()


def test_the_demo_bus_takes_its_own_user_only(open_dir):
    as_nobody = _nobody()
    conf = os.path.join(open_dir, "bus.conf")
    sock = os.path.join(open_dir, "bus.sock")
    with open(conf, "w", encoding="utf-8") as fh:
        fh.write(PRIVATE_BUS_CONF.format(sock=sock))
    daemon = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork"],
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ask = ["dbus-send", f"--bus=unix:path={sock}", "--print-reply",
               "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
               "org.freedesktop.DBus.ListNames"]  # fmt: skip
        mine = subprocess.run(ask, capture_output=True, text=True, timeout=30)
        assert mine.returncode == 0 and "org.freedesktop.DBus" in mine.stdout
        theirs = subprocess.run([*as_nobody, *ask], capture_output=True, text=True, timeout=30)
        assert theirs.returncode != 0 and "org.freedesktop.DBus" not in theirs.stdout
    finally:
        daemon.terminate()
        daemon.wait(10)
