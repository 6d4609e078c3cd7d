"""Malformed config files: exit code 2, one line per problem naming the file and the key.

Every case goes through the command that checks a config, ``bmsbank check-config FILE``
(``bmsbank.cli.main``, the same function as the installed command); the services' entry points
and ``bmsbank supervisor-config`` are run as processes for a few of them. A case is a file and the
lines it must produce, each ``(key, words)``: the line is ``bmsbank: FILE: KEY: ...`` and holds
``words``. No case may end in a traceback or print anything on stdout.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pwd
import shlex
import subprocess
import sys
import tempfile
import tomllib
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supervisor.options import ServerOptions

from bmsbank import cli, config, supervisor

ROOT = Path(__file__).resolve().parent.parent
PORT = '[[ports]]\nname = "p"\ndevice = "/dev/ttyUSB0"\nbms = "jkpb"\naddresses = [1, 2]\n'
JBD = '[[ports]]\nname = "j"\ndevice = "/dev/ttyUSB1"\nbms = "jbd"\n'
LONG = "/run/" + "d" * 100

Case = tuple[str, "str | bytes", list[tuple[str, str]]]


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str | bytes) -> tuple:
    """Write ``body`` to a file, run ``bmsbank check-config`` on it: (path, code, out, err)."""
    path = tmp_path / "bmsbank.toml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body, encoding="utf-8")
    return (str(path), *run_check(str(path), capsys))


def run_check(path: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check-config", path])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(
    path: str, code: int, out: str, err: str, lines: list[tuple[str, str]], prog: str = "bmsbank"
) -> None:
    """Exit 2, nothing on stdout, exactly one stderr line per expected (key, words), in order."""
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    got = err.splitlines()
    assert len(got) == len(lines), err
    for line, (key, words) in zip(got, lines, strict=True):
        assert line.startswith(f"{prog}: {path}: {key}: "), line
        assert words in line, line


def cases(table: list[Case]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("body,lines", [c[1:] for c in table], ids=[c[0] for c in table])


# ---- file errors -------------------------------------------------------------------------------

FILE_CASES: list[Case] = [
    ("not-utf8", b'[bank]\nname = "caf\xe9"\n', [("encoding", "line 2 has byte 0xe9")]),
    ("utf16", "[bank]\n".encode("utf-16"), [("encoding", "UTF-8 text")]),
    ("empty", "", [("file", "the file is empty")]),
    ("only-comments", "# nothing here\n\n", [("file", "the file is empty or all comments")]),
    ("too-large", "# " + "x" * (1 << 20) + "\n", [("file", "at most 1048576 bytes")]),
]


@cases(FILE_CASES)
def test_file_errors(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "device"])
def test_a_path_that_is_no_config_file(tmp_path, capsys, kind):
    path = str(tmp_path / "bmsbank.toml")
    words = {"missing": "no such file", "directory": "not a directory",
             "fifo": "not a device, FIFO", "device": "not a device, FIFO"}[kind]  # fmt: skip
    if kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)  # opened without blocking: no writer needed
    elif kind == "device":
        path = "/dev/null"
    assert_refused(path, *run_check(path, capsys), [("file", words)])


def as_user(uid: int, gid: int, argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` in a forked child that dropped to ``uid``/``gid``: (code, out, err).

    Forked rather than started: the interpreter of the test environment may live where an
    unprivileged user cannot execute it (a pyenv under /root); the code run is the same.
    """
    config.load(str(ROOT / "config.example.toml"))  # imports all a check needs, before the drop
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(argv)
            result = [code, out.getvalue(), err.getvalue()]
        except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
            result = [-1, "", traceback.format_exc()]
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    code, out, err = json.loads(data)
    return code, out, err


def test_an_unreadable_file_as_an_unprivileged_user():
    """Root reads anything: the check runs as nobody on a file that only its owner may read."""
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run the check as")
    uid, gid = (nobody.pw_uid, nobody.pw_gid) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    # not in pytest's tmp_path: its parent is 0700, nobody must reach the file to be refused by
    # the file's own mode
    with tempfile.TemporaryDirectory(prefix="bmsbank-perm-") as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "bmsbank.toml"
        path.write_text(PORT, encoding="utf-8")
        path.chmod(0o000)
        code, out, err = as_user(uid, gid, ["check-config", str(path)])
        assert_refused(str(path), code, out, err, [("file", "permission denied")])
        path.chmod(0o644)  # the same file, readable: the refusal was its mode
        assert as_user(uid, gid, ["check-config", str(path)])[:2] == (
            0,
            f"{path}: ok: 1 port(s), 2 pack(s), 1 poller process(es)\n",
        )


# ---- TOML syntax ---------------------------------------------------------------------------------

SYNTAX_CASES: list[Case] = [
    ("unclosed-table", "[bank\n", [("syntax", "valid TOML")]),
    ("duplicate-key", "[bank]\ninterval = 1\ninterval = 2\n", [("syntax", "valid TOML")]),
    ("bad-value", "[bank]\ninterval = 1.0.0\n", [("syntax", "at line 2")]),
    ("nul-byte", "[bank]\nname = 'a'\x00\n", [("syntax", "valid TOML")]),
    ("nested-too-deep", "a = " + "[" * 5000 + "\n", [("syntax", "nested too deeply")]),
]


@cases(SYNTAX_CASES)
def test_syntax(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- unknown keys and sections: did you mean ---------------------------------------------------

UNKNOWN_CASES: list[Case] = [
    ("bank-key", "[bank]\nstale_aftr = 3\n",
     [("bank.stale_aftr", "unknown key; did you mean stale_after?")]),
    ("section", "[bnak]\ninterval = 1\n", [("bnak", "unknown key; did you mean bank?")]),
    ("top-key", "colour = 'red'\n", [("colour", "expected one of runtime_dir, log_level")]),
    ("port-key", PORT + "adresses = [1]\n",
     [("ports[0].adresses", "did you mean addresses?")]),
    ("family-option", PORT + "settings_evry = 5\n",
     [("ports[0].settings_evry", "did you mean settings_every?")]),
    ("other-familys-option", JBD + "settings_every = 5\n",
     [("ports[0].settings_every", "unknown key")]),
    ("bms-name", PORT.replace('"jkpb"', '"jkbp"'), [("ports[0].bms", "did you mean jkpb?")]),
    ("log-level", "log_level = 'inof'\n", [("log_level", "did you mean info?")]),
    ("quoted-key", '[bank]\n"stale after\\n" = 3\n',
     [('bank."stale after\\n"', "did you mean stale_after?")]),
]  # fmt: skip


@cases(UNKNOWN_CASES)
def test_unknown_keys(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- wrong types ---------------------------------------------------------------------------------

TYPE_CASES: list[Case] = [
    ("string-for-seconds", "[bank]\nstale_after = 'ten'\n", [("bank.stale_after", "got 'ten'")]),
    ("string-for-bool", "[dbus]\nenabled = 'yes'\n", [("dbus.enabled", "true or false")]),
    ("float-for-int", "[can]\nbitrate = 500000.0\n", [("can.bitrate", "got 500000.0")]),
    ("float-for-int-instance", "[dbus]\ndevice_instance = 7.0\n",
     [("dbus.device_instance", "an integer 0-1023")]),
    ("section-not-a-table", "bank = 5\n", [("bank", "a table ([bank]), got 5")]),
    ("ports-as-table", "[ports]\nname = 'a'\n", [("ports", "write [[ports]], not [ports]")]),
    ("port-not-a-table", "ports = [1]\n", [("ports[0]", "a [[ports]] table, got 1")]),
    ("float-in-time-to-soc", "[bank]\ntime_to_soc = [50.0]\n",
     [("bank.time_to_soc", "integers 0-100")]),
]  # fmt: skip


@cases(TYPE_CASES)
def test_wrong_types(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- booleans never pass as numbers ------------------------------------------------------------

BOOL_CASES: list[Case] = [
    ("addresses", PORT.replace("[1, 2]", "[true]"), [("ports[0].addresses", "got [True]")]),
    ("time-to-soc", "[bank]\ntime_to_soc = [true]\n", [("bank.time_to_soc", "got [True]")]),
    ("table-row", "[bank]\nccl_cell_table = [[true, 1.0]]\n",
     [("bank.ccl_cell_table", "got [[True, 1.0]]")]),
    ("window", "[bank]\ncharge_window = [true, 50]\n", [("bank.charge_window", "got [True, 50]")]),
    ("int-key", "[dbus]\ndevice_instance = true\n", [("dbus.device_instance", "got True")]),
    ("float-key", "[bank]\ninterval = true\n", [("bank.interval", "got True")]),
    ("port-int", PORT + "retries = false\n", [("ports[0].retries", "got False")]),
    ("family-option", PORT + "settings_every = true\n", [("ports[0].settings_every", "got True")]),
    ("pack-table", '[bank.packs."x:1"]\ncells = true\n', [('bank.packs."x:1".cells', "1-64")]),
]  # fmt: skip


@cases(BOOL_CASES)
def test_booleans_are_not_numbers(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- out of range --------------------------------------------------------------------------------

RANGE_CASES: list[Case] = [
    ("bitrate", "[can]\nbitrate = 125000\n", [("can.bitrate", "250000 or 500000")]),
    ("soc", "[bank]\nrebulk_soc = 101\n", [("bank.rebulk_soc", "got 101.0")]),
    ("cell-volts", "[bank]\ncell_charge_voltage = 5.0\n",
     [("bank.cell_charge_voltage", "2.0-4.5")]),
    ("retries", PORT + "retries = 9\n", [("ports[0].retries", "0-5, got 9")]),
    ("nan", "[bank]\nstale_after = nan\n", [("bank.stale_after", "got nan")]),
    ("inf", "[bank]\nmax_charge_current = inf\n", [("bank.max_charge_current", "got inf")]),
    ("negative", "[bank]\nmax_discharge_current = -1\n",
     [("bank.max_discharge_current", "amperes >= 0")]),
    ("fraction", "[bank]\nccl_cell_table = [[3.5, 2.0]]\n",
     [("bank.ccl_cell_table", "fraction 0-1")]),
    ("float-ladder", "[bank]\ncell_float_voltage = 3.5\n",
     [("bank.cell_float_voltage", "at most cell_charge_voltage")]),
]  # fmt: skip


@cases(RANGE_CASES)
def test_out_of_range(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- ZeroMQ endpoints ----------------------------------------------------------------------------

CURVE = "remote pollers come in over CURVE"
ENDPOINT_CASES: list[Case] = [
    ("wildcard-ip", "[zmq]\nstates = 'tcp://0.0.0.0:5555'\n", [("zmq.states", CURVE)]),
    ("star", "[zmq]\nstates = 'tcp://*:5555'\n", [("zmq.states", CURVE)]),
    ("ipv6-any", "[zmq]\ntap = 'tcp://[::]:5555'\n", [("zmq.tap", CURVE)]),
    ("lan", "[zmq]\ncontrol = 'tcp://192.168.1.10:5555'\n", [("zmq.control", CURVE)]),
    ("hostname", "[zmq]\nstates = 'tcp://pi.local:5555'\n", [("zmq.states", CURVE)]),
    ("ipv6-loopback", "[zmq]\nstates = 'tcp://[::1]:5555'\n", [("zmq.states", "IPv4 only")]),
    ("port-range", "[zmq]\nstates = 'tcp://127.0.0.1:99999'\n", [("zmq.states", "1-65535")]),
    ("port-star", "[zmq]\nstates = 'tcp://127.0.0.1:*'\n", [("zmq.states", "1-65535")]),
    ("port-zero", "[zmq]\nstates = 'tcp://127.0.0.1:0'\n", [("zmq.states", "1-65535")]),
    ("inproc", "[zmq]\nstates = 'inproc://states'\n", [("zmq.states", "inproc cannot")]),
    ("ipc-relative", "[zmq]\ntap = 'ipc://tap.ipc'\n", [("zmq.tap", "an absolute path")]),
    ("ipc-abstract", "[zmq]\ntap = 'ipc://@tap'\n", [("zmq.tap", "no abstract")]),
    ("ipc-too-long", f"[zmq]\ntap = 'ipc://{LONG}/tap.ipc'\n", [("zmq.tap", "107 bytes")]),
    ("scheme", "[zmq]\ncontrol = 'udp://127.0.0.1:5555'\n", [("zmq.control", "ipc:///")]),
    ("no-scheme", "[zmq]\ncontrol = '/run/x.ipc'\n", [("zmq.control", "ipc:///")]),
    ("twice", "[zmq]\nstates = 'tcp://127.0.0.1:5555'\ntap = 'tcp://localhost:5555'\n",
     [("zmq.tap", "zmq.states is 'tcp://localhost:5555' too")]),
    ("default-taken", "runtime_dir = '/run/b'\n[zmq]\nstates = 'ipc:///run/b/tap.ipc'\n",
     [("zmq.tap", "an endpoint of its own; zmq.states")]),
]  # fmt: skip


@cases(ENDPOINT_CASES)
def test_endpoints(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:5999", "tcp://localhost:5999", "tcp://127.0.0.2:1", "ipc:///x"]
)
def test_loopback_and_ipc_endpoints_are_accepted(endpoint):
    assert config.parse({"zmq": {"control": endpoint}}, "t").control_endpoint == endpoint


# ---- D-Bus service name --------------------------------------------------------------------------

SERVICE_CASES: list[Case] = [
    ("prefix", "com.example.bank", "com.victronenergy.battery."),
    ("no-element", "com.victronenergy.battery.", "none empty"),
    ("digit-first", "com.victronenergy.battery.1bank", "starting with a digit"),
    ("space", "com.victronenergy.battery.my bank", "letters, digits"),
    ("empty-element", "com.victronenergy.battery..bank", "none empty"),
    ("non-ascii", "com.victronenergy.battery.bänk", "letters, digits"),
    ("too-long", "com.victronenergy.battery." + "b" * 200, "at most 218 bytes"),
]


@pytest.mark.parametrize("name,words", [c[1:] for c in SERVICE_CASES],
                         ids=[c[0] for c in SERVICE_CASES])  # fmt: skip
def test_dbus_service_names(tmp_path, capsys, name, words):
    body = f'[dbus]\nservice = "{name}"\n'
    assert_refused(*check(tmp_path, capsys, body), [("dbus.service", words)])


@pytest.mark.parametrize("name", ["bmsbank", "ttyUSB0", "a-b.c_2", "_1"])
def test_valid_dbus_service_names(name):
    name = config.DBUS_PREFIX + name
    assert config.parse({"dbus": {"service": name}}, "t").dbus.service == name


# ---- stale_after against the intervals ----------------------------------------------------------

STALE_CASES: list[Case] = [
    ("bank-interval", "[bank]\nstale_after = 1.5\n",
     [("bank.stale_after", "at least 2 s, 2 x bank.interval (1 s): shorter, the bank goes")]),
    ("bank-interval-set", "[bank]\ninterval = 6\n",
     [("bank.stale_after", "at least 12 s, 2 x bank.interval (6 s)")]),
    ("port-default-timeout", "[bank]\nstale_after = 3\n" + PORT,
     [("bank.stale_after", "at least 4 s, 2 x (ports[0].interval + ports[0].timeout)")]),
    ("port-timeout", "[bank]\nstale_after = 5\n" + PORT + "interval = 2\ntimeout = 1\n",
     [("bank.stale_after", "at least 6 s, 2 x (ports[0].interval + ports[0].timeout) = "
                           "2 x (2 + 1) s")]),
    ("slowest-port", JBD + PORT + "interval = 10\n",
     [("bank.stale_after", "ports[1].interval + ports[1].timeout")]),
]  # fmt: skip


@cases(STALE_CASES)
def test_stale_after_outlasts_two_updates(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


def test_stale_after_of_twice_the_updates_is_accepted():
    port = {"name": "p", "device": "/dev/x", "bms": "jbd", "interval": 2.0, "timeout": 0.5}
    c = config.parse({"bank": {"stale_after": 5.0, "interval": 2.5}, "ports": [port]}, "t")
    assert c.bank.stale_after == 5.0


# ---- lower bounds on intervals -------------------------------------------------------------------

INTERVAL_CASES: list[Case] = [
    ("bank-micro", "[bank]\ninterval = 1e-6\n", [("bank.interval", "seconds >= 0.1")]),
    ("bank-zero", "[bank]\ninterval = 0\n", [("bank.interval", "got 0.0")]),
    ("port", PORT + "interval = 0.01\n", [("ports[0].interval", "seconds >= 0.1")]),
    ("timeout", PORT + "timeout = 0.001\n", [("ports[0].timeout", ">= 0.05")]),
    ("stale-after", "[bank]\nstale_after = 0.1\n", [("bank.stale_after", "seconds >= 0.5")]),
]


@cases(INTERVAL_CASES)
def test_intervals_have_lower_bounds(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- control characters and strings that go into generated files ------------------------------

INJECTION = 'runtime_dir = "/run/x\\n[program:evil]\\ncommand=/bin/sh -c id"\n'
TEXT_CASES: list[Case] = [
    ("runtime-dir-newline", INJECTION, [("runtime_dir", "control characters, got '\\n'")]),
    ("runtime-dir-relative", "runtime_dir = 'run/bmsbank'\n", [("runtime_dir", "an absolute")]),
    ("runtime-dir-long", f"runtime_dir = '{LONG}'\n", [("runtime_dir", "at most 91 bytes")]),
    ("runtime-dir-comment", "runtime_dir = '/run/a ;b'\n", [("runtime_dir", "before ';'")]),
    ("device-nul", PORT.replace("/dev/ttyUSB0", "/dev/tty\\u0000"),
     [("ports[0].device", "got '\\x00'")]),
    ("port-name-newline", PORT.replace('"p"', '"p\\nq"'), [("ports[0].name", "control")]),
    ("product-name-cr", "[dbus]\nproduct_name = 'a\\rb'\n".replace("'", '"'),
     [("dbus.product_name", "got '\\r'")]),
    ("channel-tab", '[can]\nchannel = "can\\t0"\n', [("can.channel", "control characters")]),
    ("bidi-override", '[can]\ninterface = "slcan\\u202e"\n', [("can.interface", "\\u202e")]),
    ("state-file-relative", "[bank]\nstate_file = 'state.json'\n",
     [("bank.state_file", "absolute path")]),
]  # fmt: skip


@cases(TEXT_CASES)
def test_control_characters_and_paths(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


def test_a_runtime_dir_with_a_newline_cannot_inject_a_program(tmp_path):
    """Refused at load by every command; and the renderer alone refuses it too."""
    path = tmp_path / "bmsbank.toml"
    path.write_text(INJECTION + PORT, encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "supervisor-config", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert_refused(str(path), out.returncode, out.stdout, out.stderr, [("runtime_dir", "control")])
    assert "[program:" not in out.stdout
    cfg = config.parse({"ports": [{"name": "p", "device": "/dev/x", "bms": "jbd"}]}, "t")
    programs = supervisor.service_programs(cfg, sys.executable, "/etc/b.toml")
    with pytest.raises(supervisor.UnsafeValue, match="control character"):
        supervisor.render(programs, "/run/x\n[program:evil]\ncommand=/bin/sh", "/var/log/b")
    with pytest.raises(supervisor.UnsafeValue, match="control character"):
        supervisor.service_programs(cfg, "/usr/bin/python\n[program:evil]", "/c")[0].render("/l")
    with pytest.raises(supervisor.UnsafeValue, match="cannot hold"):
        supervisor.Program("x", ["a"], environment={"A": 'b"\n'}).render("/l")


@pytest.mark.parametrize("flag", ["--python", "--config-path"])
def test_supervisor_config_refuses_a_path_it_cannot_write(tmp_path, capsys, flag):
    path = tmp_path / "bmsbank.toml"
    path.write_text(PORT, encoding="utf-8")
    code = cli.main(["supervisor-config", str(path), flag, "/opt/x\n[program:evil]"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "cannot go into supervisord.conf" in err


def test_supervisord_reads_odd_but_valid_paths_back_as_written(tmp_path):
    """'%' is doubled and spaces are quoted: supervisord gets the very paths and commands."""
    run = tmp_path / "run 100%"
    log = tmp_path / "log 5%"
    run.mkdir()
    log.mkdir()
    port = {"name": "p", "device": "/dev/x", "bms": "jbd", "process": "p.1"}
    cfg = config.parse({"runtime_dir": str(run), "ports": [port]}, "t")
    programs = supervisor.service_programs(cfg, sys.executable, f"{run}/my config.toml")
    conf = tmp_path / "supervisord.conf"
    conf.write_text(supervisor.render(programs, cfg.runtime_dir, str(log)))
    options = ServerOptions()
    options.realize(["-c", str(conf)])
    assert options.serverurl == f"unix://{run}/supervisor.sock"
    assert options.server_configs[0]["file"] == f"{run}/supervisor.sock"
    assert (options.logfile, options.childlogdir) == (f"{log}/supervisord.log", str(log))
    assert options.pidfile == f"{run}/supervisord.pid"
    names = sorted(g.name for g in options.process_group_configs)
    assert names == ["arbiter", "poller-p.1", "publisher", "watchdog"]
    watchdog = next(g for g in options.process_group_configs if g.name == "watchdog")
    assert watchdog.process_configs[0].stderr_logfile == f"{log}/watchdog.log"
    poller = next(g for g in options.process_group_configs if g.name == "poller-p.1")
    proc = poller.process_configs[0]
    assert proc.stdout_logfile == f"{log}/poller-p.1.log"
    assert shlex.split(proc.command)[-4:] == [
        "--config", f"{run}/my config.toml", "--process", "p.1"]  # fmt: skip


# ---- addresses -----------------------------------------------------------------------------------

ADDRESS_CASES: list[Case] = [
    ("bus-master", PORT.replace("[1, 2]", "[0]"), [("ports[0].addresses", "1-15 for jkpb")]),
    ("single-address-family", JBD + "addresses = [1, 2]\n",
     [("ports[0].addresses", "a single address: jbd cannot share a bus")]),
    ("repeated", PORT.replace("[1, 2]", "[1, 1]"), [("ports[0].addresses", "distinct")]),
    ("not-a-list", PORT.replace("[1, 2]", "3"), [("ports[0].addresses", "a list")]),
    ("too-large", PORT.replace("[1, 2]", "[300]"), [("ports[0].addresses", "got [300]")]),
    ("string", PORT.replace("[1, 2]", '["1"]'), [("ports[0].addresses", "integer")]),
]  # fmt: skip


@cases(ADDRESS_CASES)
def test_addresses(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- ports that repeat or lack a key -----------------------------------------------------------

PORTS_CASES: list[Case] = [
    ("same-name", PORT + PORT.replace("ttyUSB0", "ttyUSB9"),
     [("ports[1].name", "ports[0] has 'p' too")]),
    ("same-device", PORT + PORT.replace('"p"', '"q"'),
     [("ports[1].device", "ports[0] has '/dev/ttyUSB0' too")]),
    ("no-device", '[[ports]]\nname = "p"\nbms = "jbd"\n', [("ports[0].device", "(required)")]),
    ("no-bms", '[[ports]]\nname = "p"\ndevice = "/dev/x"\n', [("ports[0].bms", "(required)")]),
    ("bms-not-a-string", PORT.replace('"jkpb"', "5"), [("ports[0].bms", "got 5")]),
    ("bad-name", PORT.replace('"p"', '"a b"'), [("ports[0].name", "letters")]),
]  # fmt: skip


@cases(PORTS_CASES)
def test_ports(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- bank strings and packs tables --------------------------------------------------------------

TOPOLOGY_CASES: list[Case] = [
    ("unknown-pack", PORT.replace("[[ports]]", '[bank]\nstrings = [["p:1"], ["p:9"]]\n[[ports]]'),
     [("bank.strings", "a pack on a configured port")]),
    ("pack-twice", '[bank]\nstrings = [["a:1"], ["a:1"]]\n',
     [("bank.strings", "each pack in one string only")]),
    ("empty-string", "[bank]\nstrings = [[]]\n", [("bank.strings", "non-empty lists")]),
    ("pack-key", '[bank.packs."a:1"]\ncolour = "red"\n',
     [('bank.packs."a:1".colour', "unknown key")]),
    ("pack-cells-float", '[bank.packs."a:1"]\ncells = 1.5\n', [('bank.packs."a:1".cells', "1-64")]),
    ("pack-newline", '[bank.packs."a:1"]\nchemistry = "LiFePO4\\n"\n',
     [("bank.packs", "control characters")]),
]  # fmt: skip


@cases(TOPOLOGY_CASES)
def test_strings_and_packs(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


# ---- every problem of a file at once -----------------------------------------------------------

MANY = (
    "colour = 'red'\n"
    "[bank]\nstale_aftr = 3\ninterval = 1e-6\n"
    "[dbus]\nservice = 'com.example.x'\n"
    "[zmq]\nstates = 'tcp://0.0.0.0:5555'\n"
    '[[ports]]\nname = "p"\ndevice = "/dev/x"\nbms = "jkpb"\naddresses = [true]\n'
    '[[ports]]\nname = "q"\ndevice = "/dev/y"\nbms = "jbd"\ntimeout = 0.001\nretries = 9\n'
)
MANY_CASES: list[Case] = [
    ("across-sections", MANY, [
        ("colour", "unknown key"),
        ("bank.stale_aftr", "did you mean stale_after?"),
        ("bank.interval", ">= 0.1"),
        ("dbus.service", "com.victronenergy.battery."),
        ("ports[0].addresses", "got [True]"),
        ("ports[1].timeout", ">= 0.05"),
        ("ports[1].retries", "0-5"),
        ("zmq.states", CURVE),
    ]),
    ("two-ports", PORT.replace("[1, 2]", "[0]") + JBD.replace('"jbd"', '"jdb"'), [
        ("ports[0].addresses", "1-15"), ("ports[1].bms", "did you mean jbd?"),
    ]),
]  # fmt: skip


@cases(MANY_CASES)
def test_every_problem_at_once(tmp_path, capsys, body, lines):
    assert_refused(*check(tmp_path, capsys, body), lines)


def test_the_error_keeps_the_first_problem_and_carries_all():
    with pytest.raises(config.ConfigError) as err:
        config.parse({"bank": {"interval": 0, "stale_after": 0}}, "f.toml")
    assert err.value.key == "bank.interval" and err.value.source == "f.toml"
    assert [p.key for p in err.value.problems] == ["bank.interval", "bank.stale_after"]
    assert str(err.value).splitlines() == err.value.lines()


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a parsed TOML document (table keys and list indexes)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    return [p for k, v in items for p in [(*prefix, k), *_paths(v, (*prefix, k))]]


EXAMPLE = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
ANY_SCALAR = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
)
ANY_VALUE = st.recursive(
    ANY_SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(_paths(EXAMPLE)), ANY_VALUE), min_size=1, max_size=3))
def test_any_value_anywhere_is_a_config_or_one_line_problems(changes):
    """The example with any key set to anything (JSON null too: the limits stream's config)."""
    doc = copy.deepcopy(EXAMPLE)
    for path, value in changes:
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier change moved it
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
    try:
        config.parse(doc, "f.toml")
    except config.ConfigError as exc:
        assert all(line.startswith("f.toml: ") and line.isprintable() for line in exc.lines())


def test_at_least_53_cases_in_all():
    tables = [FILE_CASES, SYNTAX_CASES, UNKNOWN_CASES, TYPE_CASES, BOOL_CASES, RANGE_CASES,
              ENDPOINT_CASES, SERVICE_CASES, STALE_CASES, INTERVAL_CASES, TEXT_CASES,
              ADDRESS_CASES, PORTS_CASES, TOPOLOGY_CASES, MANY_CASES]  # fmt: skip
    paths = 4 + 1  # missing, directory, FIFO, device; unreadable
    assert sum(len(t) for t in tables) + paths >= 53


# ---- the good config, the services and the runtime directory given outside the file -----------


def test_the_example_config_is_valid(capsys):
    code, out, err = run_check(str(ROOT / "config.example.toml"), capsys)
    assert code == 0 and err == ""
    assert out.endswith(": ok: 3 port(s), 1 BLE device(s), 7 pack(s), 2 poller process(es)\n")


@pytest.mark.parametrize(
    "service,args",
    [("arbiter", []), ("publisher", []), ("poller", ["--process", "shared"])],
)
def test_services_exit_2_with_one_line_per_problem(tmp_path, service, args):
    path = tmp_path / "bmsbank.toml"
    path.write_text("[bank]\ninterval = 1e-6\nstale_aftr = 3\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", f"bmsbank.services.{service}", "--config", str(path), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [("bank.interval", ">= 0.1"), ("bank.stale_aftr", "did you mean stale_after?")]
    assert_refused(str(path), out.returncode, out.stdout, out.stderr, lines, f"bmsbank-{service}")


def test_a_runtime_dir_given_outside_the_file_is_checked_too(tmp_path, monkeypatch):
    path = tmp_path / "bmsbank.toml"
    path.write_text(PORT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert config.load(str(path), "rel").runtime_dir == str(tmp_path / "rel")  # made absolute
    with pytest.raises(config.ConfigError) as err:
        config.load(str(path), "/run/x\n[program:evil]")
    assert err.value.source == "--runtime-dir" and "\n" not in str(err.value)
    monkeypatch.setenv(config.ENV_RUNTIME_DIR, LONG)
    with pytest.raises(config.ConfigError, match="at most 91 bytes") as err:
        config.load(str(path))
    assert err.value.source == "$BMSBANK_RUNTIME_DIR"
