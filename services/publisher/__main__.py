"""``python -m bmsbank.services.publisher --config FILE [--runtime-dir DIR]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bmsbank import runtime
from bmsbank.config import fail, load
from bmsbank.errors import ConfigError

from .service import Publisher


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config and run the publisher until SIGTERM, SIGINT or SIGHUP.

    Returns:
        0 after a clean shutdown, 2 when the configuration is invalid.

    """
    parser = argparse.ArgumentParser(
        prog="python -m bmsbank.services.publisher",
        description="Publish the bank on D-Bus and CAN.",
    )
    parser.add_argument("--config", help="TOML config file (default: $BMSBANK_CONFIG or /etc)")
    parser.add_argument("--runtime-dir", help="directory of the ipc:// sockets")
    args = parser.parse_args(argv)
    try:
        config = load(args.config, args.runtime_dir)
    except ConfigError as exc:
        return fail("bmsbank-publisher", exc)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runtime.exit_on_stop_signals()  # until the loop installs its own handlers for them
    asyncio.run(Publisher(config).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
