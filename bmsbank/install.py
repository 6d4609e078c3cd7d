"""``bmsbank install`` / ``uninstall``: bmsbank as a systemd service on Debian and Raspberry Pi OS.

What is written (under ``--prefix`` when given, else under /):

- ``/etc/systemd/system/bmsbank.service``: ONE unit that runs supervisord, not one unit per
  service. The process set depends on the config (one poller program per ``[[ports]] process``,
  per Bluetooth adapter, per CAN input) and the watchdog that restarts a hung service talks to
  supervisord (:mod:`bmsbank.watchdog`): with one unit, the set is rendered from the config at
  every start (``ExecStartPre``, so ``systemctl restart bmsbank`` applies a changed config and a
  config with errors stops the start with one line per problem in the journal), and it is the
  same set, watchdog included, as the demo and a Venus OS installation run. Units per service
  would have to be regenerated whenever ports change and would need a second watchdog scheme.
- ``/etc/sysusers.d/bmsbank.conf``: the system user the services run as, in group ``dialout``
  (serial adapters are root:dialout 0660 on Debian). systemd sets the user's supplementary
  groups from the group database (systemd.exec(5), ``User=``), so the unit names no group that
  might be missing.
- ``/etc/dbus-1/system.d/bmsbank.conf``: the system bus policy. The user may own
  ``com.victronenergy.battery`` and every name under it: the publisher's bank service
  (``[dbus] service``) and its per-pack services ``<service>_<pack>``, which an
  ``own_prefix`` of the bank's own name would not match (``own_prefix="a.b"`` allows ``a.b``
  and ``a.b.*`` only: dbus-daemon(1), "own_prefix"). It may call BlueZ (``org.bluez``, the BLE
  poller through bleak) whatever BlueZ's own policy grants. Only root, the user and members of
  its group may call the bank's services: a ``SetValue`` on a pack path switches a FET.
- ``/etc/logrotate.d/bmsbank``: rotation of ``log_dir``. supervisord's own size rotation is off
  in the rendered supervisord.conf (two rotators on one file lose lines); after rotating,
  logrotate sends supervisord SIGUSR2, on which it reopens every log file (supervisord
  documentation, "Signals"; supervisor/supervisord.py).

Hardening in the unit keeps what the services need: /dev stays visible (no ``PrivateDevices``:
serial adapters, spidev; nor ``ProtectClock``, which on systemd 252, Debian 12's, implies
``DeviceAllow=char-rtc r`` and so closes every other device: systemd/systemd#18142, fixed by
systemd/systemd#25075), the network namespace is the host's (no ``PrivateNetwork``: socketcan
interfaces, remote pollers), address families AF_UNIX (ZeroMQ ipc, D-Bus), AF_INET/6 (tcp
endpoints), AF_NETLINK (interface lookups), AF_CAN (socketcan) and AF_BLUETOOTH stay allowed.
Directive meanings: systemd.exec(5) and systemd.service(5),
https://www.freedesktop.org/software/systemd/man/systemd.exec.html.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from bmsbank import config as configuration
from bmsbank import runtime

PROG = "bmsbank"
UNIT = "bmsbank.service"
#: first line (after an XML prologue) of every file install writes: uninstall removes only those
MARKER = "Written by `bmsbank install`; `bmsbank uninstall` removes it."
UNIT_PATH = "/etc/systemd/system/" + UNIT
SYSUSERS_PATH = "/etc/sysusers.d/bmsbank.conf"
DBUS_PATH = "/etc/dbus-1/system.d/bmsbank.conf"
LOGROTATE_PATH = "/etc/logrotate.d/bmsbank"
#: the link ``systemctl enable`` makes (WantedBy=multi-user.target); uninstall removes it too
WANTS_PATH = "/etc/systemd/system/multi-user.target.wants/" + UNIT
#: a system user name as Debian's adduser accepts it (NAME_REGEX_SYSTEM, adduser.conf(5))
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
#: the D-Bus name prefix the user may own (see the module docstring)
DBUS_OWN_PREFIX = "com.victronenergy.battery"


class InstallError(Exception):
    """Something install or uninstall cannot do; the message says what and why."""


@dataclass(frozen=True)
class Plan:
    """What ``bmsbank install`` writes: target path -> content, and the facts it used."""

    files: dict[str, str]
    notes: list[str]


def _word(text: str, what: str) -> str:
    """``text`` as one word of a unit file line, '%' escaped (systemd specifiers).

    Raises:
        InstallError: a character that would split or end the word (space, quote, backslash,
            control character).

    """
    if not text or re.search(r"[\s\"'\\]", text) or configuration.control_char(text):
        raise InstallError(f"{what} {text!r}: no spaces, quotes, backslashes or control characters")
    return text.replace("%", "%%")


def _directories(config: configuration.Config) -> tuple[list[str], list[str]]:
    """The unit's managed-directory lines for runtime, log and state dirs, and other paths.

    A directory under /run, /var/log or /var/lib becomes RuntimeDirectory=, LogsDirectory=,
    StateDirectory= (created and given to the user at each start); any other one must exist and
    is made writable with ReadWritePaths= (ProtectSystem=strict makes the rest read-only).
    """
    state_files = (config.bank.state_file, config.dbus.names_file, config.can.energy_file)
    wanted = [
        ("RuntimeDirectory", "/run/", config.runtime_dir),
        ("LogsDirectory", "/var/log/", config.log_dir),
        *(("StateDirectory", "/var/lib/", os.path.dirname(f)) for f in state_files if f),
    ]
    managed: dict[str, list[str]] = {}
    other: list[str] = []
    for key, base, path in wanted:
        path = os.path.normpath(path)
        if path.startswith(base) and path != base.rstrip("/"):
            rel = _word(path[len(base) :], key)
            if rel not in managed.setdefault(key, []):
                managed[key].append(rel)
        elif path not in other:
            other.append(_word(path, "directory"))
    lines = [f"{key}={' '.join(rels)}" for key, rels in managed.items()]
    return lines, other


def unit_text(config: configuration.Config, config_path: str, python: str, user: str) -> str:
    """The systemd unit running supervisord for ``config``."""
    venv_bin = os.path.dirname(python)
    conf = f"{config.runtime_dir}/supervisord.conf"
    dirs, other = _directories(config)
    py, cfg = _word(python, "python"), _word(config_path, "config path")
    lines = [
        f"# {MARKER}",
        "# One unit runs supervisord, which runs every bmsbank service (see bmsbank/install.py).",
        "[Unit]",
        "Description=bmsbank battery bank (pollers, arbiter, publisher under supervisord)",
        "Documentation=man:systemd.exec(5)",
        "After=network.target dbus.service bluetooth.service",
        "Wants=dbus.service",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"Group={user}",
        # the process set comes from the config at every start; a config error stops it here
        f"ExecStartPre={py} -m bmsbank.install supervisord-conf {cfg} {_word(conf, 'path')}",
        f"ExecStart={_word(os.path.join(venv_bin, 'supervisord'), 'supervisord')} --nodaemon "
        f"--configuration {_word(conf, 'path')}",
        # supervisord stops its programs on SIGTERM (stopwaitsecs 5 each, by priority group);
        # the rest of the cgroup is killed only if that overruns
        "KillMode=mixed",
        "TimeoutStopSec=45",
        "Restart=always",
        "RestartSec=5",
        *dirs,
        "RuntimeDirectoryMode=0700",
        "LogsDirectoryMode=0750",
        "StateDirectoryMode=0750",
        "UMask=0027",
        *(f"ReadWritePaths=-{p}" for p in other),
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_CAN AF_BLUETOOTH",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def sysusers_text(user: str, state_dir: str = "/var/lib/bmsbank") -> str:
    """sysusers.d(5) lines: the system user, its own group, membership of dialout."""
    return (
        f"# {MARKER}\n"
        "# The user the bmsbank services run as; dialout: serial adapters (root:dialout 0660).\n"
        f'u {user} - "bmsbank battery bank" {state_dir} /usr/sbin/nologin\n'
        f"m {user} dialout\n"
    )


def dbus_policy_text(user: str) -> str:
    """The system bus policy (see the module docstring)."""
    who, prefix = quoteattr(user), quoteattr(DBUS_OWN_PREFIX)
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- {MARKER} -->
<busconfig>
  <!-- the publisher's bank and per-pack services; the BLE poller's calls to BlueZ -->
  <policy user={who}>
    <allow own_prefix={prefix}/>
    <allow send_destination_prefix={prefix}/>
    <allow send_destination="org.bluez"/>
    <allow send_destination="com.victronenergy.settings"/>
  </policy>
  <!-- SetValue on a pack path switches a FET: root and the group only -->
  <policy user="root">
    <allow send_destination_prefix={prefix}/>
  </policy>
  <policy group={who}>
    <allow send_destination_prefix={prefix}/>
  </policy>
</busconfig>
"""


def logrotate_text(log_dir: str, runtime_dir: str, user: str) -> str:
    """logrotate(8) configuration for ``log_dir``; supervisord reopens its logs on SIGUSR2."""
    pidfile = f"{runtime_dir}/supervisord.pid"
    return f"""# {MARKER}
{_word(log_dir, "log_dir")}/*.log {{
    weekly
    maxsize 1M
    rotate 4
    missingok
    notifempty
    compress
    delaycompress
    su {user} {user}
    sharedscripts
    postrotate
        pid=$(cat {_word(pidfile, "pid file")} 2>/dev/null) && kill -USR2 "$pid" 2>/dev/null || true
    endscript
}}
"""


def plan(
    prefix: str, config_path: str, user: str, python: str
) -> Plan:  # fmt: skip
    """Every file ``bmsbank install`` writes, from the config at ``prefix + config_path``.

    A config that is not there yet is taken as all defaults (packaging: the user writes it
    later); one that is there must be valid.

    Raises:
        InstallError: a bad user name or path.
        ConfigError: the config file is there and has problems (every one of them).

    """
    if not USER_RE.fullmatch(user):
        raise InstallError(f"--user {user!r}: a system user name, [a-z_][a-z0-9_-]{{0,31}}")
    if not config_path.startswith("/"):
        raise InstallError(f"--config {config_path!r}: an absolute path on the target system")
    notes = []
    local = _under(prefix, config_path)
    if os.path.exists(local):
        config = configuration.load(local)
    else:
        config = configuration.Config(source=config_path)
        notes.append(
            f"no config at {local} yet: write one (see config.example.toml), check it with "
            f"`bmsbank check {config_path}`, then start the service"
        )
    for path in (python, os.path.dirname(configuration.__file__)):
        closed = _closed_parent(path)
        if closed:
            notes.append(
                f"warning: {closed} is not open to other users: the user {user} cannot reach "
                f"{path}; install bmsbank into a venv it can reach, e.g. /opt/bmsbank/.venv"
            )
    files = {
        UNIT_PATH: unit_text(config, config_path, python, user),
        SYSUSERS_PATH: sysusers_text(user),
        DBUS_PATH: dbus_policy_text(user),
        LOGROTATE_PATH: logrotate_text(config.log_dir, config.runtime_dir, user),
    }
    return Plan(files, notes)


def _under(prefix: str, path: str) -> str:
    return os.path.join(prefix, path.lstrip("/")) if prefix else path


def _closed_parent(path: str) -> str | None:
    """The first directory above ``path`` that others may not enter (mode without o+x)."""
    parts = os.path.abspath(path).split("/")[1:-1]
    for i in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:i])
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return MARKER in fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def write(files: dict[str, str], prefix: str) -> list[str]:
    """Write ``files`` (mode 0644) under ``prefix``; refuse to overwrite a file not ours.

    Raises:
        InstallError: a target exists and was not written by install.

    """
    targets = {p: _under(prefix, p) for p in files}
    foreign = [p for p, t in targets.items() if os.path.exists(t) and not _ours(t)]
    if foreign:
        raise InstallError(
            f"{', '.join(_under(prefix, p) for p in foreign)}: exists and was not written by "
            "bmsbank install; move it away first"
        )
    written = []
    for path, text in files.items():
        target = _under(prefix, path)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        tmp = f"{target}.bmsbank-tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        written.append(target)
    return written


def remove(prefix: str) -> list[str]:
    """Remove what install wrote (and ``systemctl enable``'s link to the unit).

    Under a prefix, directories left empty are removed up to the prefix.

    Raises:
        InstallError: a file at one of install's paths was not written by it (nothing removed).

    """
    paths = [_under(prefix, p) for p in (UNIT_PATH, SYSUSERS_PATH, DBUS_PATH, LOGROTATE_PATH)]
    foreign = [p for p in paths if os.path.exists(p) and not _ours(p)]
    if foreign:
        raise InstallError(f"{', '.join(foreign)}: not written by bmsbank install; left alone")
    link = _under(prefix, WANTS_PATH)
    if os.path.islink(link) and os.readlink(link) in (UNIT_PATH, _under(prefix, UNIT_PATH)):
        paths.append(link)
    removed = []
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)
            removed.append(path)
            if prefix:
                _prune(os.path.dirname(path), prefix)
    return removed


def _prune(folder: str, prefix: str) -> None:
    """Remove ``folder`` and its parents while empty, never ``prefix`` itself or above."""
    stop = os.path.abspath(prefix)
    folder = os.path.abspath(folder)
    while folder.startswith(stop + "/") and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def _make_user(sysusers: str) -> str:
    """Create the user from the sysusers.d file (systemd-sysusers); what was run."""
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        raise InstallError("systemd-sysusers not found: is this a systemd system (Debian 12)?")
    subprocess.run([tool, sysusers], check=True)
    return f"{tool} {sysusers}"


def cmd_install(args: argparse.Namespace) -> int:
    """``bmsbank install``: write the unit, user, D-Bus policy and logrotate files."""
    prefix = os.path.abspath(args.prefix) if args.prefix else ""
    if not prefix and not args.dry_run and os.geteuid() != 0:
        return runtime.fail(PROG, "install: run as root (or give --prefix DIR or --dry-run)", 1)
    if args.remove:
        return _uninstall(prefix, args.dry_run)
    try:
        p = plan(prefix, args.config, args.user, args.python)
    except InstallError as exc:
        return runtime.fail(PROG, f"install: {exc}", 2)
    for note in p.notes:
        print(f"{PROG}: install: {note}", file=sys.stderr)
    if not prefix and not args.dry_run and any(n.startswith("warning:") for n in p.notes):
        return runtime.fail(PROG, "install: the service user could not start bmsbank", 1)
    if args.dry_run:
        for path, text in p.files.items():
            print(f"==> {_under(prefix, path)} (0644)\n{text}")
        return 0
    try:
        if not prefix:  # the user first: dbus-daemon resolves the policy's user when it reloads
            write({SYSUSERS_PATH: p.files[SYSUSERS_PATH]}, prefix)
            print(f"ran: {_make_user(SYSUSERS_PATH)}")
        written = write(p.files, prefix)
    except (InstallError, OSError, subprocess.CalledProcessError) as exc:
        return runtime.fail(PROG, f"install: {exc}", 1)
    for path in written:
        print(f"wrote {path}")
    if prefix:
        print(f"(under {prefix}: no user created; systemd-sysusers creates it from "
              f"{SYSUSERS_PATH} when the tree is installed)")  # fmt: skip
    else:
        print("now run:\n  systemctl daemon-reload && systemctl reload dbus && "
              f"systemctl enable --now {UNIT}\n"
              f"logs: journalctl -u {UNIT} and the log_dir")  # fmt: skip
    return 0


def _uninstall(prefix: str, dry_run: bool) -> int:
    if dry_run:
        for p in (UNIT_PATH, SYSUSERS_PATH, DBUS_PATH, LOGROTATE_PATH, WANTS_PATH):
            if os.path.lexists(_under(prefix, p)):
                print(f"would remove {_under(prefix, p)}")
        return 0
    try:
        removed = remove(prefix)
    except (InstallError, OSError) as exc:
        return runtime.fail(PROG, f"uninstall: {exc}", 1)
    for path in removed:
        print(f"removed {path}")
    if not prefix:
        print(f"now run: systemctl stop {UNIT}; systemctl daemon-reload\n"
              "kept: the user, the config, the state and log directories (see "
              "docs/INSTALL-DEBIAN.md, Removing)")  # fmt: skip
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    """``bmsbank uninstall``: the same as ``bmsbank install --remove``."""
    args.remove = True
    return cmd_install(args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``install`` and ``uninstall`` subcommands."""
    for name, text in (
        ("install", "install bmsbank as a systemd service (Debian, Raspberry Pi OS)"),
        ("uninstall", "remove what `bmsbank install` wrote"),
    ):
        i = sub.add_parser(name, help=text, description=text + ". See docs/INSTALL-DEBIAN.md.")
        i.add_argument("--prefix", metavar="DIR",
                       help="write the tree under DIR instead of / (packaging, tests)")  # fmt: skip
        i.add_argument("--dry-run", action="store_true", help="print, write nothing")
        if name == "install":
            i.add_argument("--config", default=configuration.DEFAULT_CONFIG,
                           help="the config path on the target (default %(default)s)")  # fmt: skip
            i.add_argument("--user", default="bmsbank", help="service user (default bmsbank)")
            i.add_argument("--python", default=sys.executable,
                           help="python of the venv bmsbank is installed in (default: this "
                                "one)")  # fmt: skip
            i.add_argument("--remove", action="store_true", help="same as `bmsbank uninstall`")
            i.set_defaults(func=cmd_install)
        else:
            i.set_defaults(func=cmd_uninstall)


def _render_main(argv: Sequence[str]) -> int:
    """``python -m bmsbank.install supervisord-conf CONFIG OUT`` (the unit's ExecStartPre).

    Loads and checks CONFIG (every problem on stderr, exit 2) and writes the supervisord.conf
    of its process set to OUT, logs unrotated by supervisord (logrotate rotates them).
    """
    from bmsbank import supervisor

    if len(argv) != 3 or argv[0] != "supervisord-conf":
        return runtime.fail("bmsbank-install", "usage: supervisord-conf CONFIG OUT", 2)
    config_path, out = argv[1], argv[2]
    try:
        config = configuration.load(config_path)
        text = supervisor.render_installation(config, sys.executable, config_path, rotate=False)
    except configuration.ConfigError as exc:
        return configuration.fail("bmsbank-install", exc)
    except supervisor.UnsafeValue as exc:
        return runtime.fail("bmsbank-install", exc, 2)
    tmp = f"{out}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(_render_main(sys.argv[1:]))
