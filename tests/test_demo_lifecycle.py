"""``bmsbank demo`` stops on every stop signal and leaves nothing behind; its runtime is private.

Each test starts the real demo (supervisord and its children on a private bus), waits for the
first bank view, sends the signal as a service manager, a closed terminal or Ctrl-C would, and
checks the demo said "stopping…", exited with 0 and left no process that names its runtime
directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from bmsbank import demo
from bmsbank.errors import BmsBankError
from tests.test_e2e import processes_using

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)  # the demo makes its own bus
    return env


class _Output:
    """The demo's output, read all along in a thread (a full pipe would block its prints)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert time.monotonic() < deadline and self.proc.poll() is None, (
                f"no {text!r} in the demo's output: {self.text}"
            )
            time.sleep(0.1)


def _finish(proc: subprocess.Popen, rundir: str, out: _Output) -> str:
    proc.wait(timeout=60)
    out.reader.join(10)
    deadline = time.monotonic() + 10  # children end after supervisord's SIGTERM to them
    while processes_using(rundir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(rundir) == [], "the demo left processes behind"
    return out.text


@pytest.mark.parametrize("signals", [
    (signal.SIGTERM,), (signal.SIGHUP,), (signal.SIGINT,), (signal.SIGINT, signal.SIGINT),
], ids=["SIGTERM", "SIGHUP", "SIGINT", "SIGINT-twice"])  # fmt: skip
def test_each_stop_signal_stops_the_demo_and_every_child(tmp_path, signals):
    rundir = str(tmp_path / "run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.cli", "demo", "--runtime-dir", rundir, "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip
    try:
        out = _Output(proc)
        out.wait_for("CVL")  # the first bank view: the stack is up
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.2)  # the second Ctrl-C lands while it stops
        seen = _finish(proc, rundir, out)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen
    assert "bmsbank demo: stopping…" in seen and "bmsbank demo: stopped" in seen
    assert seen.count("stopping…") == 1 and "Traceback" not in seen, seen


def test_ctrl_c_reaches_the_demo_as_a_background_job_of_a_script(tmp_path):
    # a non-interactive shell starts background jobs with SIGINT ignored; Ctrl-C goes to the
    # terminal's whole process group, the script and its job alike
    rundir = str(tmp_path / "run")
    script = (f'"{sys.executable}" -m bmsbank.cli demo --runtime-dir "{rundir}" '
              '--duration 300 & wait')  # fmt: skip
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(),
                            start_new_session=True)  # fmt: skip
    try:
        out = _Output(proc)
        out.wait_for("CVL")
        os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while any("bmsbank.cli demo" in p for p in processes_using(rundir)):
            assert time.monotonic() < deadline, "the demo ignored Ctrl-C"
            time.sleep(0.2)
        seen = _finish(proc, rundir, out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "bmsbank demo: stopped" in seen, seen


def test_a_given_runtime_dir_is_made_private(tmp_path, capsys):
    rundir = tmp_path / "shared"
    rundir.mkdir(mode=0o755)
    os.chmod(rundir, 0o777)  # as a careless mkdir in /tmp leaves it
    demo._private_dir(str(rundir))
    assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700
    assert "made" in capsys.readouterr().out
    demo._private_dir(str(rundir / "new"))
    assert stat.S_IMODE(os.stat(rundir / "new").st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own a directory as another user")
def test_a_runtime_dir_of_another_user_is_refused(tmp_path):
    other = tmp_path / "theirs"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(BmsBankError, match="belongs to another user"):
        demo._private_dir(str(other))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_cannot_reach_the_demos_sockets():
    parent = tempfile.mkdtemp(prefix="bmsbank-test-", dir="/tmp")
    os.chmod(parent, 0o755)  # reachable by anybody: only the runtime dir's own mode keeps out
    rundir = f"{parent}/run"
    os.makedirs(rundir, mode=0o755)  # as a user's mkdir leaves it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.cli", "demo", "--runtime-dir", rundir, "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip
    try:
        out = _Output(proc)
        out.wait_for("CVL")
        probe = (
            "import socket, sys\n"
            "for name in sys.argv[1:]:\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n"
            "        s.connect(name); print('reached', name)\n"
            "    except OSError as exc:\n"
            "        print('refused', name, exc.errno)\n"
        )
        sockets = [f"{rundir}/dbus.sock", f"{rundir}/tap.ipc"]
        assert all(os.path.exists(s) for s in sockets)
        # Debian's python3: the venv's interpreter may live where user nobody cannot go
        probed = subprocess.run(
            ["/usr/bin/python3", "-c", probe, *sockets], user=65534, group=65534,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probed.stdout.count("refused") == 2, probed.stdout + probed.stderr
        own = socket.socket(socket.AF_UNIX)
        own.connect(f"{rundir}/dbus.sock")  # its owner still can
        own.close()
        proc.send_signal(signal.SIGTERM)
        _finish(proc, rundir, out)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(parent, ignore_errors=True)


def test_without_python_dbusmock_the_demo_leaves_the_bluetooth_packs_out(tmp_path, monkeypatch):
    assert demo.fake_bluez_available()  # the test install has the demo extra
    with_ble = demo.plan(str(tmp_path / "with"), None)
    monkeypatch.setattr(demo, "fake_bluez_available", lambda: False)  # a runtime-only install
    assert demo.radio_packs("default", own_bus=True) == ((), demo.DEMO_CAN)
    without = demo.plan(str(tmp_path / "without"), None)
    for p, ble in ((with_ble, True), (without, False)):
        with open(p.config_path, encoding="utf-8") as fh:
            assert ("[[ble]]" in fh.read()) is ble
        with open(p.supervisord_conf, encoding="utf-8") as fh:
            assert ("fakebluez" in fh.read()) is ble



def _session(sid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                state, _ppid, _pgrp, session = fh.read().rpartition(")")[2].split()[:4]
                if int(session) == sid and state != "Z":  # a killed orphan init has not reaped
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return found


def test_a_supervisord_too_slow_to_stop_leaves_no_program_behind():
    from bmsbank import demo

    # a stand-in for supervisord that ignores SIGTERM, with a program in a process group of its
    # own (as supervisord's stopasgroup programs are), which a group kill alone would miss
    child = "import os, time; os.setpgrp(); time.sleep(300)"
    leader = subprocess.Popen(
        ["sh", "-c", f"trap '' TERM; {sys.executable} -c '{child}' & sleep 300; wait"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while len(_session(leader.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_session(leader.pid)) >= 3
    started = time.monotonic()
    demo._stop(leader, timeout=0.5)
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    assert _session(leader.pid) == []
