"""``python -m bmsbank.web [--config FILE]``: the bank view page (``bmsbank web``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bmsbank import config as configuration
from bmsbank import logs
from bmsbank.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the web view service."""
    p = argparse.ArgumentParser(prog="bmsbank-web", description="Serve the bank view page.")
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="directory of the ipc:// sockets")
    args = p.parse_args(argv)
    try:
        config = configuration.load(args.config, args.runtime_dir)
    except ConfigError as exc:
        return configuration.fail("bmsbank-web", exc)
    logs.setup("web", config.log_level)
    from bmsbank.web.server import WebServer

    asyncio.run(WebServer(config).serve())  # returns on SIGTERM, SIGINT or SIGHUP
    return 0


if __name__ == "__main__":
    sys.exit(main())
