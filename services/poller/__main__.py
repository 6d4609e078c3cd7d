"""``python -m bmsbank.services.poller --port NAME [--config FILE]``: poll one configured port."""

from __future__ import annotations

import argparse
import sys

from bmsbank import config as configuration
from bmsbank import logs, runtime
from bmsbank.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the poller service."""
    p = argparse.ArgumentParser(prog="bmsbank-poller", description="Poll the BMS on one port.")
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="directory of the ipc:// sockets")
    p.add_argument("--port", required=True, help="name of a [[ports]] entry")
    args = p.parse_args(argv)
    try:
        config = configuration.load(args.config, args.runtime_dir)
        config.port(args.port)
    except ConfigError as exc:
        return runtime.fail("bmsbank-poller", exc)
    logs.setup(f"poller[{args.port}]", config.log_level)
    runtime.exit_on_sigterm()
    from bmsbank.services.poller.service import run

    try:
        run(config, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
