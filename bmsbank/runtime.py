"""Process helpers shared by the services."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (supervisord's stop signal) into SystemExit so ``finally`` blocks run."""
    signal.signal(signal.SIGTERM, _terminate)


def fail(prog: str, message: object, code: int = 2) -> int:
    """Print a one-line start-up error to stderr and return the exit code."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code
