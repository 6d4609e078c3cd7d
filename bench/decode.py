"""Decode throughput per BMS family: compiled ``native._frames`` vs its pure-Python twin, one run.

Two measurements, on replies each family's own simulator builds (16 cells, 2 probes):

- codec: the family's framer (``scan``: find and check the frame, ``payload``: unhexlify where
  the protocol is ASCII) and its layout's table (``decode``: every field of the part), compiled
  and twin side by side in this process;
- full path, bytes to state message: what the poller does per poll cycle (``run_query`` for
  every request: extract, parse, the family's hooks, frames collected; then ``state``, the
  message built with its derived values, validated and packed with msgpack), one subprocess
  per implementation because families pick their codec at import time (``BMSBANK_PURE``). The
  Python glue (family hooks, message, validation) is the same in both, so this ratio is lower:
  it is the figure issue 10's point 3 wants at 10x;
- line noise (issue 11): milliseconds for ``take`` to skip 64 KiB of zeros, of random bytes
  and of the family's frame start repeated (its header, SOI, or address and function code:
  each a false start, reported as a corrupt frame) to the frame after it, and for 64 KiB of
  zeros read 64 bytes at a time (a stuck line as the poller sees it), compiled and twin side
  by side.

    .venv/bin/python bench/decode.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from timing import rate  # bench/ is on sys.path when a bench runs as a script


class Replay:
    """A link that answers each request with the bytes its simulator gave (a ``Link``)."""

    timeout = 0.5

    def __init__(self, replies: dict[bytes, bytes]) -> None:
        self.replies = replies
        self.buf = bytearray()

    def exchange(self, request: bytes, extract: Any) -> bytes:
        self.buf = bytearray(self.replies[request])
        return self.receive(extract)

    def receive(self, extract: Any) -> bytes:
        frame = extract(self.buf)
        assert frame is not None
        return frame


def sample(name: str) -> tuple[Any, list[Any], dict[bytes, bytes]]:
    """A family, the queries of one cycle and the simulator's reply bytes to each request."""
    from bmsbank.services.poller import plugins, simulators
    from bmsbank.services.poller.simulators.battery import BatteryModel

    plugin = plugins.load(name)
    address = plugin.default_address
    cells = {"sinowealth": 10, "hlpdatabms4s": 4}.get(name, 16)  # BMSs with fewer cells
    model = BatteryModel(cells=cells, soc=57.0, current=-8.0, imbalance=0.02)
    sim = simulators.create(name, {address: model})
    queries = [q for q in plugin.queries(address) if q.expects_reply]
    return plugin, queries, {q.request: b"".join(sim.feed(q.request)) for q in queries}


def codec(seconds: float) -> list[tuple[str, str, int, list[float]]]:
    """(family, part, bytes, [scan, decode, scan + decode] rates compiled, then twin)."""
    from bmsbank.native import _frames, _frames_py
    from bmsbank.services.poller import plugins
    from bmsbank.services.poller.plugins.base import LinkStats

    rows = []
    for name in plugins.families():
        if plugins.info(name).link.startswith(("SPI", "CAN")):
            continue  # no toolkit framer: SPI words and CAN frames come whole to the family
        plugin, queries, replies = sample(name)
        for q in queries:
            if q.every == 0:
                continue
            reply = plugin.extract(bytearray(replies[q.request]), LinkStats())  # the first frame
            payload = plugin.framer.payload(reply)
            part, origin = plugin.identify(payload, q.request)
            if part not in plugin.layouts:
                continue  # a text line, decoded by the family's own code (HLPdata BMS4S)
            layout = plugin.layouts[part]
            start, end = layout.region(payload)
            rates = []
            for mod in (_frames, _frames_py):
                framer = mod.framer(plugin.framing)
                table = (mod.TlvTable(layout.fields) if layout.mode == "tlv"
                         else mod.FieldTable(layout.fields, layout.mode))  # fmt: skip
                args = (start, end) if layout.mode == "tlv" else (start, end, origin)

                def decode(f=framer, t=table, r=reply, a=args) -> None:
                    t.decode(f.payload(r), *a)

                def both(f=framer, r=reply, d=decode) -> None:
                    f.scan(r)
                    d()

                rates += [rate(lambda f=framer, r=reply: f.scan(r), seconds), rate(decode, seconds),
                          rate(both, seconds)]  # fmt: skip
            rows.append((name, q.part, len(reply), rates))
    return rows


NOISE_BYTES = 64 * 1024
READ_BYTES = 64  # what one read of a stuck line brings


def false_start(framing: Any) -> bytes:
    """What starts a frame of ``framing``: its header, SOI, or an address and function code."""
    from bmsbank.native.spec import AsciiHex, FrameThenAck, ModbusRtu

    if isinstance(framing, FrameThenAck):
        framing = framing.frame
    if isinstance(framing, ModbusRtu):
        return bytes((framing.addresses[0], framing.functions[0]))
    return framing.soi if isinstance(framing, AsciiHex) else framing.header


def noise(seconds: float) -> list[tuple[str, list[float]]]:
    """(family, [ms compiled, ms twin] for zeros, random, false starts, zeros read by read)."""
    import random

    from bmsbank.native import _frames, _frames_py
    from bmsbank.native.spec import NONE, PARTIAL, Fixed, TextLine
    from bmsbank.services.poller import plugins
    from bmsbank.services.poller.plugins.base import LinkStats

    rnd = random.Random(11)
    rows = []
    for name in plugins.families():
        if plugins.info(name).link.startswith(("SPI", "CAN")):
            continue  # SPI words and CAN frames come whole: no line noise to skip
        plugin, queries, replies = sample(name)
        if isinstance(plugin.framing, (Fixed, TextLine)):
            continue  # no start byte: noise cannot be told from a reply (the family refuses it)
        frame = plugin.extract(bytearray(replies[queries[0].request]), LinkStats())
        unit = false_start(plugin.framing)
        streams = [bytes(NOISE_BYTES), rnd.randbytes(NOISE_BYTES),
                   unit * (NOISE_BYTES // len(unit))]  # fmt: skip
        assert frame is not None
        cells = []
        framers = [(mod.framer(plugin.framing), mod.take) for mod in (_frames, _frames_py)]
        for stream in streams:
            for framer, take in framers:

                def skip(f=framer, take=take, s=stream + frame) -> None:
                    buf = bytearray(s)  # the noise, then the frame: take all of it
                    while take(f, buf)[0] not in (NONE, PARTIAL):
                        pass

                cells.append(1000 / rate(skip, seconds, batch=1))
        for framer, take in framers:

            def stuck(f=framer, take=take) -> None:
                buf, zeros = bytearray(), bytes(READ_BYTES)
                for _ in range(NOISE_BYTES // READ_BYTES):
                    buf += zeros
                    take(f, buf)

            cells.append(1000 / rate(stuck, seconds, batch=1))
        rows.append((name, cells))
    return rows


def full_path(seconds: float) -> dict[str, float]:
    """Poll cycles per second through run_query + state, in this process's implementation."""
    from bmsbank.schema import pack, validate_state
    from bmsbank.services.poller import plugins
    from bmsbank.services.poller.plugins.base import LinkStats, run_query
    from bmsbank.state import make_state

    results = {}
    for name in plugins.families():
        if plugins.info(name).link == "CAN":
            continue  # no request/reply cycle on a serial link
        plugin, queries, replies = sample(name)
        address, stats, link = plugin.default_address, LinkStats(), Replay(replies)

        def cycle(plugin=plugin, queries=queries, address=address, stats=stats, link=link) -> None:
            parts: dict[str, Any] = {}
            for q in queries:
                parts[q.part] = run_query(plugin, link, q, address, parts, stats)
            fields = plugin.state(parts)
            pack(validate_state(make_state("p", address, plugin.name, 1, fields,
                                           stats.as_dict())))  # fmt: skip

        results[name] = rate(cycle, seconds)
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
    print(f"{'family':<9} {'part':<12} {'bytes':>5} | {'scan':>21} | {'payload + decode':>21} | "
          f"{'both':>21}")  # fmt: skip
    for name, part, size, r in codec(args.seconds):
        cells = [f"{r[i]:>9,.0f} {r[i + 3]:>7,.0f} {r[i] / r[i + 3]:>3.0f}x" for i in range(3)]
        print(f"{name:<9} {part:<12} {size:>5} | " + " | ".join(cells))
    print(f"\nline noise: ms to take {NOISE_BYTES // 1024} KiB of noise and the frame after it, "
          f"compiled, twin")  # fmt: skip
    heads = ["zeros", "random", "false starts", f"zeros, {READ_BYTES} B reads"]
    print(f"{'family':<9} | " + " | ".join(f"{h:>22}" for h in heads))
    for name, ms in noise(args.seconds):
        cells = [f"{ms[i]:>7.3f} {ms[i + 1]:>8.3f} {ms[i + 1] / ms[i]:>3.0f}x"
                 for i in range(0, 8, 2)]  # fmt: skip
        print(f"{name:<9} | " + " | ".join(cells))
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
    print("\nfull poller path per poll cycle: the cycle's reply bytes to the packed state message")
    print(f"{'family':<9} {'compiled/s':>12} {'twin/s':>10} {'ratio':>7} {'us/cycle':>9}")
    for name, c in runs["compiled"].items():
        t = runs["twin"][name]
        print(f"{name:<9} {c:>12,.0f} {t:>10,.0f} {c / t:>6.1f}x {1e6 / c:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
