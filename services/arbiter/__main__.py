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
    runtime.exit_on_stop_signals()
    from bmsbank.services.arbiter.service import Arbiter

    heartbeat = runtime.Heartbeat.supervised(config.runtime_dir)
    allowance = runtime.hung_after(config.bank.stale_after, config.bank.interval)

    def stop() -> bool:  # asked on every turn of the loop: the heartbeat says it turns
        heartbeat.beat_every(min(1.0, allowance / 4), allowance)
        return False

    arbiter = Arbiter(config)
    try:
        arbiter.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        arbiter.close()
        heartbeat.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
