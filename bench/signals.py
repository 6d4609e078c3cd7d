"""D-Bus signals for a bank of 16 packs: the real arbiter and publisher on a private dbus-daemon.

A feeder stands in for the pollers: every second it pushes one state per pack (16 packs of 16
cells; every reading moves the current and a cell or two, as live packs do) to a real
:class:`Arbiter` (in a thread), whose bank goes through the tap to a real :class:`Publisher`
(with per-pack services on, then off). ``dbus-monitor``, in its own process, records every
BusItem signal with its sender.

Printed, for a run with per-pack services and one without: signals per second in all, and per
service per update -- the bank service per bank message, the pack services per state -- against
the target of at most 1 (the incumbent Venus driver sends about 24 per update), the mean number
of paths per ItemsChanged, and the CPU time per pack-update of this process (feeder, arbiter and
publisher together) and of the dbus-daemon. The difference between the two runs is what the
per-pack services cost.

    .venv/bin/python bench/signals.py [--seconds 20] [--packs 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from bmsbank.config import load
from bmsbank.demo import PRIVATE_BUS_CONF
from bmsbank.schema import TOPIC_STATE, pack
from bmsbank.services.arbiter.service import Arbiter
from bmsbank.services.publisher.dbus_service import IFACE
from bmsbank.services.publisher.service import Publisher
from bmsbank.state import make_state

CELLS = 16
PER_BUS = 8


def start_bus(tmp: Path) -> tuple[subprocess.Popen, str]:
    conf = tmp / "bus.conf"
    conf.write_text(PRIVATE_BUS_CONF.format(sock=tmp / "bus.sock"))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def where(k: int) -> tuple[str, int]:
    """Port and address of pack ``k``: 8 packs per RS485 bus, addresses 1-8."""
    return f"rs485_{k // PER_BUS}", k % PER_BUS + 1


def write_config(tmp: Path, packs: int, pack_services: bool) -> str:
    path = tmp / "bench.toml"
    text = (
        f'runtime_dir = "{tmp}"\nlog_level = "warning"\n'
        f'[bank]\nname = "bench"\nstate_file = ""\ninterval = 1.0\n'
        f'[dbus]\nnames_file = ""\npack_services = {str(pack_services).lower()}\n'
    )
    for bus in range((packs + PER_BUS - 1) // PER_BUS):
        count = min(PER_BUS, packs - bus * PER_BUS)
        text += (f'[[ports]]\nname = "rs485_{bus}"\ndevice = "/dev/null"\nbms = "jkpb"\n'
                 f"addresses = {list(range(1, count + 1))}\n")  # fmt: skip
    path.write_text(text)
    return str(path)


class Feeder:
    """One state per pack per second, every reading a little different."""

    def __init__(self, endpoint: str, packs: int) -> None:
        self.sock = zmq.Context.instance().socket(zmq.PUSH)
        self.sock.connect(endpoint)
        self.rng = random.Random(1)
        self.cells = [[3.30 + 0.001 * self.rng.randint(0, 20) for _ in range(CELLS)]
                      for _ in range(packs)]  # fmt: skip
        self.seq = 0
        self.sent = 0

    def cycle(self) -> None:
        self.seq += 1
        for k, cells in enumerate(self.cells):
            j = self.rng.randrange(CELLS)
            cells[j] = round(min(3.40, max(3.20, cells[j] + self.rng.choice((-0.001, 0.001)))), 3)
            current = round(10.0 + self.rng.uniform(-0.5, 0.5), 2)
            fields = {
                "voltage": round(sum(cells), 2), "current": current, "soc": 60.0,
                "capacity": 100.0, "remaining": 60.0, "cycles": 12, "cells": list(cells),
                "balancing": [0] * CELLS, "temperatures": [25.0, 25.5], "charge_fet": True,
                "discharge_fet": True, "alarms": {},
            }  # fmt: skip
            port, address = where(k)
            state = make_state(port, address, "jkpb", self.seq, fields, {"ok": self.seq})
            self.sock.send_multipart([TOPIC_STATE, pack(state)])
            self.sent += 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time [s] of process ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Monitor:
    """``dbus-monitor`` in its own process, writing every BusItem signal to a file.

    Counting in a separate process keeps the cost of decoding the signals out of this process's
    CPU figure.
    """

    def __init__(self, address: str, out: Path) -> None:
        self.out = out
        self.fh = out.open("w")
        rule = f"type='signal',interface='{IFACE}'"
        self.proc = subprocess.Popen(["dbus-monitor", "--address", address, rule],
                                     stdout=self.fh, stderr=subprocess.DEVNULL)  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.fh.close()

    def signals(self, since: float, until: float) -> list[tuple[str, int]]:
        """(sender, number of paths) of every signal sent between two wall-clock times."""
        out: list[tuple[str, int]] = []
        keep = False
        for line in self.out.read_text().splitlines():
            if line.startswith("signal "):
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                keep = since <= float(fields["time"]) <= until
                if keep:
                    out.append((fields["sender"], 0))
            elif keep and line.lstrip().startswith('string "/'):
                sender, paths = out[-1]
                out[-1] = (sender, paths + 1)
        return out


async def name_owner(address: str, name: str) -> str:
    bus = await MessageBus(bus_address=address).connect()
    try:
        return (await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetNameOwner", signature="s", body=[name],
        ))).body[0]  # fmt: skip
    finally:
        bus.disconnect()


async def count_signals(address: str, seconds: float, feeder: Feeder, publisher: Publisher,
                        services: int, bus_pid: int, monitor: Monitor) -> dict:  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # warm up: every service on the bus
        feeder.cycle()
        await asyncio.sleep(1.0)
        packs = publisher.packs
        ready = packs is None or (
            len(packs.services) == services and all(s.ve.connected for s in packs.services.values())
        )
        if publisher.ve and publisher.ve.connected and ready:
            break
    await asyncio.sleep(1.0)
    owner = await name_owner(address, publisher.config.dbus.service)
    banks0, states0, sent0 = publisher.counters.banks, publisher.counters.states, feeder.sent
    cpu0, bus0, wall0 = time.process_time(), cpu_seconds(bus_pid), time.time()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        feeder.cycle()
        await asyncio.sleep(1.0)
    await asyncio.sleep(0.5)
    elapsed = time.monotonic() - start
    cpu, bus_cpu = time.process_time() - cpu0, cpu_seconds(bus_pid) - bus0
    await asyncio.sleep(0.5)  # let dbus-monitor write what it has
    signals = monitor.signals(wall0, wall0 + elapsed)
    bank_signals = sum(1 for sender, _ in signals if sender == owner)
    return {
        "elapsed": elapsed, "banks": publisher.counters.banks - banks0,
        "states": publisher.counters.states - states0, "bank_signals": bank_signals,
        "pack_signals": len(signals) - bank_signals, "senders": len({s for s, _ in signals}),
        "paths": sum(n for _, n in signals) / max(1, len(signals)),
        "cpu": cpu, "bus_cpu": bus_cpu, "updates": feeder.sent - sent0,
    }  # fmt: skip


async def run(
    config_path: str, address: str, seconds: float, packs: int, bus_pid: int, monitor: Monitor
) -> dict:
    config = load(config_path)
    arbiter = Arbiter(config, zmq.Context.instance())
    stop = threading.Event()
    thread = threading.Thread(target=arbiter.run, args=(stop.is_set,), daemon=True)
    thread.start()
    publisher = Publisher(config, dbus_address=address)
    task = asyncio.create_task(publisher.run(install_signals=False))
    feeder = Feeder(config.states_endpoint, packs)
    try:
        return await count_signals(address, seconds, feeder, publisher, packs, bus_pid, monitor)
    finally:
        publisher.stop()
        await task
        stop.set()
        thread.join(5)
        arbiter.close()
        feeder.sock.close(0)


def report(r: dict, packs: int, pack_services: bool) -> None:
    """Print one run's figures."""
    total = r["bank_signals"] + r["pack_signals"]
    print(f"{packs} packs x {CELLS} cells, per-pack services {'on' if pack_services else 'off'}, "
          f"{r['elapsed']:.1f} s: {r['banks']} banks, {r['updates']} pack-updates, "
          f"{r['senders']} services signalling")  # fmt: skip
    print(f"  signals per second (all services)   {total / r['elapsed']:8.1f}")
    print(f"  bank service: signals per bank      {r['bank_signals'] / max(1, r['banks']):8.2f}"
          "   (target <= 1; incumbent ~24 per update)")  # fmt: skip
    if pack_services:
        print(f"  pack services: signals per state    "
              f"{r['pack_signals'] / max(1, r['states']):8.2f}   (target <= 1)")  # fmt: skip
    print(f"  paths per ItemsChanged (mean)       {r['paths']:8.1f}")
    per = 1000.0 / max(1, r["updates"])
    print(f"  CPU per pack-update [ms]: this process (feeder, arbiter, publisher) "
          f"{r['cpu'] * per:.3f}, dbus-daemon {r['bus_cpu'] * per:.3f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--packs", type=int, default=16)
    args = parser.parse_args()
    for pack_services in (True, False):
        tmp = Path(tempfile.mkdtemp(prefix="bmsbench", dir="/tmp"))
        proc, address = start_bus(tmp)
        monitor = Monitor(address, tmp / "signals.txt")
        try:
            config = write_config(tmp, args.packs, pack_services)
            r = asyncio.run(run(config, address, args.seconds, args.packs, proc.pid, monitor))
        finally:
            monitor.stop()
            proc.terminate()
            proc.wait(5)
            shutil.rmtree(tmp, ignore_errors=True)
        report(r, args.packs, pack_services)
    return 0


if __name__ == "__main__":
    sys.exit(main())
