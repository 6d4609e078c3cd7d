"""Find a hung bmsbank service and have supervisord restart it: ``[eventlistener:watchdog]``.

supervisord restarts a service that exits, but not one that stops moving: a publisher under
SIGSTOP, deadlocked or blocked keeps its D-Bus name and its last limits, and supervisord shows it
RUNNING. Every service therefore keeps a heartbeat file (:class:`bmsbank.runtime.Heartbeat`:
``PID DEADLINE``, the deadline on the machine's monotonic clock) and this watchdog, run by
supervisord as an event listener, kills the process whose deadline has passed with SIGKILL
through supervisord's XML-RPC interface (``supervisor.signalProcess`` over the unix socket the
configuration declares). SIGKILL works on a stopped process too; the process exits at once,
its D-Bus name and sockets go with it, and ``autorestart`` starts a fresh one.

Who promises what: the publisher promises a bank or the safe state by ``stale_after`` (plus
:data:`bmsbank.services.publisher.service.HEARTBEAT_MARGIN`) after its last bank, so a hung
publisher leaves its non-safe limits on D-Bus for at most about ``stale_after`` + 0.5 s; pollers
and the arbiter promise a beat within :func:`bmsbank.runtime.hung_after` (twice ``stale_after``).
A process that has not written its first beat yet gets :data:`START_GRACE` from the moment the
watchdog first sees its pid.

Timing: the listener speaks supervisord's protocol (READY, an event, RESULT) and is subscribed
to TICK_5, but it does not wait for ticks: between events it sleeps until the earliest deadline
of the files it watches (select on stdin with that timeout), so it acts within milliseconds of a
deadline and is idle otherwise (one wake per few seconds).

Run as ``python -m bmsbank.watchdog --config FILE --program NAME [--program NAME ...]``; the
``--program`` names are the supervisord programs to watch (``bmsbank supervisor-config`` lists
every bmsbank service). Logs go to stderr: stdout is the event protocol.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from bmsbank import config as configuration
from bmsbank import logs, runtime
from bmsbank.errors import ConfigError

log = logging.getLogger(__name__)

START_GRACE = 30.0  #: s a new process may take before its first heartbeat (imports on a GX)
MAX_SLEEP = 5.0  #: s between looks at the files at most (a new file, a program back)
QUERY_EVERY = 1.0  #: s between two questions to supervisord about a running program at most
RUNNING = 20  #: supervisord's ProcessStates.RUNNING
KILL_WAIT = 5.0  #: s a killed pid may still show as RUNNING (until supervisord reaps it)
STARTING_STATES = (10, 30)  #: STARTING and BACKOFF: running soon, worth asking again soon


@dataclass(frozen=True)
class Beat:
    """One heartbeat file's content."""

    pid: int
    deadline: float  #: monotonic clock [s]


def read_beat(path: str) -> Beat | None:
    """The heartbeat at ``path``, or None when there is none (or it does not parse)."""
    try:
        with open(path, encoding="ascii") as fh:
            pid, deadline = fh.read(64).split()
        return Beat(int(pid), float(deadline))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class Supervisor(Protocol):
    """The two calls of supervisord's XML-RPC interface the watchdog uses."""

    def getProcessInfo(self, name: str) -> dict[str, Any]: ...  # noqa: D102

    def signalProcess(self, name: str, signal: str) -> bool: ...  # noqa: D102


class Watchdog:
    """Checks the heartbeats of ``programs``; kills the hung ones through ``supervisor``."""

    def __init__(
        self, runtime_dir: str, programs: Sequence[str], supervisor: Supervisor,
        clock: Callable[[], float] = time.monotonic, start_grace: float = START_GRACE,
    ) -> None:  # fmt: skip
        self.runtime_dir = runtime_dir
        self.start_grace = start_grace
        self.programs = list(programs)
        self.supervisor = supervisor
        self.clock = clock
        self.kills = 0  #: processes killed for a missed deadline
        self._first_seen: dict[str, tuple[int, float]] = {}  # program -> (pid, when first seen)
        self._killed: dict[str, tuple[int, float]] = {}  # program -> (pid, when killed)
        self._next_ask: dict[str, float] = {}  # program -> when supervisord may be asked again
        self._failing = False

    def check(self) -> float:
        """Kill every watched process whose deadline passed; return seconds until the next check."""
        now = self.clock()
        wake = now + MAX_SLEEP
        for program in self.programs:
            beat = read_beat(runtime.heartbeat_path(self.runtime_dir, program))
            if beat is not None and now <= beat.deadline:
                wake = min(wake, beat.deadline)
                continue
            if now >= self._next_ask.get(program, now):
                running = self._suspect(program, beat, now)
                # a program that is not running (stopped by hand) is asked about less often
                self._next_ask[program] = now + (QUERY_EVERY if running else MAX_SLEEP)
            wake = min(wake, self._next_ask[program])
        return max(0.0, wake - self.clock())

    def _suspect(self, program: str, beat: Beat | None, now: float) -> bool:
        """``program`` has no live promise: ask supervisord, kill it if it is running hung.

        Returns:
            False when supervisord says the program is not running (or cannot be asked).

        """
        try:
            info = self.supervisor.getProcessInfo(program)
        except Exception as exc:  # supervisord restarting, or a program it does not know
            self._fail(f"cannot ask supervisord about {program}: {exc}")
            return False
        self._failing = False
        pid = int(info.get("pid") or 0)
        if info.get("state") != RUNNING or pid <= 0:
            self._first_seen.pop(program, None)  # stopped, starting or backing off
            return info.get("state") in STARTING_STATES
        killed, when = self._killed.get(program, (0, 0.0))
        if killed == pid and now - when < KILL_WAIT:
            return True  # dying: supervisord has not reaped it yet
        if beat is not None and beat.pid == pid:
            why = f"its heartbeat deadline passed {now - beat.deadline:.1f} s ago"
        else:
            seen_pid, since = self._first_seen.setdefault(program, (pid, now))
            if seen_pid != pid:
                self._first_seen[program] = (pid, now)
                return True
            if now - since <= self.start_grace:
                return True
            why = f"no heartbeat within {self.start_grace:g} s of its start"
        self._kill(program, pid, why)
        return True

    def _kill(self, program: str, pid: int, why: str) -> None:
        try:
            self.supervisor.signalProcess(program, "KILL")
        except Exception as exc:  # it exited meanwhile: supervisord restarts it anyway
            log.warning("%s (pid %d) hung (%s) but could not be killed: %s", program, pid, why,
                        exc)  # fmt: skip
            return
        self.kills += 1
        self._first_seen.pop(program, None)
        self._killed[program] = (pid, self.clock())
        log.warning("%s (pid %d) hung: %s; killed (SIGKILL), supervisord restarts it",
                    program, pid, why)  # fmt: skip

    def _fail(self, message: str) -> None:
        if not self._failing:
            log.warning("%s", message)
            self._failing = True


def serve(watchdog: Watchdog, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Speak supervisord's event-listener protocol until stdin closes, checking in between.

    Every event (TICK_5) is answered OK at once; the checks run on the watchdog's own schedule
    (:meth:`Watchdog.check`'s timeout), whether or not an event came.
    """
    fd = stdin.fileno()
    stdout.write(b"READY\n")
    stdout.flush()
    while True:
        timeout = watchdog.check()
        if not select.select([fd], [], [], timeout)[0]:
            continue
        header = stdin.readline()  # supervisord sends one event, then waits for RESULT
        if not header:
            return  # supervisord went away
        fields = dict(item.split(b":", 1) for item in header.split())
        stdin.read(int(fields.get(b"len", b"0")))
        stdout.write(b"RESULT 2\nOKREADY\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the watchdog event listener."""
    p = argparse.ArgumentParser(prog="bmsbank-watchdog", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="directory of the sockets and heartbeat files")
    p.add_argument("--program", action="append", default=[], required=True,
                   help="supervisord program to watch (repeatable)")  # fmt: skip
    p.add_argument("--start-grace", type=float, default=START_GRACE,
                   help="seconds a new process may take before its first heartbeat")  # fmt: skip
    args = p.parse_args(argv)
    try:
        config = configuration.load(args.config, args.runtime_dir)
    except ConfigError as exc:
        return runtime.fail("bmsbank-watchdog", exc)
    logs.setup("watchdog", config.log_level)
    if "SUPERVISOR_SERVER_URL" not in os.environ:
        return runtime.fail("bmsbank-watchdog", "not run by supervisord (no SUPERVISOR_SERVER_URL)")
    runtime.exit_on_stop_signals()
    from supervisor import childutils

    rpc = childutils.getRPCInterface(os.environ).supervisor
    watchdog = Watchdog(config.runtime_dir, args.program, rpc, start_grace=args.start_grace)
    log.info("watching %s (heartbeats in %s)", ", ".join(args.program),
             os.path.dirname(runtime.heartbeat_path(config.runtime_dir, "x")))  # fmt: skip
    serve(watchdog, sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
