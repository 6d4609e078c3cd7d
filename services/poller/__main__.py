"""``python -m bmsbank.services.poller (--process NAME | --port NAME ...) [--config FILE]``.

Polls the ports of one poller process (``[[ports]] process``; what ``bmsbank supervisor-config``
renders) or the ports named with ``--port`` (repeatable), each in a thread of its own.
"""

from __future__ import annotations

import argparse
import sys

from bmsbank import config as configuration
from bmsbank import logs, runtime
from bmsbank.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the poller service."""
    p = argparse.ArgumentParser(prog="bmsbank-poller", description="Poll the BMS on some ports.")
    p.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    p.add_argument("--runtime-dir", help="directory of the ipc:// sockets")
    p.add_argument("--process", help="poll every port whose [[ports]] process is NAME")
    p.add_argument("--port", action="append", default=[], help="poll this port (repeatable)")
    args = p.parse_args(argv)
    if bool(args.process) == bool(args.port):
        p.error("give --process NAME or one or more --port NAME")
    try:
        config = configuration.load(args.config, args.runtime_dir)
        if args.process:
            ports = [port.name for port in config.processes().get(args.process, [])]
            if not ports:
                known = ", ".join(config.processes()) or "none configured"
                raise ConfigError("ports.process", config.source,
                                  f"a process of some port ({known}), not {args.process!r}")
        else:
            ports = [config.port(name).name for name in args.port]
    except ConfigError as exc:
        return configuration.fail("bmsbank-poller", exc)
    logs.setup(f"poller[{args.process or ','.join(ports)}]", config.log_level)
    runtime.exit_on_stop_signals()
    from bmsbank.services.poller.service import run_ports

    # From a thread: the main thread only waits, and a port that hangs must not count as the
    # process hanging (it blocks its own thread only); a stopped process stops this one too.
    heartbeat = runtime.Heartbeat.supervised(config.runtime_dir)
    heartbeat.start_thread(runtime.hung_after(config.bank.stale_after, config.bank.interval))
    try:
        return run_ports(config, ports)
    finally:
        heartbeat.close()


if __name__ == "__main__":
    sys.exit(main())
