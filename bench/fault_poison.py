"""Fault campaign, part 2: a real arbiter process fed every bad message class of issue 11.

The arbiter (``python -m bmsbank.services.arbiter``, ipc:// sockets in a temporary runtime
directory) runs a bank of two parallel 16-cell packs, ``p:1`` and ``p:2``, fed good states
every FEED_EVERY seconds each by one PUSH socket. Once its limits are steady, each class of bad
messages goes in through a second PUSH socket (an oversize message makes the arbiter drop that
connection, never the feeder's), the good states continue, and every bank on the tap is
compared with the steady limits (CVL, CCL, DCL, charge state): a bank that differs while one bad
state is in flight is a limit moved by a single bad state (must be none). A sustained fault (the
charge FET reported off in every state) is the control: it must move CCL.

Counted: arbiter crashes, rejections by reason (the bank's per-pack ``rejected``), bad messages
that reached the tap (accepted), the ``lost`` counter, peak resident memory (VmHWM).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from bmsbank.schema import TOPIC_BANK, TOPIC_STATE, pack, unpack
from bmsbank.state import make_state

FEED_EVERY = 0.25  # s between good states of one pack
INTERVAL = 0.2  # s, the arbiter's bank interval here
PACE = 0.004  # s between two bad messages of a class
SETTLE = 1.5  # s of good states after a class before its banks are judged done
PACKS = ("p:1", "p:2")
CELLS = 16


def good_fields(**over: Any) -> dict[str, Any]:
    """A healthy 16-cell LiFePO4 reading (what a poller would decode), with overrides."""
    cells = over.pop("cells", [3.30 + 0.001 * (k % 3) for k in range(CELLS)])
    fields = {
        "voltage": round(sum(cells), 3), "current": 5.0, "soc": 60.0, "capacity": 100.0,
        "remaining": 60.0, "cycles": 3, "cells": cells, "balancing": [0] * len(cells),
        "temperatures": [25.0, 26.0], "charge_fet": True, "discharge_fet": True,
        "alarms": {"high_cell_voltage": 0, "low_cell_voltage": 0},
    }  # fmt: skip
    fields.update(over)
    return fields


class Feeder:
    """The good pollers: a rising sequence per pack, one epoch, states on time."""

    def __init__(self, push: zmq.Socket) -> None:
        self.push = push
        self.epoch = time.time_ns() // 1000
        self.seq = 0
        self.next_at = 0.0
        self.sent: set[bytes] = set()
        self.override: dict[str, dict[str, Any]] = {}  #: pack -> fields of a sustained fault

    def state(self, pid: str, **over: Any) -> dict[str, Any]:
        """A state of ``pid`` with the next sequence number (fields overridden).

        Bad states take numbers too (the arbiter counts them as lost when it rejects them).
        """
        port, address = pid.split(":")
        self.seq = seq = self.seq + 1
        fields = good_fields(**{**self.override.get(pid, {}), **over})
        return make_state(port, int(address), "jbd", seq, fields, {"ok": seq},
                          epoch=self.epoch)  # fmt: skip

    def tick(self) -> None:
        """Send every pack's good state when due."""
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + FEED_EVERY
        for pid in PACKS:
            body = pack(self.state(pid))
            self.sent.add(body)
            self.push.send_multipart([TOPIC_STATE, body])


class Campaign:
    """The arbiter, its sockets and what was seen on the tap."""

    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.config = os.path.join(rundir, "bmsbank.toml")
        packs = "".join(f'[bank.packs."{p}"]\ncells = {CELLS}\ncapacity = 100.0\n' for p in PACKS)
        with open(self.config, "w", encoding="utf-8") as fh:
            fh.write(
                f'runtime_dir = "{rundir}"\n[bank]\nstrings = [["p:1"], ["p:2"]]\n'
                f'interval = {INTERVAL}\nstate_file = ""\ncurrent_hold = 0.0\n'
                f"current_ramp = 1000.0\n{packs}"
            )
        self.proc = self._start()
        self.crashes = 0
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"ipc://{rundir}/tap.ipc")
        self.feed = self.ctx.socket(zmq.PUSH)
        self.feed.connect(f"ipc://{rundir}/states.ipc")
        self.feeder = Feeder(self.feed)
        self.bad = self._bad_socket()
        self.banks: list[tuple[float, dict[str, Any]]] = []
        self.tap_states: dict[bytes, int] = {}
        self.peak_rss = 0

    def _start(self) -> subprocess.Popen:
        with open(os.path.join(self.rundir, "arbiter.log"), "ab") as log:  # the child keeps it
            proc = subprocess.Popen([sys.executable, "-m", "bmsbank.services.arbiter",
                                     "--config", self.config], stderr=log)  # fmt: skip
        deadline = time.monotonic() + 20
        while not os.path.exists(f"{self.rundir}/tap.ipc"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the arbiter did not start")
            time.sleep(0.05)
        return proc

    def _bad_socket(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.connect(f"ipc://{self.rundir}/states.ipc")
        return s

    def send_bad(self, parts: list[bytes]) -> None:
        """Send one bad message; a fresh socket after an oversize one (the arbiter drops it)."""
        self.bad.send_multipart(parts)
        if sum(map(len, parts)) > 4096:
            time.sleep(0.05)
            self.bad.close(0)
            self.bad = self._bad_socket()

    def pump(self, seconds: float, feed: bool = True) -> None:
        """Feed good states (unless not ``feed``) and read the tap for ``seconds``.

        Notes crashes (and restarts the arbiter) and its peak memory.
        """
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            if feed:
                self.feeder.tick()
            if self.sub.poll(max(1, int((min(end, self.feeder.next_at) - now) * 1000))):
                topic, body = self.sub.recv_multipart()
                if topic == TOPIC_BANK:
                    self.banks.append((time.monotonic(), unpack(body)))
                else:
                    self.tap_states[body] = self.tap_states.get(body, 0) + 1
            if self.proc.poll() is not None:
                self.crashes += 1
                self.proc = self._start()
        self.peak_rss = max(self.peak_rss, _status(self.proc.pid, "VmHWM"))

    def bad_on_tap(self) -> list[bytes]:
        """Bodies on the tap that no good poller sent, or sent once and seen twice."""
        return [b for b, n in self.tap_states.items() if b not in self.feeder.sent or n > 1]

    def limits(self, since: float) -> list[tuple]:
        """(cvl, ccl, dcl, charge state, online) of every bank after monotonic ``since``."""
        return [(b["cvl"], b["ccl"], b["dcl"], b["charge_state"], b["online"])
                for t, b in self.banks if t >= since]  # fmt: skip

    def steady(self, timeout: float = 60.0) -> tuple:
        """Wait until five banks in a row have the same limits with both packs online."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(INTERVAL)
            last = self.limits(0.0)[-5:]
            if len(last) == 5 and len(set(last)) == 1 and last[0][4] == len(PACKS):
                return last[0]
        raise RuntimeError(f"limits not steady: {self.limits(0.0)[-5:]}")

    def close(self) -> None:
        self.sub.close(0)
        self.feed.close(0)
        self.bad.close(0)
        self.ctx.term()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def _status(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- the message classes --------------------------------------------------------------------
WRONG_VALUES: tuple[Any, ...] = ("x", [1.0], {"a": 1}, None, True, 2**63, b"\x00", 1.5)
#: body of a bad message -> what is wrong with it (for the ones that reach the tap)
LABELS: dict[bytes, str] = {}


Message = list[bytes]


def _same_kind(a: Any, b: Any) -> bool:
    """Whether ``b`` is of the kind ``a`` is (a number for a number, None for None, ...)."""
    number = (int, float)
    if a is None:
        return b is None or (isinstance(b, number) and not isinstance(b, bool))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    if isinstance(a, number):
        return isinstance(b, number)
    return type(a) is type(b)


def classes(f: Feeder) -> list[tuple[str, bool, Callable[[], list[Message]]]]:
    """(name, single: one bad state at a time among good ones, messages to send).

    Where a class changes one field per message, ``labels`` maps the message's body to the field.
    """

    def raw(msg: Any) -> list[bytes]:
        return [TOPIC_STATE, msgpack.packb(msg, use_bin_type=True)]

    def each_field(value: Callable[[str], Any], kind: str = "") -> list[Message]:
        out = []
        for key in list(f.state("p:1")):
            msg = f.state("p:1")
            new = value(key)
            if kind == "wrong type" and _same_kind(msg[key], new):
                continue  # not a wrong type for this field
            msg[key] = new
            out.append(raw(msg))
            LABELS[out[-1][1]] = f"{key}={new!r}"[:60]
        return out

    def wrong_types() -> list[Message]:
        out = []
        for v in WRONG_VALUES:
            out += each_field(lambda _k, v=v: v, "wrong type")
        return out

    def missing() -> list[Message]:
        out = []
        for key in list(f.state("p:1")):
            msg = f.state("p:1")
            del msg[key]
            out.append(raw(msg))
            LABELS[out[-1][1]] = f"no {key}"
        return out

    def one(**over: Any) -> Callable[[], list[list[bytes]]]:
        return lambda: [raw(f.state("p:1", **over))]

    def one_raw(**over: Any) -> Callable[[], list[list[bytes]]]:
        return lambda: [raw(f.state("p:1") | over)]

    def timed(shift: float) -> Callable[[], list[list[bytes]]]:
        def build() -> list[list[bytes]]:
            msg = f.state("p:1")
            msg["time"] += shift
            return [raw(msg)]

        return build

    def seq(value: int, epoch: int | None = None) -> Callable[[], list[list[bytes]]]:
        def build() -> list[list[bytes]]:
            msg = f.state("p:1")
            msg["seq"] = value
            if epoch is not None:
                msg["epoch"] = epoch
            return [raw(msg)]

        return build

    def replay() -> list[list[bytes]]:
        return [[TOPIC_STATE, body] for body in list(f.sent)[:50]]

    def backwards() -> list[list[bytes]]:
        return [raw(f.state("p:1") | {"seq": max(1, f.seq - 10)})]

    def unknown() -> list[list[bytes]]:
        return [raw(f.state("p:1") | {"extra": 1}),
                raw(f.state("p:1") | {f"k{i}": i for i in range(300)})]  # fmt: skip

    def huge_lists() -> list[list[bytes]]:
        return [raw(f.state("p:1", cells=[3.3] * 65, balancing=[0] * 65)),
                raw(f.state("p:1", temperatures=[25.0] * 17)),
                raw(f.state("p:1", cells=[3.3] * 100_000)),
                raw(f.state("p:1") | {"hardware": "x" * 100_000})]  # fmt: skip

    def oversize() -> list[list[bytes]]:
        return [[TOPIC_STATE, os.urandom(10 << 20)],
                raw(f.state("p:1") | {"hardware": "x" * (10 << 20)}),
                [TOPIC_STATE, b"\xdd\xff\xff\xff\xff"]]  # a msgpack array header of 4 G items

    def garbage() -> list[list[bytes]]:
        return [[TOPIC_STATE, b"\xc1"], [TOPIC_STATE, os.urandom(200)], [b"state"],
                [TOPIC_STATE, b"x", b"y"], [b"bank", pack(f.state("p:1"))], raw([1, 2]),
                raw(7), raw({1: 2}), [TOPIC_STATE, b""]]  # fmt: skip

    nan = float("nan")
    return [
        ("NaN at every field", False, lambda: each_field(lambda _k: nan)),
        ("+inf at every field", False, lambda: each_field(lambda _k: math.inf)),
        ("-inf at every field", False, lambda: each_field(lambda _k: -math.inf)),
        ("NaN cell", True, one(cells=[nan] + [3.3] * 15)),
        ("wrong type at every field", False, wrong_types),
        ("missing field, each", False, missing),
        ("unknown fields", False, unknown),
        ("huge lists and texts", False, huge_lists),
        ("oversize (10 MB)", False, oversize),
        ("not a state (garbage, parts)", False, garbage),
        ("replayed states", False, replay),
        ("backwards seq", True, backwards),
        ("seq 2^63-1", True, seq(2**63 - 1)),
        ("new epoch, seq 2^63-1", True, seq(2**63 - 1, epoch=f.epoch + 1)),
        ("far-future time (+1 day)", True, timed(86400.0)),
        ("far-past time (-1 day)", True, timed(-86400.0)),
        ("cell 5.9 V", True, one(cells=[5.9] + [3.3] * 15)),
        ("cell 0 V", True, one(cells=[0.0] + [3.3] * 15)),
        ("10,000 A", True, one(current=10000.0)),
        ("526 V pack", True, one(voltage=526.0)),
        ("port disagrees with pack id", True, one_raw(port="q")),
        ("address disagrees with pack id", True, one_raw(address=9)),
        ("bms not the pack's family", True, one_raw(bms="daly")),
        ("one cut: cell 3.70 V", True, one(cells=[3.70] + [3.30] * 15)),
        ("one cut: cell 2.70 V", True, one(cells=[2.70] + [3.30] * 15)),
        ("one cut: charge FET off", True, one(charge_fet=False)),
        ("one cut: discharge FET off", True, one(discharge_fet=False)),
        ("one cut: 60 degC", True, one(temperatures=[60.0, 26.0])),
        ("one cut: -10 degC", True, one(temperatures=[-10.0, 26.0])),
    ]


def run() -> dict[str, Any]:
    """Every class against one arbiter; the figures."""
    rundir = tempfile.mkdtemp(prefix="bmsbank-poison-")  # kept: the arbiter's log is there
    c = Campaign(rundir)
    rows = []
    try:
        c.pump(1.0)
        base = c.steady()
        for name, single, build in classes(c.feeder):
            c.pump(FEED_EVERY / 2)  # between two good states
            rejected_before = c.banks[-1][1]["counters"]["rejected"] if c.banks else 0
            tapped_before = set(c.bad_on_tap())
            t0 = time.monotonic()
            messages = build()
            for parts in messages:
                LABELS.setdefault(parts[-1], name)
            for parts in messages:
                c.send_bad(parts)
                # below the sequence rate a poller may send (no jump); the good states wait
                # (the burst's sequence numbers were taken when it was built)
                c.pump(PACE, feed=False)
            # two ticks before good states follow: the arbiter reads its connections in turn,
            # so a good state sent now could be taken before the burst's last ones
            c.pump(2 * INTERVAL, feed=False)
            c.pump(SETTLE)
            seen = c.limits(t0)
            moved = [lim for lim in seen if lim != base]
            rejected = c.banks[-1][1]["counters"]["rejected"] - rejected_before
            tapped = [b for b in c.bad_on_tap() if b not in tapped_before]
            rows.append({"class": name, "sent": len(messages), "rejected": rejected,
                         "moved": len(moved), "first_moved": moved[:1], "single": single,
                         "on_tap": len(tapped),
                         "on_tap_what": sorted({LABELS.get(b, "?") for b in tapped})})  # fmt: skip
            if moved:
                base = c.steady()
        # the control: a fault the pack keeps reporting must act
        t0 = time.monotonic()
        c.feeder.override["p:1"] = {"charge_fet": False}
        c.pump(3.0)
        cut = [t - t0 for t, b in c.banks if t >= t0 and b["ccl"] < base[1]]
        c.feeder.override.clear()
        c.pump(1.0)
        last = c.banks[-1][1]
        reasons: dict[str, int] = {}
        for p in last["packs"]:
            for k, n in p["rejected"].items():
                reasons[k] = reasons.get(k, 0) + n
        accepted_bad = len(c.bad_on_tap())
        return {"classes": rows, "crashes": c.crashes, "counters": last["counters"],
                "reasons": reasons, "accepted_bad": accepted_bad, "peak_rss": c.peak_rss,
                "sustained_cut_after": cut[0] if cut else None, "base": base,
                "log": os.path.join(rundir, "arbiter.log")}  # fmt: skip
    finally:
        c.close()


def main() -> dict[str, Any]:
    """Run the part and print its table."""
    print("\n== poison: a real arbiter, two 16-cell packs fed every 0.25 s, bank every 0.2 s")
    r = run()
    print(f"{'class':<32} {'sent':>5} {'rejected':>8} {'on tap':>6} {'banks moved':>11}")
    for row in r["classes"]:
        print(f"{row['class']:<32} {row['sent']:>5} {row['rejected']:>8} {row['on_tap']:>6} "
              f"{row['moved']:>11}"
              + (f"  first: {row['first_moved'][0]}" if row["moved"] else "")
              + (f"  on tap: {', '.join(row['on_tap_what'])}" if row["on_tap"] else "")
              )  # fmt: skip
    moved_single = sum(1 for row in r["classes"] if row["moved"] and row["single"])
    moved_any = sum(1 for row in r["classes"] if row["moved"])
    print(f"arbiter crashes: {r['crashes']}; classes whose banks moved: {moved_any} (single bad "
          f"state: {moved_single}, must be 0); bad states on the tap: {r['accepted_bad']}")
    print(f"rejected by reason (per pack, summed): {r['reasons']}")
    print(f"bank counters: {r['counters']}")
    sustained = r["sustained_cut_after"]
    print(f"control, charge FET off in every state: CCL cut after "
          f"{'never' if sustained is None else f'{sustained:.2f} s'} (must act)")
    print(f"arbiter peak RSS (VmHWM): {r['peak_rss'] / 2**20:.1f} MiB; its log: {r['log']}")
    print("rejected: the bank's 'rejected' counter's rise (a message dropped at the socket for\n"
          "  its size is not counted); on tap: bad messages the arbiter accepted and re-published\n"
          "  (what was wrong with them after the row); banks moved: banks during the class and\n"
          "  1.5 s after whose CVL, CCL, DCL, charge state or online count differ from the steady\n"
          "  ones (must be 0 where one bad state is sent among good ones)")
    return r
