"""Decode throughput per plugin: compiled native._frames vs its pure-Python twin, in one run.

Each implementation runs in its own subprocess (the codec is chosen at import time by
BMSBANK_PURE); the parent prints both and their ratio. What is timed is the poller's decode path
for one reply: ``plugin.extract`` (scan, check) + ``plugin.parse`` (field tables) +
``plugin.state``.

    .venv/bin/python bench/decode.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(seconds: float) -> dict[str, float]:
    """Frames per second of a full decode cycle, per plugin (in this process's implementation)."""
    from bmsbank.services.poller import plugins, simulators
    from bmsbank.services.poller.plugins.base import LinkStats
    from bmsbank.services.poller.simulators.battery import BatteryModel

    results = {}
    for name in sorted(plugins.REGISTRY):
        plugin = plugins.load(name)
        address = plugin.default_address
        model = BatteryModel(cells=16, soc=57.0, current=-8.0, imbalance=0.02)
        sim = simulators.create(name, {address: model})
        replies = []
        for q in plugin.queries(address):
            if q.expects_reply and q.every:
                replies.append(b"".join(sim.feed(q.request)))
        stats = LinkStats()

        def cycle(plugin=plugin, replies=replies, address=address, stats=stats) -> None:
            parts = {}
            for raw in replies:
                buf = bytearray(raw)
                frame = plugin.extract(buf, address, stats)
                part, fields = plugin.parse(frame)
                parts[part] = fields
            plugin.state(parts)

        cycle()
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(50):
                cycle()
            n += 50
        results[name] = n * len(replies) / elapsed
        results[f"{name}.bytes"] = sum(len(r) for r in replies) / len(replies)
    return results


def main() -> int:
    """Run both implementations and print the comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--child", choices=["compiled", "twin"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.seconds)))
        return 0
    runs = {}
    for impl in ("compiled", "twin"):
        env = dict(os.environ, BMSBANK_PURE="1" if impl == "twin" else "0")
        out = subprocess.run(
            [sys.executable, __file__, "--child", impl, "--seconds", str(args.seconds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs[impl] = json.loads(out)
    print(
        f"{'plugin':<8} {'bytes/frame':>11} {'compiled frames/s':>18} {'twin frames/s':>14} "
        f"{'ratio':>7}"
    )
    for name in sorted(k for k in runs["compiled"] if "." not in k):
        c, t = runs["compiled"][name], runs["twin"][name]
        print(
            f"{name:<8} {runs['compiled'][name + '.bytes']:>11.0f} {c:>18,.0f} {t:>14,.0f} "
            f"{c / t:>6.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
