"""What cell health adds to the arbiter's CPU per pack-update, in one run.

The states come from the plant (``bmsbank simulate cell-health``'s bank and loads, here with
``--packs`` packs in parallel over ``--hours`` simulated hours: load steps, a charge through the
knee, float). They are fed, one tick at a time, into the arbiter's own path -- ``BankEngine.take``
for each state, then ``BankComputer.compute`` (the engine tick and the bank message) -- with
``[bank] cell_health`` off and on, on fresh engines, and to cell health alone (every state
observed, every pack's summary asked each tick), for ``--rounds`` rounds. It prints CPU ms per
pack-update of each and, from the least disturbed round of each, the share cell health adds:
on / off, and alone / off with the loop that feeds it (the issue's budget: 5 %). The socket
work of the real arbiter (receive, unpack, tap) is left out, so the shares printed are upper
bounds of the share in the running arbiter.

    .venv/bin/python bench/cell_health.py [--packs 8] [--hours 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

BUDGET = 0.05  #: the issue's budget: 5 % of the arbiter's CPU per pack-update


def recorded_states(packs: int, seconds: int) -> tuple[dict[str, Any], list[list[dict]]]:
    """The plant's [bank] mapping and, per simulated second, the states its packs sent."""
    from bmsbank.plant import procedures

    sc = procedures._scenario(
        "cell-health", 1, {}, strings=packs, duration=seconds, day_s=procedures.DAY_S,
        capacity_ah=100.0, start_soc=80.0, pv_w=3500.0 * packs, base_load_w=400.0 * packs,
        burst_load_w=1500.0 * packs, temp_swing_c=5.0, temp_start_c=22.0, temp_end_c=22.0,
    )  # fmt: skip
    plant = procedures.Plant(sc)

    class Tape:
        """An engine stand-in for the plant: keeps the states, runs the real engine."""

        def __init__(self) -> None:
            from bmsbank.services.arbiter.engine import BankEngine

            self.engine = BankEngine.from_mapping(plant.engine_config())
            self.ticks: list[list[dict]] = []

        def accept(self, state: dict, t: float) -> bool:
            self.ticks[-1].append(state)
            return self.engine.accept(state, t)

    tape = Tape()
    limits = None
    for t in range(seconds):
        plant.operate(t, limits)
        tape.ticks.append([])
        plant.report(tape, t)
        limits = procedures._limits(tape.engine.tick(float(t)))
        plant.bank.step(1.0)
    return plant.engine_config(), tape.ticks


def packed(ticks: list[list[dict]]) -> list[list[bytes]]:
    """The states as a poller sends them, their wall time and poller run made this machine's."""
    from bmsbank.schema import pack

    now = time.time()
    epoch = int((now - 1e5) * 1e6)  # a poller run started a day ago (µs)
    return [[pack({**s, "time": now, "epoch": epoch}) for s in states] for states in ticks]


def replay(config: dict[str, Any], ticks: list[list[bytes]], cell_health: bool) -> float:
    """CPU seconds of the arbiter over ``ticks`` (packed states) with cell health on or off.

    The real :class:`Arbiter` (ipc sockets in a temporary runtime directory) takes each tick's
    states as its loop does (``handle``: unpack, validate, accept, forward to the tap; only the
    socket receive is left out) and publishes a bank (``publish_bank``: the engine tick, the bank
    message, packed and sent on the tap).
    """
    import tempfile

    import zmq

    from bmsbank.config import parse
    from bmsbank.schema import TOPIC_STATE
    from bmsbank.services.arbiter.service import Arbiter

    with tempfile.TemporaryDirectory(prefix="bench-cells-") as rundir:
        bank = {**config, "cell_health": cell_health, "state_file": ""}
        context = zmq.Context()
        arbiter = Arbiter(parse({"runtime_dir": rundir, "bank": bank}, "bench"), context)
        try:
            rejected = arbiter.registry.counters.rejected
            began = time.process_time()
            for t, states in enumerate(ticks):
                for body in states:
                    arbiter.handle([TOPIC_STATE, body], float(t))
                arbiter.publish_bank(float(t))
            spent = time.process_time() - began
            assert arbiter.registry.counters.rejected == rejected, "states rejected"
        finally:
            arbiter.close()
            context.term()
    return spent


def estimator_alone(config: dict[str, Any], ticks: list[list[dict]]) -> float:
    """CPU seconds of cell health alone over ``ticks``: every state observed, summaries asked."""
    from bmsbank.services.arbiter.engine import BankEngine

    health = BankEngine.from_mapping(config).cells
    assert health is not None
    ids = list(health.packs)
    observe, summary = health.observe, health.summary
    began = time.process_time()
    for t, states in enumerate(ticks):
        for state in states:
            observe(state)
        for pid in ids:
            summary(pid, float(t))
    return time.process_time() - began


def main() -> int:
    """Record the states once, replay them with and without cell health, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", type=int, default=8, help="packs in parallel")
    p.add_argument("--hours", type=float, default=4.0, help="simulated hours")
    p.add_argument("--rounds", type=int, default=5, help="rounds of off, on, alone")
    args = p.parse_args()
    logging.disable(logging.WARNING)  # the engine's "2 states in a row" notes
    config, ticks = recorded_states(args.packs, int(args.hours * 3600))
    updates = sum(len(t) for t in ticks)
    print(f"{args.packs} packs, {len(ticks)} ticks, {updates} pack-updates", flush=True)
    print(f"{'round':>5} {'off ms/upd':>10} {'on ms/upd':>10} {'alone ms/upd':>12}", flush=True)
    offs, ons, alones = [], [], []
    for k in range(args.rounds):
        # stamped afresh for each replay: a state whose wall time is minutes old is refused
        offs.append(replay(config, packed(ticks), False))
        ons.append(replay(config, packed(ticks), True))
        alones.append(estimator_alone(config, ticks))
        print(f"{k + 1:>5} {1e3 * offs[-1] / updates:>10.4f} {1e3 * ons[-1] / updates:>10.4f} "
              f"{1e3 * alones[-1] / updates:>12.4f}", flush=True)  # fmt: skip
    off, on, alone = min(offs), min(ons), min(alones)  # the least disturbed run of each
    print(f"best: off {1e3 * off / updates:.4f}, on {1e3 * on / updates:.4f}, alone "
          f"{1e3 * alone / updates:.4f} ms per pack-update; cell health adds "
          f"{1e6 * (on - off) / updates:.1f} µs per pack-update: {100 * (on / off - 1):.1f}% "
          f"(on/off) of this path without sockets, the estimator alone {100 * alone / off:.1f}% "
          f"(its loop included); budget {100 * BUDGET:.0f}% of the running arbiter's CPU "
          "(bench/stack.py)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
