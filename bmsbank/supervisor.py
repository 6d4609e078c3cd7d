"""Render supervisord configuration: one program per poller process, the arbiter, the publisher.

Beside them, the watchdog (:mod:`bmsbank.watchdog`) as an ``[eventlistener:watchdog]`` section:
it kills a service whose heartbeat stopped, for supervisord to restart it.

The repository's ``supervisord.conf`` is this renderer's output for ``config.example.toml``
(``bmsbank supervisor-config``); the demo renders its own with simulators and a private bus added.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bmsbank.config import Config

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

    def render(self, logdir: str) -> str:
        """The section text."""
        lines = [
            f"[program:{self.name}]",
            "command=" + " ".join(shlex.quote(c).replace("%", "%%") for c in self.command),
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
            f"stdout_logfile={logdir}/{self.name}.log",
            "stdout_logfile_maxbytes=1MB",
            "stdout_logfile_backups=2",
        ]
        if self.environment:
            env = ",".join(f'{k}="{v}"' for k, v in sorted(self.environment.items()))
            lines.append(f"environment={env}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EventListener(Program):
    """One [eventlistener:x] section: a program that supervisord also sends ``events``.

    Its stdout is the event protocol's channel, so it logs to stderr alone (supervisord refuses
    ``redirect_stderr`` for a listener).
    """

    events: str = "TICK_5"

    def render(self, logdir: str) -> str:
        """The section text: the program's, less its stdout log, plus the events."""
        lines = super().render(logdir).splitlines()
        lines[0] = f"[eventlistener:{self.name}]"
        lines = [line for line in lines if not line.startswith(("redirect_stderr=", "stdout_"))]
        lines += [
            f"events={self.events}",
            "stdout_logfile=NONE",
            f"stderr_logfile={logdir}/{self.name}.log",
            "stderr_logfile_maxbytes=1MB",
            "stderr_logfile_backups=2",
        ]
        return "\n".join(lines) + "\n"


def service_programs(
    config: Config, python: str, config_path: str, environment: Mapping[str, str] | None = None
) -> list[Program]:
    """The bmsbank services for ``config``: arbiter, publisher, one poller per poller process.

    A poller process (``[[ports]] process``; by default every port shares one) is the program
    ``poller-<process>``. The last entry is the watchdog listener that watches all of them.
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
    watched = [arg for p in programs for arg in ("--program", p.name)]
    programs.append(
        EventListener("watchdog", [python, "-m", "bmsbank.watchdog", *base, *watched], 10, env)
    )
    return programs


def render(programs: Sequence[Program], rundir: str, logdir: str, header: str = "") -> str:
    """A complete supervisord.conf with its control socket in ``rundir``."""
    head = "".join(f"; {line}\n" for line in header.splitlines())
    parts = [
        head
        + f"""[unix_http_server]
file={rundir}/supervisor.sock
chmod=0700

[supervisord]
logfile={logdir}/supervisord.log
pidfile={rundir}/supervisord.pid
childlogdir={logdir}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{rundir}/supervisor.sock
"""
    ]
    parts += [p.render(logdir) for p in programs]
    return "\n".join(parts)


def render_installation(
    config: Config, python: str = INSTALL_PYTHON, config_path: str = INSTALL_CONFIG
) -> str:
    """supervisord.conf for a real installation of ``config``."""
    header = (
        "supervisord configuration for a bmsbank installation.\n"
        f"Generated by: bmsbank supervisor-config {config_path}\n"
        "Regenerate it after adding or removing [[ports]]; one poller program runs per port.\n"
        "Run: supervisord -c /opt/bmsbank/supervisord.conf"
    )
    return render(
        service_programs(config, python, config_path),
        config.runtime_dir,
        "/var/log/bmsbank",
        header,
    )
