"""Run a simulated BMS bus on a pseudo-terminal: ``python -m bmsbank.services.poller.simulators``.

Example: three JK PB packs at addresses 1-3 on one RS485 bus, reachable at /tmp/ttyJK::

    python -m bmsbank.services.poller.simulators --bms jkpb --link /tmp/ttyJK \
        --addresses 1,2,3 --current 5,3,-2 --soc 55,60,65
"""

from __future__ import annotations

import argparse
import logging
import sys

from bmsbank import runtime
from bmsbank.services.poller import plugins
from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from bmsbank.services.poller.spi_transport import SpiSocketServer


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _pick(values: list[float], i: int) -> float:
    return values[i] if i < len(values) else values[-1]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the packs and serve until SIGTERM, SIGINT or SIGHUP."""
    p = argparse.ArgumentParser(prog="bmsbank-sim", description=__doc__.splitlines()[0])
    p.add_argument("--bms", required=True, help="plugin name (jbd, jkpb)")
    p.add_argument("--link", required=True, help="symlink to create for the pty's slave side")
    p.add_argument("--addresses", default="1", help="comma-separated pack addresses")
    p.add_argument("--cells", type=int, default=16)
    p.add_argument("--capacity", type=_floats, default=[100.0], help="Ah, per pack or one for all")
    p.add_argument("--soc", type=_floats, default=[60.0], help="%%, per pack or one for all")
    p.add_argument("--current", type=_floats, default=[0.0], help="A (+ = charge), per pack")
    p.add_argument("--imbalance", type=_floats, default=[0.0], help="V across the cells, per pack")
    p.add_argument("--snapshot", default=None, help="write the packs' true values here (JSON)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sim %(levelname)s %(message)s")
    addresses = [int(a) for a in args.addresses.split(",")]
    packs = {
        addr: BatteryModel(
            cells=args.cells,
            capacity=_pick(args.capacity, i),
            soc=_pick(args.soc, i),
            current=_pick(args.current, i),
            imbalance=_pick(args.imbalance, i),
            temperatures=[24.0 + i, 25.5 + i],
        )
        for i, addr in enumerate(addresses)
    }
    server: PtyServer | SpiSocketServer
    if plugins.info(args.bms).link.upper().startswith("SPI"):  # a socket: device "spisim:LINK"
        server = SpiSocketServer(create(args.bms, packs), args.link, snapshot=args.snapshot)
    else:
        server = PtyServer(create(args.bms, packs), link=args.link, snapshot=args.snapshot)
    runtime.exit_on_stop_signals()
    logging.info(
        "%s simulator on %s -> %s, addresses %s", args.bms, args.link, server.path, addresses
    )
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
