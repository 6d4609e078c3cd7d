"""``bmsbank record`` and ``bmsbank replay`` (docs/RECORD.md)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

from bmsbank import config as configuration
from bmsbank import runtime

PROG = "bmsbank"
TAP_HWM = 10000  # messages queued for the recorder while it writes (a few MiB at most)


def cmd_record(args: argparse.Namespace) -> int:
    """Store the tap's states and banks in a file, rotated by size."""
    import zmq

    from bmsbank import recording
    from bmsbank.schema import MAX_BANK_BYTES, TOPIC_BANK, TOPIC_STATE

    if not args.max_mb > 0 or args.keep < 0:
        return runtime.fail(PROG, "record: --max-mb must be above 0 and --keep at least 0", 2)
    config = configuration.load(args.config, args.runtime_dir)
    endpoint = args.tap or config.tap_endpoint
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, TAP_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_BANK_BYTES)  # bounds what one message may cost
    for topic in (TOPIC_STATE, TOPIC_BANK):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    runtime.exit_on_stop_signals()
    try:
        writer = recording.Writer(
            args.file, recording.header_for(config), int(args.max_mb * 1e6), args.keep
        )
    except OSError as exc:
        return runtime.fail(PROG, f"record: {args.file}: {exc.strerror}", 1)
    until = None if args.duration is None else time.monotonic() + args.duration
    print(f"{PROG}: recording {endpoint} to {args.file}", file=sys.stderr)
    tally = recording.Tally()
    try:
        tally = recording.record(sock, writer, until)
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
        sock.close()
    print(f"{PROG}: record: {writer.records} record(s), {writer.rotations} rotation(s), "
          f"{tally.bad} malformed message(s) skipped", file=sys.stderr)  # fmt: skip
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay recorded states through the engine; print the banks that differ (or all)."""
    import logging

    from bmsbank.recording import Reader, RecordingError
    from bmsbank.replay import COMPARED, Replay, Setup

    logging.getLogger("bmsbank").setLevel(logging.ERROR)
    try:
        readers = sorted((Reader(f) for f in args.files), key=lambda r: _created(r.header))
    except RecordingError as exc:
        return runtime.fail(PROG, f"replay: {exc}", 2)
    first = readers[0]
    if args.config:
        setup = Setup.from_config(args.config)
    else:
        setup = Setup.from_header(first.header, f"{first.path} (recorded [bank])")
    replay = Replay(setup)
    banks = differ = 0
    first_diff = None
    for result in replay.run(itertools.chain.from_iterable(r.records() for r in readers)):
        banks += 1
        if result.differs:
            differ += 1
            first_diff = first_diff or result.seq
        if result.differs or args.all:
            line = {"seq": result.seq, "mono": result.mono,
                    "recorded": {k: result.recorded.get(k) for k in COMPARED},
                    "replayed": {k: result.replayed[k] for k in COMPARED},
                    "differs": result.differs}  # fmt: skip
            print(json.dumps(line), flush=True)
    for problem in [p for r in readers for p in r.problems] + replay.problems:
        print(f"{PROG}: replay: warning: {problem}", file=sys.stderr)
    extra = f"; {replay.restarts} arbiter restart(s)" if replay.restarts else ""
    extra += f"; {replay.rejected} recorded state(s) refused" if replay.rejected else ""
    if differ:
        print(f"{PROG}: replay: {differ} of {banks} bank(s) differ (first: seq {first_diff})"
              f"{extra}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"{PROG}: replay: {banks} bank(s), limits and charge state equal{extra}",
          file=sys.stderr)  # fmt: skip
    return 0


def _created(header: dict[str, Any]) -> float:
    created = header.get("created")
    return float(created) if isinstance(created, (int, float)) else 0.0


def add_parsers(sub: Any) -> None:
    """The ``record`` and ``replay`` subcommands."""
    r = sub.add_parser("record", help="store the tap (states and banks) in a file, rotated",
                       description="Record the tap for a replay or a bug report (docs/RECORD.md). "
                       "Stops on Ctrl-C, SIGTERM or after --duration.")  # fmt: skip
    r.add_argument("file", help="the recording; older ones become FILE.1, FILE.2, ...")
    r.add_argument("--config", help="config file (default: $BMSBANK_CONFIG or /etc/bmsbank)")
    r.add_argument("--runtime-dir", help="runtime directory (overrides the config)")
    r.add_argument("--tap", help="tap endpoint (overrides the config)")
    r.add_argument("--max-mb", type=float, default=20.0, help="rotate at this size [MB] (20)")
    r.add_argument("--keep", type=int, default=4, help="older files kept (4)")
    r.add_argument("--duration", type=float, help="stop after SECONDS")
    r.set_defaults(func=cmd_record)
    p = sub.add_parser("replay", help="run recorded states through the engine, compare banks",
                       description="Exit code 0: every recorded bank's CVL, CCL, DCL and charge "
                       "state reproduced exactly; 1: some differ (printed as JSON lines); 2: "
                       "not a recording.")  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help="recording(s), any order")
    p.add_argument("--config", help="replay with this config's [bank] instead of the recorded")
    p.add_argument("--all", action="store_true", help="print every bank, not only differences")
    p.set_defaults(func=cmd_replay)
