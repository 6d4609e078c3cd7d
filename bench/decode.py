"""Decode throughput per plugin: compiled ``native._frames`` vs its pure-Python twin, in one run.

Two measurements, on replies the plugin's own simulator builds:

- codec: ``Scanner.scan`` (find and check the frame) + ``FieldTable.decode`` (every field of the
  part's layout), compiled and twin side by side in this process;
- full path: what the poller does per reply (``plugin.extract`` + ``plugin.parse`` +
  ``plugin.state``), one subprocess per implementation because plugins pick their codec at import
  time (``BMSBANK_PURE``). The plugin's Python glue is the same in both, so this ratio is lower.

    .venv/bin/python bench/decode.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from timing import rate  # bench/ is on sys.path when a bench runs as a script


def sample_replies(name: str) -> tuple[object, list[tuple[str, bytes]]]:
    """A plugin and one reply per polled part, from its simulator (16 cells, 2 probes)."""
    from bmsbank.services.poller import plugins, simulators
    from bmsbank.services.poller.simulators.battery import BatteryModel

    plugin = plugins.load(name)
    address = plugin.default_address
    model = BatteryModel(cells=16, soc=57.0, current=-8.0, imbalance=0.02)
    sim = simulators.create(name, {address: model})
    replies = []
    for q in plugin.queries(address):
        if q.expects_reply and q.every:
            replies.append((q.part, b"".join(sim.feed(q.request))))
    return plugin, replies


def codec(seconds: float) -> list[tuple[str, str, int, list[float]]]:
    """(plugin, part, bytes, [scan, decode, scan + decode] rates compiled, then twin)."""
    from bmsbank.native import _frames, _frames_py
    from bmsbank.services.poller import plugins

    rows = []
    for name in sorted(plugins.REGISTRY):
        plugin, replies = sample_replies(name)
        for part, reply in replies:
            start, end = plugin.layouts[part].region(reply)
            rates = []
            for mod in (_frames, _frames_py):
                scanner = mod.Scanner(plugin.framing)
                table = mod.FieldTable(plugin.layouts[part].fields)
                rates += [
                    rate(lambda s=scanner, r=reply: s.scan(r), seconds),
                    rate(lambda t=table, r=reply, a=start, b=end: t.decode(r, a, b), seconds),
                    rate(lambda s=scanner, t=table, r=reply, a=start, b=end: (
                        s.scan(r), t.decode(r, a, b)), seconds),
                ]  # fmt: skip
            rows.append((name, part, len(reply), rates))
    return rows


def full_path(seconds: float) -> dict[str, float]:
    """Replies per second through extract + parse + state, in this process's implementation."""
    from bmsbank.services.poller import plugins
    from bmsbank.services.poller.plugins.base import LinkStats

    results = {}
    for name in sorted(plugins.REGISTRY):
        plugin, replies = sample_replies(name)
        address, stats = plugin.default_address, LinkStats()

        def cycle(plugin=plugin, replies=replies, address=address, stats=stats) -> None:
            parts = {}
            for _, raw in replies:
                part, fields = plugin.parse(plugin.extract(bytearray(raw), address, stats))
                parts[part] = fields
            plugin.state(parts)

        results[name] = rate(cycle, seconds) * len(replies)
    return results


def main() -> int:
    """Run both measurements and print them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(full_path(args.seconds)))
        return 0
    from bmsbank.native import _frames, _frames_py

    print(f"codec: {_frames.IMPLEMENTATION} vs {_frames_py.IMPLEMENTATION} twin, calls/s")
    print(f"{'plugin':<6} {'part':<9} {'bytes':>5} | {'scan':>21} | {'field decode':>21} | "
          f"{'scan + decode':>21}")  # fmt: skip
    for name, part, size, r in codec(args.seconds):
        cells = [f"{r[i]:>9,.0f} {r[i + 3]:>7,.0f} {r[i] / r[i + 3]:>3.0f}x" for i in range(3)]
        print(f"{name:<6} {part:<9} {size:>5} | " + " | ".join(cells))
    runs = {}
    for impl in ("compiled", "twin"):
        env = dict(os.environ, BMSBANK_PURE="1" if impl == "twin" else "0")
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--seconds", str(args.seconds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs[impl] = json.loads(out)
    print("\nfull poller path per reply: extract + parse + state")
    print(f"{'plugin':<7} {'compiled/s':>12} {'twin/s':>10} {'ratio':>7}")
    for name, c in runs["compiled"].items():
        t = runs["twin"][name]
        print(f"{name:<7} {c:>12,.0f} {t:>10,.0f} {c / t:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
