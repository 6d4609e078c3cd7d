"""Fault campaign, part 3: kill -9 a random service every few seconds under ``bmsbank demo``.

The demo runs its eleven simulated packs, pollers, arbiter and publisher under supervisord, CAN
over slcan on a pty and D-Bus on a private bus. Every ``kill_every`` seconds one service process
(arbiter, publisher or a poller process) chosen at random is killed with SIGKILL; supervisord
restarts it. Meanwhile, each in its own thread:

- the tap: every bank (arrival time, limits, which packs it counts online) and every state
  (its port's poller run, ``epoch``);
- CAN: a python-can slcan reader on the demo's far end; every 0x351 frame (time, CVL, CCL, DCL);
- D-Bus: the bank service's /Info/MaxChargeVoltage, /Info/MaxChargeCurrent and
  /Info/MaxDischargeCurrent every DBUS_EVERY seconds (or that the service is absent);
- supervisord (its XML-RPC socket): every program's pid, to see restarts nobody caused.

Figures: the largest gap between 0x351 frames (the GX stops at 3 s), the longest time the
outputs showed non-safe limits (CCL or DCL > 0) on bank data older than ``stale_after``, the
time each killed service took to be running and working again, cuts of the limits, and crashes
of anything that was not killed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

import can
import zmq
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from supervisor.xmlrpc import SupervisorTransport

from bmsbank.demo import DEMO_OWN_PROCESS, DEMO_PORTS
from bmsbank.schema import TOPIC_BANK, unpack

SERVICE = "com.victronenergy.battery.bmsbank"
DBUS_EVERY = 0.25  # s between D-Bus reads
STALE_AFTER = 10.0  # s, the demo's [bank] stale_after
PACKS = sum(len(port[2]) for port in DEMO_PORTS)
#: poller program -> its ports (the demo's process plan)
POLLERS = {f"poller-{name}": {name} for name in DEMO_OWN_PROCESS} | {
    "poller-shared": {p[0] for p in DEMO_PORTS if p[0] not in DEMO_OWN_PROCESS}
}
SERVICES = ("arbiter", "publisher", *sorted(POLLERS))


@dataclass
class Record:
    """What the readers saw, each list in arrival order with monotonic times."""

    banks: list[tuple[float, int, float, float, int]] = field(default_factory=list)
    #: (time, port, epoch) of every state on the tap
    states: list[tuple[float, str, int]] = field(default_factory=list)
    #: (time, cvl, ccl, dcl) of every 0x351 frame
    can: list[tuple[float, float, float, float]] = field(default_factory=list)
    #: (time, cvl, ccl, dcl) or (time, None...) when the service is absent
    dbus: list[tuple[float, Any, Any, Any]] = field(default_factory=list)
    #: (time, program, pid) whenever a program's pid changes
    pids: list[tuple[float, str, int]] = field(default_factory=list)
    kills: list[tuple[float, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_tap(rundir: str, rec: Record, stop: threading.Event) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"ipc://{rundir}/tap.ipc")
    try:
        while not stop.is_set():
            if not sub.poll(200):
                continue
            topic, body = sub.recv_multipart()
            now = time.monotonic()
            msg = unpack(body)
            if topic == TOPIC_BANK:
                rec.banks.append((now, msg["seq"], msg["ccl"], msg["dcl"], msg["online"]))
            else:
                rec.states.append((now, msg["port"], msg["epoch"]))
    finally:
        sub.close(0)
        ctx.term()


def read_can(peer: str, rec: Record, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with can.Bus(interface="slcan", channel=peer, sleep_after_open=0) as bus:
                while not stop.is_set():
                    msg = bus.recv(0.2)
                    if msg is not None and msg.arbitration_id == 0x351:
                        d = bytes(msg.data)
                        rec.can.append((time.monotonic(), int.from_bytes(d[0:2], "little") / 10,
                                        int.from_bytes(d[2:4], "little") / 10,
                                        int.from_bytes(d[4:6], "little") / 10))  # fmt: skip
        except (can.CanError, OSError) as exc:
            rec.errors.append(f"CAN reader: {exc}")
            time.sleep(0.5)


async def _read_dbus(address: str, rec: Record, stop: threading.Event) -> None:
    paths = ("/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent")
    while not stop.is_set():
        try:
            bus = await MessageBus(bus_address=address).connect()
        except OSError as exc:
            rec.errors.append(f"D-Bus connect: {exc}")
            await asyncio.sleep(0.5)
            continue
        try:
            while not stop.is_set():
                values: list[Any] = []
                for path in paths:
                    reply = await bus.call(Message(destination=SERVICE, path=path,
                                                   interface="com.victronenergy.BusItem",
                                                   member="GetValue"))  # fmt: skip
                    if reply.message_type != MessageType.METHOD_RETURN:
                        break  # the service is absent (its publisher is restarting)
                    values.append(reply.body[0].value)
                now = time.monotonic()
                rec.dbus.append((now, *values) if len(values) == 3 else (now, None, None, None))
                await asyncio.sleep(DBUS_EVERY)
        except Exception as exc:  # noqa: BLE001 - the reader keeps reading whatever happens
            rec.errors.append(f"D-Bus reader: {exc!r}")
        finally:
            bus.disconnect()


def read_dbus(address: str, rec: Record, stop: threading.Event) -> None:
    asyncio.run(_read_dbus(address, rec, stop))


def supervisor(rundir: str) -> Any:
    transport = SupervisorTransport(None, None, serverurl=f"unix://{rundir}/supervisor.sock")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def pids(proxy: Any) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in proxy.supervisor.getAllProcessInfo()}


def watch_pids(rundir: str, rec: Record, stop: threading.Event) -> None:
    proxy = supervisor(rundir)
    last: dict[str, int] = {}
    while not stop.is_set():
        try:
            now_pids = pids(proxy)
        except Exception as exc:  # noqa: BLE001 - supervisord busy; next round
            rec.errors.append(f"supervisor: {exc!r}")
            now_pids = last
        for name, pid in now_pids.items():
            if last.get(name) != pid:
                rec.pids.append((time.monotonic(), name, pid))
        last = now_pids
        stop.wait(0.2)


def run(minutes: float, kill_every: float, seed: int) -> dict[str, Any]:
    """Run the demo, kill services, read everything; return the figures."""
    rundir = tempfile.mkdtemp(prefix="bmsbank-kill-")
    env = dict(os.environ)
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    duration = minutes * 60
    demo = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.cli", "demo", "--runtime-dir", rundir,
         "--duration", str(duration + 120)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    rec = Record()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + 60
        while not all(os.path.exists(f"{rundir}/{f}") for f in ("supervisor.sock", "can-peer",
                                                                  "dbus.sock", "tap.ipc")):
            if time.monotonic() > deadline or demo.poll() is not None:
                raise RuntimeError("the demo did not start")
            time.sleep(0.2)
        time.sleep(1.0)
        readers = ((read_tap, rundir), (read_can, f"{rundir}/can-peer"),
                   (read_dbus, f"unix:path={rundir}/dbus.sock"), (watch_pids, rundir))  # fmt: skip
        for fn, arg in readers:
            t = threading.Thread(target=fn, args=(arg, rec, stop), daemon=True)
            t.start()
            threads.append(t)
        while not (rec.banks and rec.banks[-1][4] == PACKS):
            if time.monotonic() > deadline + 60:
                raise RuntimeError("the demo's packs did not come online")
            time.sleep(0.2)
        time.sleep(3.0)  # the outputs settle
        start = time.monotonic()
        rng = random.Random(seed)
        proxy = supervisor(rundir)
        while time.monotonic() < start + duration:
            name = rng.choice(SERVICES)
            pid = pids(proxy)[name]
            if pid:
                os.kill(pid, signal.SIGKILL)
                rec.kills.append((time.monotonic(), name, pid))
            time.sleep(max(0.0, start + len(rec.kills) * kill_every - time.monotonic()))
        time.sleep(5.0)  # the last one comes back
        end = time.monotonic()
        demo_alive = demo.poll() is None
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
        try:
            demo.wait(90)
        except subprocess.TimeoutExpired:
            demo.kill()
    time.sleep(0.5)
    r = figures(rec, start, end, demo_alive, demo.returncode, rundir)
    r["left_behind"] = processes_using(rundir)
    return r


def processes_using(path: str) -> list[str]:
    """Live processes whose command line mentions ``path`` (what the demo left running)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in args:
            found.append(f"{pid} {args[:120]}")
    return found


def _first(items: list, after: float, pred: Any) -> float | None:
    for item in items:
        if item[0] > after and pred(item):
            return item[0]
    return None


def _bank_age(banks: list, t: float, k: int) -> tuple[float, int]:
    """Age at ``t`` of the newest bank that arrived by then (banks[k:] scanned from k)."""
    while k + 1 < len(banks) and banks[k + 1][0] <= t:
        k += 1
    return t - banks[k][0], k


def figures(rec: Record, start: float, end: float, demo_alive: bool, code: Any,
            rundir: str) -> dict[str, Any]:  # fmt: skip
    """The campaign's figures from what the readers recorded."""
    can_t = [t for t, *_ in rec.can if start <= t <= end]
    gaps = [b - a for a, b in zip(can_t, can_t[1:], strict=False)]
    # non-safe limits shown while the bank data was stale
    stale_max = 0.0  # s beyond stale_after
    age_max = 0.0  # oldest bank data seen behind non-safe limits
    k = 0
    outputs = sorted([(t, ccl, dcl, "can") for t, _, ccl, dcl in rec.can]
                     + [(t, ccl, dcl, "dbus") for t, _, ccl, dcl in rec.dbus
                        if ccl is not None])  # fmt: skip
    invalid = sum(1 for _, cvl, ccl, dcl in rec.dbus if cvl is not None
                  and not all(isinstance(x, float) for x in (cvl, ccl, dcl)))  # fmt: skip
    for t, ccl, dcl, _ in outputs:
        if not start <= t <= end or not rec.banks or rec.banks[0][0] > t:
            continue
        age, k = _bank_age(rec.banks, t, k)
        if ccl > 0 or dcl > 0:
            age_max = max(age_max, age)
            stale_max = max(stale_max, age - STALE_AFTER)
    # limits cut on CAN (CCL or DCL = 0): episodes
    cuts, cut_since = [], None
    for t, _, ccl, dcl in rec.can:
        if not start <= t <= end:
            continue
        if (ccl == 0 or dcl == 0) and cut_since is None:
            cut_since = t
        elif ccl > 0 and dcl > 0 and cut_since is not None:
            cuts.append(t - cut_since)
            cut_since = None
    if cut_since is not None:
        cuts.append(end - cut_since)
    absent, absent_since = [], None
    for t, cvl, *_ in rec.dbus:
        if start <= t <= end:
            if cvl is None and absent_since is None:
                absent_since = t
            elif cvl is not None and absent_since is not None:
                absent.append(t - absent_since)
                absent_since = None
    # recovery per kill
    recovery: dict[str, list[tuple[float, float | None]]] = {s: [] for s in SERVICES}
    #: per service, per kill: how far CCL and DCL on CAN fell below their value before the kill
    #: until the next kill [A] (a restart that cuts what no pack justifies shows here)
    drops: dict[str, list[tuple[float, float]]] = {s: [] for s in SERVICES}
    times = [k[0] for k in rec.kills] + [end]
    killed = {pid for _, _, pid in rec.kills}
    for n, (t, name, pid) in enumerate(rec.kills):
        before = [c for c in rec.can if c[0] <= t][-1:]
        after = [c for c in rec.can if t < c[0] <= times[n + 1]]
        if before and after:
            drops[name].append((before[0][2] - min(c[2] for c in after),
                                before[0][3] - min(c[3] for c in after)))  # fmt: skip
        back = _first(rec.pids, t, lambda r, n=name, p=pid: r[1] == n and r[2] not in (0, p))
        if name == "arbiter":
            before = max((b[1] for b in rec.banks if b[0] <= t), default=0)
            works = _first(rec.banks, t, lambda b, s=before: b[1] < s)
        elif name == "publisher":
            works = _first(rec.can, (back or t) + 0.01, lambda _c: True)
        else:
            ports = POLLERS[name]
            old = {port: epoch for when, port, epoch in rec.states if when <= t and port in ports}
            works = _first(rec.states, t, lambda s, o=old: s[1] in o and s[2] != o[s[1]])
        recovery[name].append(((back - t) if back else float("inf"),
                               (works - t) if works else None))  # fmt: skip
    # restarts nobody caused: a pid change of a program whose previous pid was not killed
    crashes = []
    seen: dict[str, int] = {}
    for t, name, pid in rec.pids:
        prev = seen.get(name)
        if prev and pid and prev != pid and prev not in killed and start <= t <= end:
            crashes.append(f"{name} (pid {prev} -> {pid})")
        if pid:
            seen[name] = pid
    if not demo_alive:
        crashes.append(f"the demo itself exited ({code})")
    return {
        "minutes": (end - start) / 60, "kills": len(rec.kills),
        "can_frames": len(can_t), "max_0x351_gap": max(gaps, default=float("inf")),
        "gaps_over_3s": sum(1 for g in gaps if g > 3.0),
        "max_bank_age_non_safe": age_max, "max_non_safe_beyond_stale": max(0.0, stale_max),
        "dbus_samples": len(rec.dbus), "dbus_invalid": invalid,
        "dbus_absent_total": sum(absent), "dbus_absent_max": max(absent, default=0.0),
        "cuts": len(cuts), "cut_total": sum(cuts), "cut_max": max(cuts, default=0.0),
        "recovery": recovery, "drops": drops, "crashes": crashes, "errors": rec.errors[:10],
        "demo_exit": code, "rundir": rundir,
    }  # fmt: skip


def main(minutes: float, kill_every: float, seed: int) -> dict[str, Any]:
    """Run the part and print its table."""
    print(f"\n== kill: bmsbank demo ({PACKS} packs, CAN over slcan, D-Bus), kill -9 of a random "
          f"service every {kill_every:g} s for {minutes:g} min")  # fmt: skip
    r = run(minutes, kill_every, seed)
    print(f"{'service':<14} {'kills':>5} {'running again s (max)':>21} "
          f"{'working again s (median / max)':>30} {'CCL / DCL drop A (max)':>22}")  # fmt: skip
    for name, rows in r["recovery"].items():
        if not rows:
            continue
        running = max(b for b, _ in rows)
        works = [w for _, w in rows if w is not None]
        never = sum(1 for _, w in rows if w is None)
        work = (f"{statistics.median(works):.2f} / {max(works):.2f}" if works else "-")
        drops = r["drops"][name]
        drop = (f"{max(d[0] for d in drops):.1f} / {max(d[1] for d in drops):.1f}"
                if drops else "-")  # fmt: skip
        print(f"{name:<14} {len(rows):>5} {running:>21.2f} {work:>30} {drop:>22}"
              + (f"  ({never} never seen working)" if never else ""))  # fmt: skip
    print(f"0x351: {r['can_frames']} frames in {r['minutes']:.1f} min, max gap "
          f"{r['max_0x351_gap']:.2f} s (the GX stops at 3 s), gaps over 3 s: {r['gaps_over_3s']}")
    print(f"non-safe limits (CCL or DCL > 0) on CAN or D-Bus while the bank data was older than "
          f"stale_after ({STALE_AFTER:g} s): max {r['max_non_safe_beyond_stale']:.2f} s; oldest "
          f"bank data behind non-safe limits: {r['max_bank_age_non_safe']:.2f} s")
    print(f"D-Bus: {r['dbus_samples']} reads, limits not numbers: {r['dbus_invalid']}, service "
          f"absent {r['dbus_absent_total']:.1f} s in total (longest {r['dbus_absent_max']:.2f} s)")
    print(f"limits cut on CAN (CCL or DCL = 0): {r['cuts']} times, {r['cut_total']:.1f} s in "
          f"total, longest {r['cut_max']:.1f} s")
    print(f"crashes of anything not killed: {len(r['crashes'])} {r['crashes'] or ''}")
    left = r["left_behind"]
    print(f"processes left after the demo stopped: {len(left)}{f' {left}' if left else ''}; "
          f"logs: {r['rundir']}/log")
    if r["errors"]:
        print(f"reader errors: {r['errors']}")
    print("running again: until supervisord shows a new pid; working again: arbiter = its first\n"
          "  bank on the tap, publisher = the next 0x351 frame after its new pid, poller = a\n"
          "  state of one of its ports from its new run (epoch); CCL / DCL drop: how far the\n"
          "  limits on CAN fell below their value before the kill, until the next kill")
    return r
