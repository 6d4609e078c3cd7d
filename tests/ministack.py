"""A small bmsbank installation under a real supervisord, for fault tests.

One simulated JBD pack on a pseudo-terminal, its poller, the arbiter, the publisher on a private
dbus-daemon with CAN over slcan on a pty (the far end at ``can_peer``), and, unless asked
otherwise, the watchdog: the programs ``bmsbank supervisor-config`` renders, plus the
simulator, the bus and the CAN wire.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from supervisor import childutils

from bmsbank import config as configuration
from bmsbank.demo import PRIVATE_BUS_CONF
from bmsbank.supervisor import EventListener, Program, render, service_programs

SERVICE = "com.victronenergy.battery.bmsbank"


class Stack:
    """The installation, started by :meth:`start`, stopped (and removed) by :meth:`close`."""

    def __init__(
        self, stale_after: float = 3.0, watchdog: bool = True, mute_grace: float | None = None
    ) -> None:
        """Write the files; ``mute_grace``: also run "mute", a watched program that never beats."""
        # a short directory of our own: unix socket paths are limited to 108 bytes
        self.rundir = Path(tempfile.mkdtemp(prefix="bmsmini", dir="/tmp"))
        self.stale_after = stale_after
        self.bus_address = f"unix:path={self.rundir}/dbus.sock"
        self.can_peer = str(self.rundir / "can-gx")
        self.config_path = str(self.rundir / "bmsbank.toml")
        Path(self.config_path).write_text(self._config())
        bus_conf = PRIVATE_BUS_CONF.format(sock=self.rundir / "dbus.sock")
        (self.rundir / "dbus.conf").write_text(bus_conf)
        (self.rundir / "log").mkdir()
        self.config = configuration.load(self.config_path)
        py = sys.executable
        programs = [
            Program("sim", [py, "-m", "bmsbank.services.poller.simulators", "--bms", "jbd",
                            "--link", f"{self.rundir}/tty-jbd", "--current=5", "--soc=60"], 5),
            Program("dbus", ["dbus-daemon", "--nofork", "--nopidfile",
                             f"--config-file={self.rundir}/dbus.conf"], 1),
            Program("canwire", [py, "-m", "bmsbank.services.poller.simulators.ptybridge",
                                f"{self.rundir}/can-bms", self.can_peer], 2),
        ]  # fmt: skip
        env = {"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}
        services = service_programs(self.config, py, self.config_path, env)
        if not watchdog:
            services = [p for p in services if not isinstance(p, EventListener)]
        elif mute_grace is not None:
            programs.append(Program("mute", [py, "-c", "import time; time.sleep(3600)"], 50))
            listener = services.pop()
            extra = ["--program", "mute", "--start-grace", str(mute_grace)]
            services.append(EventListener(listener.name, [*listener.command, *extra],
                                          listener.priority, listener.environment))
        self.conf = self.rundir / "supervisord.conf"
        logdir = str(self.rundir / "log")
        self.conf.write_text(render(programs + services, str(self.rundir), logdir))
        self.proc: subprocess.Popen | None = None

    def _config(self) -> str:
        r = self.rundir
        return (
            f'runtime_dir = "{r}"\nlog_level = "info"\n'
            f'[bank]\nname = "mini"\nstale_after = {self.stale_after}\ninterval = 0.5\n'
            f'state_file = "{r}/state.json"\n'
            f'[dbus]\nenabled = true\npack_services = false\nnames_file = "{r}/names.json"\n'
            f'[can]\nenabled = true\ninterface = "slcan"\nchannel = "{r}/can-bms"\n'
            f'energy_file = "{r}/energy.json"\n'
            f'[[ports]]\nname = "jbd"\ndevice = "{r}/tty-jbd"\nbms = "jbd"\naddresses = [1]\n'
            "interval = 0.5\n"
        )

    def start(self) -> Stack:
        """Start supervisord (in the foreground of its own session)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        return self

    def rpc(self):
        """supervisord's XML-RPC interface (``supervisor.*``), over its unix socket."""
        env = {"SUPERVISOR_SERVER_URL": f"unix://{self.rundir}/supervisor.sock"}
        return childutils.getRPCInterface(env).supervisor

    def pid(self, program: str, timeout: float = 30.0) -> int:
        """The pid of ``program`` once supervisord says it is RUNNING."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.rpc().getProcessInfo(program)
                if info["statename"] == "RUNNING" and info["pid"]:
                    return int(info["pid"])
            except OSError:  # supervisord not listening yet
                pass
            assert time.monotonic() < deadline, f"{program} not running within {timeout} s"
            time.sleep(0.1)

    def log(self, name: str) -> str:
        """A program's log so far (empty if none yet)."""
        path = self.rundir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop supervisord and everything it runs; remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.rundir, ignore_errors=True)


async def bus_call(bus: MessageBus, dest: str, path: str, iface: str, member: str,
                   signature: str = "", body: list | None = None) -> Message:  # fmt: skip
    """One method call; the reply (an error reply is returned, not raised)."""
    return await bus.call(Message(destination=dest, path=path, interface=iface, member=member,
                                  signature=signature, body=body or []))  # fmt: skip


async def has_owner(bus: MessageBus, name: str = SERVICE) -> bool:
    """True when ``name`` is on the bus (asked of the daemon: a stopped owner cannot stall it)."""
    reply = await bus_call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "NameHasOwner", "s", [name])  # fmt: skip
    return bool(reply.body[0])


async def limits(bus: MessageBus) -> tuple[float, float] | None:
    """(CCL, DCL) [A] as the bank service shows them, None while it is not there."""
    out = []
    for path in ("/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent"):
        reply = await bus_call(bus, SERVICE, path, "com.victronenergy.BusItem", "GetValue")
        if reply.message_type is not MessageType.METHOD_RETURN:
            return None
        out.append(float(reply.body[0].value))
    return out[0], out[1]


def wait_until(check, timeout: float, what: str, step: float = 0.1):
    """Call ``check()`` until it returns something true; return that (fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(step)


def run(coro, timeout: float = 120.0):
    """Run a coroutine to completion with a timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
