"""Render supervisord configuration: one program per poller process, the arbiter, the publisher.

Beside them, the watchdog (:mod:`bmsbank.watchdog`) as an ``[eventlistener:watchdog]`` section:
it kills a service whose heartbeat stopped, for supervisord to restart it.

The repository's ``supervisord.conf`` is this renderer's output for ``config.example.toml``
(``bmsbank supervisor-config``); the demo renders its own with simulators and a private bus added.

supervisord runs every command as root: each value written here is either read back by supervisord
exactly as given ('%' doubled, commands quoted) or refused with :class:`UnsafeValue` (a newline
would end the line and start a section of someone else's choosing).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bmsbank.config import Config, control_char
from bmsbank.errors import one_line

#: section (program) names supervisord reads back as written
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: environment variable names
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnsafeValue(ValueError):
    """A value cannot be written into supervisord.conf so that supervisord reads it back as is."""


def conf_value(text: str, what: str, expansions: int = 1) -> str:
    """``text`` as the value of a supervisord.conf line, each '%' escaped.

    supervisord expands '%(name)s' in most values once, and in a program's log file names twice
    (``expansions=2``): a '%' is written as '%%' or '%%%%' to come back as one '%'.

    Raises:
        UnsafeValue: ``text`` holds a control character (a newline would start a line of its
            own), spaces at one end (stripped on reading) or a space before ';' or '#' (the
            rest would be read as a comment).

    """
    bad = control_char(text)
    if bad is not None:
        problem = f"it holds the control character {bad!r}"
    elif text != text.strip():
        problem = "it has spaces at one end (supervisord strips them)"
    elif re.search(r"\s[;#]", text):
        problem = "it has a space before ';' or '#' (supervisord reads the rest as a comment)"
    else:
        return text.replace("%", "%" * 2**expansions)
    raise UnsafeValue(one_line(f"{what} {text!r} cannot go into supervisord.conf: {problem}"))


def _name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UnsafeValue(one_line(f"program name {name!r}: letters, digits, '_', '.', '-' only"))
    return name


def _env(key: str, value: str) -> str:
    """``KEY="value"`` for an environment= line (supervisord has no escape for '"')."""
    if not _ENV_NAME.fullmatch(key):
        raise UnsafeValue(one_line(f"environment variable {key!r}: letters, digits, '_' only"))
    if '"' in value:
        raise UnsafeValue(one_line(f"environment value {value!r} of {key} cannot hold '\"'"))
    return f'{key}="{conf_value(value, f"environment value of {key}")}"'


INSTALL_PYTHON = "/opt/bmsbank/.venv/bin/python"
INSTALL_CONFIG = "/etc/bmsbank/bmsbank.toml"


@dataclass(frozen=True)
class Program:
    """One [program:x] section."""

    name: str
    command: Sequence[str]
    priority: int = 50
    environment: Mapping[str, str] = field(default_factory=dict)
    stopsignal: str = "TERM"

    def render(self, logdir: str, rotate: bool = True) -> str:
        """The section text; ``rotate=False`` leaves log rotation to logrotate (no size limit)."""
        name = _name(self.name)
        command = " ".join(shlex.quote(c) for c in self.command)
        lines = [
            f"[program:{name}]",
            "command=" + conf_value(command, f"command of program {name}"),
            f"priority={self.priority}",
            "autostart=true",
            # Restart after any exit, including kill -9; a service never needs a start order.
            "autorestart=true",
            "startsecs=1",
            "startretries=1000",
            f"stopsignal={self.stopsignal}",
            "stopwaitsecs=5",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            "stdout_logfile=" + conf_value(f"{logdir}/{name}.log", "log file", expansions=2),
            f"stdout_logfile_maxbytes={'1MB' if rotate else 0}",
            f"stdout_logfile_backups={2 if rotate else 0}",
        ]
        if self.environment:
            env = ",".join(_env(k, v) for k, v in sorted(self.environment.items()))
            lines.append(f"environment={env}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EventListener(Program):
    """One [eventlistener:x] section: a program that supervisord also sends ``events``.

    Its stdout is the event protocol's channel, so it logs to stderr alone (supervisord refuses
    ``redirect_stderr`` for a listener).
    """

    events: str = "TICK_5"

    def render(self, logdir: str, rotate: bool = True) -> str:
        """The section text: the program's, less its stdout log, plus the events."""
        lines = super().render(logdir, rotate).splitlines()
        lines[0] = f"[eventlistener:{self.name}]"
        lines = [line for line in lines if not line.startswith(("redirect_stderr=", "stdout_"))]
        lines += [
            f"events={self.events}",
            "stdout_logfile=NONE",
            "stderr_logfile=" + conf_value(f"{logdir}/{self.name}.log", "log file", expansions=2),
            f"stderr_logfile_maxbytes={'1MB' if rotate else 0}",
            f"stderr_logfile_backups={2 if rotate else 0}",
        ]
        return "\n".join(lines) + "\n"


def service_programs(
    config: Config, python: str, config_path: str, environment: Mapping[str, str] | None = None
) -> list[Program]:
    """The bmsbank services for ``config``: arbiter, publisher, one poller per poller process.

    A poller process (``[[ports]] process``; by default every port shares one) is the program
    ``poller-<process>``, a CAN input ``can-<name>``. Then the watchdog listener that watches
    all of them, and last the bank view ``web`` when ``[web] enabled`` (not watched: a viewer).
    """
    env = dict(environment or {})
    base = ["--config", config_path]
    programs = [
        Program("arbiter", [python, "-m", "bmsbank.services.arbiter", *base], 20, env),
        Program("publisher", [python, "-m", "bmsbank.services.publisher", *base], 30, env),
    ]
    for process in config.processes():
        programs.append(
            Program(
                f"poller-{process}",
                [python, "-m", "bmsbank.services.poller", *base, "--process", process],
                40,
                env,
            )
        )
    programs += can_input_programs(config, python, base, env)
    if config.mqtt.enabled:  # optional bridge (docs/MQTT.md), read-only on the tap
        programs.append(Program("mqtt", [python, "-m", "bmsbank.mqtt", *base], 50, env))
    watched = [arg for p in programs for arg in ("--program", p.name)]
    programs.append(
        EventListener("watchdog", [python, "-m", "bmsbank.watchdog", *base, *watched], 10, env)
    )
    if config.web.enabled:  # a viewer: supervisord restarts it, the watchdog need not watch it
        programs.append(Program("web", [python, "-m", "bmsbank.web", *base], 60, env))
    return programs


def can_input_programs(
    config: Config, python: str, base: Sequence[str], env: Mapping[str, str]
) -> list[Program]:
    """One program per ``[[can_inputs]]`` entry, ``can-<name>`` (one process per CAN bus)."""
    module = "bmsbank.services.poller.can_input"
    return [
        Program(f"can-{c.name}", [python, "-m", module, *base, "--input", c.name], 40, dict(env))
        for c in config.can_inputs
    ]


def render(
    programs: Sequence[Program], rundir: str, logdir: str, header: str = "", rotate: bool = True
) -> str:
    """A complete supervisord.conf with its control socket in ``rundir``.

    ``rotate=False``: supervisord rotates no log (``*_maxbytes=0``) and logrotate does, telling
    supervisord to reopen its files with SIGUSR2 (``bmsbank install`` writes that set-up); two
    rotators on one file would lose lines.

    Raises:
        UnsafeValue: a directory, program name, command or environment value supervisord would
            not read back as written.

    """
    head = "".join(f"; {one_line(line)}\n" for line in header.splitlines())
    run = conf_value(rundir, "runtime directory")
    log = conf_value(logdir, "log directory")
    own_rotation = "" if rotate else "logfile_maxbytes=0\n"
    parts = [
        head
        + f"""[unix_http_server]
file={run}/supervisor.sock
chmod=0700

[supervisord]
logfile={log}/supervisord.log
{own_rotation}pidfile={run}/supervisord.pid
childlogdir={log}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run}/supervisor.sock
"""
    ]
    parts += [p.render(logdir, rotate) for p in programs]
    return "\n".join(parts)


def render_installation(
    config: Config,
    python: str = INSTALL_PYTHON,
    config_path: str = INSTALL_CONFIG,
    rotate: bool = True,
) -> str:
    """supervisord.conf for a real installation of ``config``, its logs in ``log_dir``.

    ``rotate=False``: for logrotate to rotate the logs (see :func:`render`).
    """
    header = (
        "supervisord configuration for a bmsbank installation.\n"
        f"Generated by: bmsbank supervisor-config {config_path}\n"
        "Regenerate it after changing [[ports]], [[ble]] or [[can_inputs]]: one poller program\n"
        "runs per poller process (and per Bluetooth adapter), one can- program per CAN input.\n"
        "Run: supervisord -c /opt/bmsbank/supervisord.conf"
    )
    return render(
        service_programs(config, python, config_path),
        config.runtime_dir,
        config.log_dir,
        header,
        rotate,
    )
