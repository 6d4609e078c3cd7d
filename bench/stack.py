"""The whole stack under supervisord: CPU per pack-update per process, D-Bus cost, memory, start-up.

For each configuration (N packs; per-pack D-Bus services on or off; CAN output on or off) this
starts what an installation runs -- supervisord with the poller process(es), the arbiter and the
publisher, exactly as ``bmsbank supervisor-config`` renders them -- against N simulated JBD packs
(16 cells, each on its own pseudo-terminal, 1 s poll; the simulators run in this process, so
their CPU is not counted) and a private dbus-daemon. After a warm-up it reads, over a fixed
window:

- CPU per process from ``/proc/<pid>/schedstat`` (time on a CPU, ns), divided by the pack-updates
  in the window (state messages counted on the tap): pollers, arbiter, publisher, supervisord,
  and the dbus-daemon;
- D-Bus signals per update (``dbus-monitor`` in its own process: BusItem signals of the bank
  service per bank message, of the pack services per state);
- memory of the stack's processes from ``/proc/<pid>/smaps_rollup``: USS (private), PSS, RSS;
- start-up: seconds from starting supervisord to the bank's ``/Info/MaxChargeVoltage`` answering
  on D-Bus.

The issue that asked for it (10) measured the incumbent Venus driver at 3.96 ms per pack-update
for 8 JBD packs on this kind of machine; the table prints the ratio against that figure.

    .venv/bin/python bench/stack.py [--packs 1,4,8,16] [--window 30] [--warmup 10]
        [--pack-services on,off] [--can off,on] [--processes shared,port] [--bank KEY=VALUE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
from signals import Monitor, name_owner, start_bus  # bench/ is on sys.path for a bench script

from bmsbank import config as configuration
from bmsbank.schema import TOPIC_BANK, TOPIC_STATE
from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from bmsbank.supervisor import render, service_programs

INCUMBENT_MS = 3.96  # ms CPU per pack-update, the incumbent's driver at 8 JBD packs (issue 10)
SERVICE = "com.victronenergy.battery.bmsbank"


@dataclass
class Result:
    """What one configuration measured."""

    packs: int
    pack_services: bool
    can: bool
    own_processes: bool  #: a poller process per port (else one for all ports)
    updates: int
    banks: int
    cpu_ms: dict[str, float]  #: process group -> CPU ms in the window
    dbus_ms: float
    signals_bank: int
    signals_packs: int
    memory: dict[str, tuple[float, float, float]]  #: group -> (USS, PSS, RSS) MB
    startup: float


def write_config(
    rundir: Path, packs: int, pack_services: bool, can: bool, own_processes: bool = False,
    bank: str = "",
) -> str:
    """The bench's bmsbank.toml: one JBD port per pack, in one poller process or one each.

    ``bank``: more ``[bank]`` lines (``--bank``).
    """
    text = (
        f'runtime_dir = "{rundir}"\nlog_level = "warning"\n'
        f'[bank]\nname = "bench"\nstate_file = ""\n{bank}'
        f'[dbus]\nenabled = true\nnames_file = ""\npack_services = {str(pack_services).lower()}\n'
        f"[can]\nenabled = {str(can).lower()}\n"
    )
    if can:
        text += f'interface = "virtual"\nchannel = "bench-{os.getpid()}"\nenergy_file = ""\n'
    for k in range(packs):
        text += f'[[ports]]\nname = "p{k}"\ndevice = "{rundir}/tty-p{k}"\nbms = "jbd"\n'
        if own_processes:
            text += f'process = "p{k}"\n'
    path = rundir / "bench.toml"
    path.write_text(text)
    return str(path)


def schedstat_ns(pid: int) -> int:
    """Nanoseconds process ``pid`` (all its threads) has spent on a CPU."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total


def memory_mb(pid: int) -> tuple[float, float, float]:
    """(USS, PSS, RSS) of ``pid`` in MB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                values[parts[0][:-1]] = int(parts[1])
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return uss / 1024, values.get("Pss", 0) / 1024, values.get("Rss", 0) / 1024


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> group (poller, arbiter, publisher)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        for group in ("poller", "arbiter", "publisher"):
            if f"bmsbank.services.{group}" in cmd:
                out[int(entry)] = group
    return out


def wait_for_bank(address: str, deadline: float) -> float:
    """Seconds until the bank answers GetValue on /Info/MaxChargeVoltage (or the deadline)."""
    start = time.monotonic()
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
    cmd = ["dbus-send", "--system", "--print-reply", f"--dest={SERVICE}",
           "/Info/MaxChargeVoltage", "com.victronenergy.BusItem.GetValue"]  # fmt: skip
    while time.monotonic() < deadline:
        if subprocess.run(cmd, env=env, capture_output=True).returncode == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise RuntimeError("the bank did not appear on D-Bus")


def count_tap(sock: zmq.Socket, seconds: float) -> tuple[int, int]:
    """(states, banks) published on the tap during ``seconds``."""
    states = banks = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            topic = sock.recv_multipart()[0]
            states += topic == TOPIC_STATE
            banks += topic == TOPIC_BANK
    return states, banks


class Jitter:
    """Moves every pack's current and temperatures a little each second, as live packs do.

    Without it a simulated pack's readings stand still for seconds and the publisher, which
    sends only what changed, would have nothing to do: the figures would flatter it.
    """

    def __init__(self, models: list[BatteryModel]) -> None:
        self.models = models
        self.rng = random.Random(1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for m in self.models:
                m.current = round(min(20.0, max(-20.0, m.current + self.rng.uniform(-2, 2))), 1)
                m.temperatures = [round(t + self.rng.choice((-0.1, 0.0, 0.1)), 1)
                                  for t in m.temperatures]  # fmt: skip


def run(packs: int, pack_services: bool, can: bool, own_processes: bool, warmup: float,
        window: float, bank: str = "") -> Result:  # fmt: skip
    """Measure one configuration."""
    rundir = Path(tempfile.mkdtemp(prefix="bmsstack", dir="/tmp"))
    bus, address = start_bus(rundir)
    models = [BatteryModel(cells=16, current=5.0 + k % 3, imbalance=0.004 * (k % 4))
              for k in range(packs)]  # fmt: skip
    servers = [PtyServer(create("jbd", {1: m}), link=f"{rundir}/tty-p{k}").start()
               for k, m in enumerate(models)]  # fmt: skip
    jitter = Jitter(models)
    config_path = write_config(rundir, packs, pack_services, can, own_processes, bank)
    config = configuration.load(config_path)
    env = {"DBUS_SYSTEM_BUS_ADDRESS": address}
    (rundir / "log").mkdir()
    conf = rundir / "supervisord.conf"
    programs = service_programs(config, sys.executable, config_path, env)
    conf.write_text(render(programs, str(rundir), str(rundir / "log")))
    sub = zmq.Context.instance().socket(zmq.SUB)
    for topic in (TOPIC_STATE, TOPIC_BANK):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.connect(config.tap_endpoint)
    monitor = Monitor(address, rundir / "signals.txt")
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        startup = wait_for_bank(address, time.monotonic() + 60)
        owner = asyncio.run(name_owner(address, SERVICE))  # signals carry the unique name
        count_tap(sub, warmup)
        procs = children(supervisord.pid)
        assert len(procs) == len(config.processes()) + 2, procs
        pids = {**procs, supervisord.pid: "supervisord"}
        before = {pid: schedstat_ns(pid) for pid in pids}
        dbus_before = schedstat_ns(bus.pid)
        since = time.time()
        updates, banks = count_tap(sub, window)
        until = time.time()
        cpu_ms: dict[str, float] = {}
        for pid, group in pids.items():
            cpu_ms[group] = cpu_ms.get(group, 0.0) + (schedstat_ns(pid) - before[pid]) / 1e6
        dbus_ms = (schedstat_ns(bus.pid) - dbus_before) / 1e6
        memory: dict[str, tuple[float, float, float]] = {}
        for pid, group in pids.items():
            memory[group] = tuple(a + b for a, b in zip(memory.get(group, (0.0, 0.0, 0.0)),
                                                        memory_mb(pid), strict=True))  # type: ignore[assignment]
        time.sleep(0.5)  # let dbus-monitor write the window's last signals
        signals = monitor.signals(since, until)
        bank_signals = sum(1 for sender, _ in signals if sender == owner)
    finally:
        jitter.stop.set()
        supervisord.terminate()
        supervisord.wait(30)
        monitor.stop()
        sub.close(0)
        for server in servers:
            server.stop()
        bus.terminate()
        bus.wait(5)
        shutil.rmtree(rundir, ignore_errors=True)
    return Result(packs, pack_services, can, own_processes, updates, banks, cpu_ms, dbus_ms,
                  bank_signals, len(signals) - bank_signals, memory, startup)  # fmt: skip


def _key(r: Result) -> str:
    """The configuration columns: N, per-pack services, CAN, poller processes (1 or N)."""
    procs = r.packs if r.own_processes else 1
    return (f"{r.packs:>3} {'on ' if r.pack_services else 'off'} {'on ' if r.can else 'off'} "
            f"{procs:>3}")  # fmt: skip


def show(r: Result) -> str:
    """One table row."""
    per = {g: ms / max(1, r.updates) for g, ms in r.cpu_ms.items()}
    total = sum(per.values())
    uss = sum(m[0] for m in r.memory.values())
    pss = sum(m[1] for m in r.memory.values())
    pack_sig = r.signals_packs / max(1, r.updates) if r.pack_services else 0.0
    return (f"{_key(r)} {r.updates:>6} | {per.get('poller', 0):>6.3f} "
            f"{per.get('arbiter', 0):>6.3f} {per.get('publisher', 0):>6.3f} "
            f"{per.get('supervisord', 0):>6.3f} {total:>6.3f} "
            f"{INCUMBENT_MS / total if total else 0:>5.1f}x | {r.dbus_ms / max(1, r.updates):>6.3f}"
            f" {r.signals_bank / max(1, r.banks):>5.2f} {pack_sig:>5.2f} | {uss:>6.1f} {pss:>6.1f}"
            f" | {r.startup:>5.2f}")  # fmt: skip


def show_memory(r: Result) -> str:
    """USS by process group: what each kind of process holds (pollers also per port)."""
    per_port = r.memory.get("poller", (0.0, 0.0, 0.0))[0] / max(1, r.packs)
    groups = ", ".join(f"{g} {m[0]:.1f}" for g, m in sorted(r.memory.items()))
    return f"{_key(r)} | USS MB: {groups}; pollers {per_port:.1f} per port"


HEADER = (
    "  N pps can prc updates |  CPU ms per pack-update: pollers arbiter publisher supervisord"
    " total vs incumbent | dbus-daemon ms, signals per bank, per pack state | USS PSS MB | start s"
    "\n                        | poller arbitr publsh superv  total   inc | dbusms  bank  pack |"
    "    USS    PSS | start"
)


def main() -> int:
    """Measure every asked configuration and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", default="1,4,8,16", help="pack counts, comma-separated")
    p.add_argument("--window", type=float, default=30.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    p.add_argument("--pack-services", default="on,off", help="on, off or both (on,off)")
    p.add_argument("--can", default="off", help="on, off or both (off,on)")
    p.add_argument("--processes", default="shared",
                   help="poller processes: shared (one for all ports, the default installation), "
                        "port (one per port), or both (shared,port)")  # fmt: skip
    p.add_argument("--bank", action="append", default=[], metavar="KEY=VALUE",
                   help="a [bank] line for every configuration (cell_health = false)")  # fmt: skip
    args = p.parse_args()
    bank = "".join(f"{line}\n" for line in args.bank)
    counts = [int(n) for n in args.packs.split(",")]
    services = [s == "on" for s in args.pack_services.split(",")]
    cans = [c == "on" for c in args.can.split(",")]
    own = [x == "port" for x in args.processes.split(",")]
    print(HEADER, flush=True)
    results = []
    for n, pps, can, own_processes in itertools.product(counts, services, cans, own):
        results.append(run(n, pps, can, own_processes, args.warmup, args.window, bank))
        print(show(results[-1]), flush=True)
    print("\nMemory by process (USS, MB):")
    for r in results:
        print(show_memory(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
