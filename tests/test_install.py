"""``bmsbank install`` / ``uninstall``: the files written, checked by the tools that read them.

No systemd runs here (nor in CI): the unit is checked by ``systemd-analyze verify``, the D-Bus
policy by a real dbus-daemon that loads it (and enforces it against real connections of other
users), the logrotate file by logrotate itself, including a forced rotation that signals a
stand-in supervisord. ``scripts/setup`` installs systemd (for systemd-analyze), dbus-daemon and
logrotate.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bmsbank import cli, install

ROOT = Path(__file__).resolve().parent.parent
FILES = [install.UNIT_PATH, install.SYSUSERS_PATH, install.DBUS_PATH, install.LOGROTATE_PATH]
#: the service user of the policy tests: it exists on Debian with a group of its own name
USER = "daemon"
OTHER = "nobody"
BANK = "com.victronenergy.battery.bmsbank"


def tool(name: str) -> str:
    """The path of a tool ``scripts/setup`` installs; its absence is a failure, not a skip."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is missing: run ./scripts/setup (it installs the package providing it)"
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def installed(prefix: Path, capsys, *args: str, config: str | None = None) -> Path:
    """``bmsbank install --prefix PREFIX`` (with ``config`` as its config file, if given)."""
    if config is not None:
        path = prefix / "etc/bmsbank/bmsbank.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config, encoding="utf-8")
    code, out, err = run_cli(["install", "--prefix", str(prefix), *args], capsys)
    assert code == 0, err
    return prefix


def every_file(prefix: Path) -> list[str]:
    return sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if not p.is_dir())


# ---- what is written ----------------------------------------------------------------------------


def test_install_writes_four_files_0644_and_remove_leaves_nothing(tmp_path, capsys):
    prefix = installed(tmp_path / "root", capsys)
    assert every_file(prefix) == sorted(p.lstrip("/") for p in FILES)
    for p in FILES:
        mode = stat.S_IMODE((prefix / p.lstrip("/")).stat().st_mode)
        assert mode == 0o644, (p, oct(mode))
        assert install.MARKER in (prefix / p.lstrip("/")).read_text(encoding="utf-8")
    # `systemctl enable` made its link: uninstall removes it with the rest
    wants = prefix / install.WANTS_PATH.lstrip("/")
    wants.parent.mkdir(parents=True)
    wants.symlink_to(install.UNIT_PATH)
    code, out, _ = run_cli(["uninstall", "--prefix", str(prefix)], capsys)
    assert code == 0 and out.count("removed ") == 5
    assert list(prefix.iterdir()) == []  # files and the directories install made


def test_the_unit_runs_supervisord_as_the_user_with_its_directories(tmp_path, capsys):
    prefix = installed(tmp_path / "root", capsys, "--user", "bms", "--python", sys.executable)
    unit = (prefix / install.UNIT_PATH.lstrip("/")).read_text(encoding="utf-8")
    lines = set(unit.splitlines())
    venv = os.path.dirname(sys.executable)
    assert {"User=bms", "Group=bms", "Restart=always", "RuntimeDirectory=bmsbank",
            "LogsDirectory=bmsbank", "StateDirectory=bmsbank", "RuntimeDirectoryMode=0700",
            f"ExecStart={venv}/supervisord --nodaemon --configuration "
            "/run/bmsbank/supervisord.conf",
            f"ExecStartPre={sys.executable} -m bmsbank.install supervisord-conf "
            "/etc/bmsbank/bmsbank.toml /run/bmsbank/supervisord.conf"} <= lines  # fmt: skip
    # what would close serial adapters, spidev, socketcan or BlueZ to the services
    for closing in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock",
                    "PrivateNetwork", "PrivateUsers", "SupplementaryGroups"):  # fmt: skip
        assert f"\n{closing}=" not in unit
    families = next(x for x in lines if x.startswith("RestrictAddressFamilies="))
    assert {"AF_UNIX", "AF_CAN", "AF_BLUETOOTH", "AF_NETLINK"} <= set(families[24:].split())
    sysusers = (prefix / install.SYSUSERS_PATH.lstrip("/")).read_text(encoding="utf-8")
    assert "\nu bms - " in sysusers and "\nm bms dialout\n" in sysusers


def test_the_config_decides_the_directories(tmp_path, capsys):
    config = ('runtime_dir = "/run/bank2"\nlog_dir = "/var/log/bank2"\n'
              '[bank]\nstate_file = "/var/lib/bank2/state.json"\n'
              '[dbus]\nnames_file = ""\n'
              '[can]\nenergy_file = "/srv/energy/energy.json"\n')  # fmt: skip
    prefix = installed(tmp_path / "root", capsys, config=config)
    unit = (prefix / install.UNIT_PATH.lstrip("/")).read_text(encoding="utf-8").splitlines()
    assert {"RuntimeDirectory=bank2", "LogsDirectory=bank2", "StateDirectory=bank2",
            "ReadWritePaths=-/srv/energy"} <= set(unit)  # fmt: skip
    rotate = (prefix / install.LOGROTATE_PATH.lstrip("/")).read_text(encoding="utf-8")
    assert "/var/log/bank2/*.log {" in rotate and "cat /run/bank2/supervisord.pid" in rotate


def test_a_config_with_problems_stops_install_with_every_one(tmp_path, capsys):
    prefix = tmp_path / "root"
    path = prefix / "etc/bmsbank/bmsbank.toml"
    path.parent.mkdir(parents=True)
    path.write_text("log_dri = '/var/log/x'\n[bank]\nintervall = 1\n", encoding="utf-8")
    code, out, err = run_cli(["install", "--prefix", str(prefix)], capsys)
    assert code == 2 and out == ""
    assert [line.split(": ")[2] for line in err.splitlines()] == ["log_dri", "bank.intervall"]
    assert every_file(prefix) == ["etc/bmsbank/bmsbank.toml"]


def test_refusals(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["install", "--prefix", str(tmp_path), "--user", "Root Kit"], capsys)
    assert code == 2 and "--user 'Root Kit'" in err
    code, _, err = run_cli(["install", "--prefix", str(tmp_path), "--config", "rel.toml"], capsys)
    assert code == 2 and "absolute path" in err
    # a file of the same name that install did not write is neither overwritten nor removed
    foreign = tmp_path / install.LOGROTATE_PATH.lstrip("/")
    foreign.parent.mkdir(parents=True)
    foreign.write_text("/var/log/other/*.log { weekly }\n", encoding="utf-8")
    code, _, err = run_cli(["install", "--prefix", str(tmp_path)], capsys)
    assert code == 1 and "not written by bmsbank install" in err
    assert run_cli(["uninstall", "--prefix", str(tmp_path)], capsys)[0] == 1
    assert foreign.read_text(encoding="utf-8").startswith("/var/log/other")
    # without --prefix or --dry-run: root only
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = run_cli(["install"], capsys)
    assert code == 1 and "run as root" in err and out == ""
    code, out, _ = run_cli(["install", "--dry-run", "--python", sys.executable], capsys)
    assert code == 0 and f"==> {install.UNIT_PATH} (0644)" in out


def render(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The unit's ExecStartPre: ``python -m bmsbank.install supervisord-conf CONFIG OUT``."""
    argv = [sys.executable, "-m", "bmsbank.install", "supervisord-conf", str(config), str(out)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_the_rendered_supervisord_conf_leaves_rotation_to_logrotate(tmp_path):
    config = tmp_path / "bmsbank.toml"
    config.write_text('log_dir = "/var/log/bank2"\n'
                      + (ROOT / "config.example.toml").read_text(encoding="utf-8"), "utf-8")
    out = tmp_path / "supervisord.conf"
    done = render(config, out)
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "logfile=/var/log/bank2/supervisord.log\nlogfile_maxbytes=0\n" in text
    assert "stdout_logfile_maxbytes=0" in text and "1MB" not in text
    assert f"command={sys.executable} -m bmsbank.services.arbiter --config {config}" in text
    bad = tmp_path / "bad.toml"
    bad.write_text("[bank]\nstale_aftr = 3\n", encoding="utf-8")
    done = render(bad, out)
    assert done.returncode == 2 and "bank.stale_aftr: unknown key; did you mean" in done.stderr


# ---- systemd-analyze verify ---------------------------------------------------------------------


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_systemd_analyze_verifies_the_unit_and_fails_a_broken_one(tmp_path, capsys):
    prefix = installed(tmp_path / "root", capsys, "--python", sys.executable)
    unit = prefix / install.UNIT_PATH.lstrip("/")
    done = verify(unit)
    # a misspelt directive is only a warning to systemd: the output must be empty too
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr
    text = unit.read_text(encoding="utf-8")
    unit.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"), encoding="utf-8")
    assert "Unknown key 'ProtectSystm'" in verify(unit).stderr
    unit.write_text(text.replace(f"ExecStart={os.path.dirname(sys.executable)}/",
                                 "ExecStart=/nonexistent/"), encoding="utf-8")  # fmt: skip
    done = verify(unit)
    assert done.returncode != 0 and "/nonexistent/supervisord" in done.stderr


# ---- the D-Bus policy in a real dbus-daemon -----------------------------------------------------

#: the default policy of Debian's system bus (dbus bus/system.conf.in: no one owns a name or
#: calls a method unless a policy file allows it); the policy under test is included after it
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


def start_bus(folder: Path, policy: Path) -> tuple[subprocess.Popen[str], str]:
    """A dbus-daemon with the system bus defaults and ``policy``: (process, address).

    Raises:
        AssertionError: the daemon refused its configuration (its message attached).

    """
    conf = folder / "bus.conf"
    conf.write_text(BUS_CONF.format(socket=folder / "bus", policy=policy), encoding="utf-8")
    bus = subprocess.Popen([tool("dbus-daemon"), f"--config-file={conf}", "--nofork",
                            "--print-address=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    if not address:
        bus.wait(10)
        raise AssertionError(f"dbus-daemon refused the config: {bus.stderr.read()}")  # type: ignore[union-attr]
    return bus, address


def dbus_send(address: str, user: str, dest: str, *call: str) -> str:
    """``dbus-send`` as ``user``: its output, or its error text."""
    done = subprocess.run(
        ["dbus-send", f"--bus={address}", "--print-reply", "--reply-timeout=2000",
         f"--dest={dest}", *call],
        capture_output=True, text=True, timeout=30, user=user,
    )  # fmt: skip
    return done.stdout + done.stderr


def request_name(address: str, user: str, name: str) -> str:
    return dbus_send(address, user, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                     "org.freedesktop.DBus.RequestName", f"string:{name}", "uint32:4")  # fmt: skip


@pytest.fixture
def bus_dir():
    """A directory other users can reach (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("runs dbus-send as other users: needs root (CI runs as root)")
    with tempfile.TemporaryDirectory(prefix="bmsbank-bus-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def hold_name(address: str, user: str, name: str) -> int:
    """A child process of ``user`` owning ``name`` until killed; its pid."""
    import dbus

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            entry = pwd.getpwnam(user)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            conn = dbus.bus.BusConnection(address)
            conn.request_name(name)
            os.write(ready_w, b"1")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"1", f"{user} could not own {name}"
    os.close(ready_r)
    return pid


def test_dbus_daemon_loads_the_policy_and_enforces_it(bus_dir, capsys):
    prefix = installed(bus_dir / "root", capsys, "--user", USER)
    bus, address = start_bus(bus_dir, prefix / install.DBUS_PATH.lstrip("/"))
    holder = None
    try:
        # the service user owns the bank's name and every pack's (<service>_<pack>); no other
        assert "uint32 1" in request_name(address, USER, BANK)
        assert "uint32 1" in request_name(address, USER, BANK + "_jkbus_2")
        assert "AccessDenied" in request_name(address, USER, "com.victronenergy.vebus.ttyS0")
        assert "AccessDenied" in request_name(address, OTHER, BANK)
        holder = hold_name(address, USER, BANK)
        call = ("/Dc/0/Voltage", "com.victronenergy.BusItem.GetValue")
        # the holder answers nothing: a call let through ends in NoReply, a refused one at once
        assert "AccessDenied" in dbus_send(address, OTHER, BANK, *call)
        assert "NoReply" in dbus_send(address, "root", BANK, *call)
    finally:
        if holder is not None:
            os.kill(holder, signal.SIGKILL)
            os.waitpid(holder, 0)
        bus.terminate()
        bus.wait(10)


def test_dbus_daemon_refuses_a_broken_policy(bus_dir, capsys):
    prefix = installed(bus_dir / "root", capsys, "--user", USER)
    policy = prefix / install.DBUS_PATH.lstrip("/")
    policy.write_text(policy.read_text(encoding="utf-8").replace("own_prefix=", "own_prefx="),
                      encoding="utf-8")  # fmt: skip
    with pytest.raises(AssertionError, match="own_prefx"):
        start_bus(bus_dir, policy)


# ---- logrotate ---------------------------------------------------------------------------------


def logrotate(conf: Path, state: Path, *args: str) -> str:
    done = subprocess.run([tool("logrotate"), *args, "-s", str(state), str(conf)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_logrotate_accepts_the_file_and_rotates_with_a_reopen_signal(bus_dir, capsys):
    run, log = bus_dir / "run", bus_dir / "log"
    config = f'runtime_dir = "{run}"\nlog_dir = "{log}"\n'
    prefix = installed(bus_dir / "root", capsys, "--user", USER, config=config)
    conf = prefix / install.LOGROTATE_PATH.lstrip("/")
    assert "error" not in logrotate(conf, bus_dir / "state", "-d").lower()
    broken = bus_dir / "broken"
    broken.write_text(conf.read_text(encoding="utf-8").replace("weekly", "weeklyy"), "utf-8")
    assert "error: " in logrotate(broken, bus_dir / "state", "-d")
    # a forced rotation: the log moves aside and "supervisord" (a stand-in of the service user)
    # is told to reopen its logs
    entry = pwd.getpwnam(USER)
    for folder in (run, log):
        folder.mkdir(mode=0o750)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    (log / "arbiter.log").write_text("a line\n", encoding="utf-8")
    os.chown(log / "arbiter.log", entry.pw_uid, entry.pw_gid)
    got = run / "usr2"
    stand_in = subprocess.Popen(
        ["/usr/bin/python3", "-c", "import signal, sys, time\n"
         f"signal.signal(signal.SIGUSR2, lambda *_: open({str(got)!r}, 'w').close())\n"
         "print('ready', flush=True)\ntime.sleep(30)"],
        user=USER, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert stand_in.stdout is not None and stand_in.stdout.readline() == "ready\n"
        (run / "supervisord.pid").write_text(f"{stand_in.pid}\n", encoding="utf-8")
        logrotate(conf, bus_dir / "state", "-f")
        deadline = time.monotonic() + 5
        while not got.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.exists(), "supervisord was not told to reopen its logs"
        assert (log / "arbiter.log.1").read_text(encoding="utf-8") == "a line\n"
    finally:
        stand_in.kill()
        stand_in.wait(10)
