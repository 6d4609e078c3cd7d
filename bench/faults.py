"""Fault campaign (issue 11, point 8): fuzz the decoders, poison the arbiter, kill services.

Not part of the test suite: it runs for minutes and prints figures (docs/RELIABILITY.md keeps the
latest). Parts (``--part``, default all):

- fuzz: every family's simulator replies mutated (checksums and lengths fixed up so mutations
  reach the decoder) through the poller's real path, compiled and twin, in subprocesses
  (bench/fault_fuzz.py); crashes, hangs, outcomes, accepted implausible states, disagreements.
- poison: a real arbiter process fed every bad message class over its states socket, the bank
  read from the tap (bench/fault_poison.py); crashes, rejections by reason, limits moved by one
  bad state, memory.
- kill: ``bmsbank demo`` with CAN over slcan and D-Bus, a random service killed -9 every 10 s,
  D-Bus and CAN read throughout (bench/fault_kill.py); 0x351 gaps, non-safe limits on stale
  data, restart times, other crashes.

    .venv/bin/python bench/faults.py [--part fuzz|poison|kill|all] [--replies N]
        [--twin-replies N] [--families jbd,daly] [--minutes M] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def families() -> list[str]:
    """Every family a serial port reaches (the ones fuzzed by default)."""
    sys.path.insert(0, os.path.dirname(HERE))
    from bmsbank.services.poller.scan import serial_families

    return sorted(serial_families())


def _child(family: str, count: int, seed: int, digests: str, pure: bool) -> subprocess.Popen:
    env = dict(os.environ, BMSBANK_PURE="1" if pure else "0")
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fault_fuzz.py"), family, str(count), str(seed),
         digests],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _read(path: str) -> array:
    out = array("I")
    with open(path, "rb") as fh:
        out.frombytes(fh.read())
    return out


def fuzz(families: list[str], replies: int, twin_replies: int, seed: int) -> list[dict[str, Any]]:
    """Both implementations per family, side by side; the rows of the fuzz table."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bmsbank-fuzz-") as tmp:
        for family in families:
            start = time.monotonic()
            paths = [os.path.join(tmp, f"{family}-{impl}.bin") for impl in ("compiled", "twin")]
            procs = [_child(family, replies, seed, paths[0], False),
                     _child(family, twin_replies, seed, paths[1], True)]  # fmt: skip
            results = []
            for proc in procs:
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    results.append({"failed": proc.returncode})
                else:
                    results.append(json.loads(out))
            compiled, twin = results
            disagree, first = 0, []
            if "failed" not in compiled and "failed" not in twin:
                a, b = _read(paths[0]), _read(paths[1])
                for i in range(min(len(a), len(b))):
                    if a[i] != b[i]:
                        disagree += 1
                        if len(first) < 5:
                            first.append(i)
            rows.append({"family": family, "compiled": compiled, "twin": twin,
                         "disagreements": disagree, "disagreeing_trials": first,
                         "seconds": time.monotonic() - start})  # fmt: skip
            print(_fuzz_line(rows[-1]), flush=True)
    return rows


def _bad(result: dict[str, Any], prefix: str) -> int:
    return sum(n for k, n in result.get("counts", {}).items() if k.startswith(prefix))


def _fuzz_line(row: dict[str, Any]) -> str:
    c, t = row["compiled"], row["twin"]
    if "failed" in c or "failed" in t:
        return f"{row['family']:<9} a child process failed: {c.get('failed')} {t.get('failed')}"
    counts = c["counts"]
    frame = sum(n for k, n in counts.items() if k.startswith(("frame:", "link:")))
    return (
        f"{row['family']:<9} {c['trials']:>9,} {t['trials']:>8,} {_bad(c, 'CRASH'):>6} "
        f"{_bad(t, 'CRASH'):>5} {_bad(c, 'HANG') + _bad(t, 'HANG'):>5} "
        f"{max(c['slowest_ms'], t['slowest_ms']):>7.1f} {frame:>9,} {counts.get('schema', 0):>8,} "
        f"{counts.get('implausible', 0):>7,} {counts.get('accepted_same', 0):>8,} "
        f"{counts.get('accepted_changed', 0):>8,} {_bad(c, 'ACCEPTED_IMPLAUSIBLE'):>6} "
        f"{row['disagreements']:>6}"
    )


FUZZ_HEADER = (
    f"{'family':<9} {'compiled':>9} {'twin':>8} {'crash':>6} {'twin':>5} {'hang':>5} "
    f"{'max ms':>7} {'frame/link':>9} {'schema':>8} {'caught':>7} {'same':>8} {'changed':>8} "
    f"{'implau':>6} {'disagr':>6}"
)
FUZZ_LEGEND = """\
compiled/twin: mutated replies run in each implementation (the twin runs the first N of the
  same stream); crash: exceptions other than FrameError/MessageError/LinkTimeout (compiled,
  twin); hang: a reply slower than 100 ms twice; max ms: slowest trial; then the compiled run's
  outcomes: frame/link = refused by the framer, a table, an address or sequence check, or
  incomplete; schema = state refused by validate_state; caught = refused by plausibility;
  same = accepted, equal to the clean cycle's state; changed = accepted with different values
  (plausible but not the truth); implau = accepted although outside the pack's plausible range
  (independent oracle; must be 0); disagr = trials whose outcome differs compiled vs twin."""


def print_fuzz(rows: list[dict[str, Any]]) -> None:
    """The fuzz table's details after its rows: examples of anything that must be zero."""
    for row in rows:
        for result in (row["compiled"], row["twin"]):
            for key, examples in result.get("examples", {}).items():
                for ex in examples[:3]:
                    print(f"  {row['family']} {result.get('impl')} {key}: {ex[:400]}")
        if row["disagreeing_trials"]:
            print(f"  {row['family']} first disagreeing trials: {row['disagreeing_trials']}")
        changed = row["compiled"].get("changed_fields", {})
        if changed:
            top = sorted(changed.items(), key=lambda kv: -kv[1])[:6]
            print(f"  {row['family']} fields of accepted changed states: "
                  + ", ".join(f"{k} {n:,}" for k, n in top))  # fmt: skip


def main() -> int:
    """Run the chosen parts and print their figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("fuzz", "poison", "kill", "all"), default="all")
    p.add_argument("--replies", type=int, default=1_000_000, help="per family, compiled")
    p.add_argument("--twin-replies", type=int, default=500_000, help="per family, twin")
    p.add_argument("--families", default=",".join(families()), help="default: every serial one")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--minutes", type=float, default=10.0, help="kill part's duration")
    p.add_argument("--kill-every", type=float, default=10.0, help="s between kills")
    p.add_argument("--json", help="also write every figure to this file")
    args = p.parse_args()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.part in ("fuzz", "all"):
        print(f"== fuzz: {args.replies:,} compiled and {args.twin_replies:,} twin replies per "
              f"family, seed {args.seed}")  # fmt: skip
        print(FUZZ_HEADER)
        rows = fuzz(args.families.split(","), args.replies, args.twin_replies, args.seed)
        print_fuzz(rows)
        print(FUZZ_LEGEND)
        report["fuzz"] = rows
    if args.part in ("poison", "all"):
        import fault_poison  # bench/ is on sys.path when a bench runs as a script

        report["poison"] = fault_poison.main()
    if args.part in ("kill", "all"):
        import fault_kill

        report["kill"] = fault_kill.main(args.minutes, args.kill_every, args.seed)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
