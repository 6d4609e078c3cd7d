"""Logging set-up for the services, and a logger that speaks once per state change."""

from __future__ import annotations

import logging
import sys


def setup(service: str, level: str = "info") -> None:
    """Log to stderr (supervisord captures it) with the service name in every line."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class ChangeLog:
    """Logs a condition only when it changes, so a missing port is not logged every poll."""

    def __init__(self, logger: logging.Logger, prefix: str = "") -> None:
        self.logger = logger
        self.prefix = prefix
        self.state: dict[str, str] = {}

    def set(self, key: str, state: str, level: int = logging.INFO, detail: str = "") -> bool:
        """Record ``state`` for ``key``; log (and return True) only if it differs from before."""
        if self.state.get(key) == state:
            return False
        self.state[key] = state
        self.logger.log(
            level, "%s%s: %s%s", self.prefix, key, state, f" ({detail})" if detail else ""
        )
        return True
