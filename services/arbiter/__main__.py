"""``python -m bmsbank.services.arbiter [--config FILE]``: aggregate every pack into one bank."""

from __future__ import annotations

import argparse
import sys

from bmsbank import config as configuration
from bmsbank import logs, runtime
from bmsbank.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the arbiter service."""
    p = argparse.ArgumentParser(prog="bmsbank-arbiter", description="Aggregate packs into a bank.")
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="directory of the ipc:// sockets")
    args = p.parse_args(argv)
    try:
        config = configuration.load(args.config, args.runtime_dir)
    except ConfigError as exc:
        return configuration.fail("bmsbank-arbiter", exc)
    logs.setup("arbiter", config.log_level)
    runtime.exit_on_sigterm()
    from bmsbank.services.arbiter.service import Arbiter

    arbiter = Arbiter(config)
    try:
        arbiter.run()
    except KeyboardInterrupt:
        pass
    finally:
        arbiter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
