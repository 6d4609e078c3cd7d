"""Process helpers shared by the services: stop signals, start-up errors, the heartbeat.

The heartbeat is what :mod:`bmsbank.watchdog` reads to find a hung service. A service under
supervisord keeps the file ``<runtime_dir>/heartbeat/<program>`` holding one line,
``PID DEADLINE``: a promise that this process writes the file again before ``DEADLINE``, a time
on the monotonic clock [s]. Linux's CLOCK_MONOTONIC is one clock for every process of the
machine and wall-clock steps (NTP on a Raspberry Pi without RTC) do not move it, so the watchdog
compares the deadline with its own ``time.monotonic()``. A stopped (SIGSTOP), deadlocked or
blocked process writes nothing, and its deadline passes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

#: The signals that end a service through its shutdown path: supervisord's stop (TERM), Ctrl-C
#: (INT), a closed terminal or ``kill -HUP`` (HUP; its default action would skip every
#: ``finally`` block, so the state file and the energy counter would not be saved).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
HEARTBEAT_DIR = "heartbeat"  #: under the runtime directory
#: A hung poller or arbiter is restarted after this many times ``[bank] stale_after`` without a
#: heartbeat. Its packs (or the bank) are already stale by then and handled as such; the restart
#: is for recovery, and twice the time spares a service that is only slow.
HUNG_FACTOR = 2.0


def _terminate(signum: int, frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:  # a second signal must not interrupt the shutdown path
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(0)


def exit_on_stop_signals() -> None:
    """Turn SIGTERM, SIGINT and SIGHUP into ``SystemExit(0)`` so ``finally`` blocks run.

    Call it from the main thread. The first of them starts the shutdown; later ones are ignored
    so that they cannot cut it short (supervisord still kills after ``stopwaitsecs``).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _terminate)


#: The former name (it always meant "stop cleanly"); the simulators' pty bridge still uses it.
exit_on_sigterm = exit_on_stop_signals


def fail(prog: str, message: object, code: int = 2) -> int:
    """Print a one-line start-up error to stderr and return the exit code."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def heartbeat_path(runtime_dir: str, program: str) -> str:
    """Where the program ``program`` (its supervisord name) keeps its heartbeat."""
    return os.path.join(runtime_dir, HEARTBEAT_DIR, program)


def hung_after(stale_after: float, interval: float) -> float:
    """Seconds without a heartbeat after which a poller or the arbiter counts as hung.

    Args:
        stale_after: ``[bank] stale_after`` [s].
        interval: ``[bank] interval`` [s]; the arbiter's loop turns at least this often.

    """
    return max(HUNG_FACTOR * stale_after, 3.0 * interval)


class Heartbeat:
    """This process's heartbeat file (see the module docstring); a no-op without a program name.

    Writing never raises: a full or missing runtime directory is logged once, and the watchdog
    will then restart the service, which is what a service that cannot write there needs.
    """

    def __init__(
        self, runtime_dir: str, program: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        """Set up the file for ``program``; None (not under supervisord) turns beating off."""
        self.path = heartbeat_path(runtime_dir, program) if program else None
        self.clock = clock
        self.pid = os.getpid()
        self.deadline: float | None = None  #: the last deadline written
        self._failed = False
        self._next = 0.0  # the rate limit of beat_every
        self._closed = False
        self._lock = threading.Lock()  # a beat from the thread never follows close()

    @classmethod
    def supervised(cls, runtime_dir: str) -> Heartbeat:
        """The heartbeat of this process as supervisord names it (``SUPERVISOR_PROCESS_NAME``)."""
        return cls(runtime_dir, os.environ.get("SUPERVISOR_PROCESS_NAME"))

    @property
    def enabled(self) -> bool:
        """True when beats are written (the process has a program name)."""
        return self.path is not None

    def beat(self, deadline: float) -> None:
        """Promise the next beat before ``deadline`` [s, monotonic clock]."""
        with self._lock:
            if self.path is not None and not self._closed:
                self._write(self.path, deadline)

    def _write(self, path: str, deadline: float) -> None:
        tmp = f"{path}.{self.pid}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "w", encoding="ascii") as fh:
                fh.write(f"{self.pid} {deadline:.3f}\n")
            os.replace(tmp, path)  # atomic: the watchdog never reads half a line
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write the heartbeat %s: %s", path, exc)
                self._failed = True
            return
        self.deadline = deadline
        self._failed = False

    def beat_every(self, period: float, allowance: float) -> None:
        """Beat with ``allowance`` seconds of credit, at most once per ``period`` seconds.

        Cheap enough to call on every turn of a main loop (one clock read when not due).
        """
        now = self.clock()
        if now >= self._next:
            self._next = now + period
            self.beat(now + allowance)

    def start_thread(self, allowance: float) -> threading.Thread | None:
        """Beat from a daemon thread every ``allowance / 4`` seconds (at most 1 s).

        For a process whose main thread only waits (the poller's): a stopped or frozen
        interpreter stops this thread too.
        """
        if self.path is None:
            return None
        period = min(1.0, allowance / 4)

        def run() -> None:
            while True:
                self.beat(self.clock() + allowance)
                time.sleep(period)

        thread = threading.Thread(target=run, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Remove the file after a clean shutdown (supervisord then shows the program stopped)."""
        with self._lock:
            self._closed = True
            if self.path is None or self.deadline is None:
                return
            try:
                with open(self.path, encoding="ascii") as fh:
                    mine = fh.read().split()[:1] == [str(self.pid)]
                if mine:
                    os.unlink(self.path)
            except (OSError, ValueError):
                pass
