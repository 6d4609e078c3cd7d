"""D-Bus signals for a bank of 16 packs: the real arbiter and publisher on a private dbus-daemon.

A feeder stands in for the pollers: every second it pushes one state per pack (16 packs of 16
cells; every reading moves the current and a cell or two, as live packs do) to a real
:class:`Arbiter` (in a thread), whose bank goes through the tap to a real :class:`Publisher`
with per-pack services on. A monitor connection counts every BusItem signal by sender.

Printed: signals per second in all, and per service per update -- the bank service per bank
message, the pack services per state -- against the target of at most 1 (the incumbent Venus
driver sends about 24 per update), plus the mean number of paths per ItemsChanged.

    .venv/bin/python bench/signals.py [--seconds 20] [--packs 16]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
from dbus_fast import Message, MessageType
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


def write_config(tmp: Path, packs: int) -> str:
    path = tmp / "bench.toml"
    text = (
        f'runtime_dir = "{tmp}"\nlog_level = "warning"\n'
        f'[bank]\nname = "bench"\nstate_file = ""\ninterval = 1.0\n'
        f'[dbus]\nnames_file = ""\n'
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


async def count_signals(address: str, seconds: float, feeder: Feeder, publisher: Publisher,
                        services: int) -> dict:  # fmt: skip
    bus = await MessageBus(bus_address=address).connect()
    by_sender: dict[str, int] = {}
    paths_per_signal: list[int] = []

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.interface == IFACE:
            by_sender[msg.sender] = by_sender.get(msg.sender, 0) + 1
            paths_per_signal.append(len(msg.body[0]))

    bus.add_message_handler(on_message)
    await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="AddMatch", signature="s",
        body=[f"type='signal',interface='{IFACE}'"],
    ))  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # warm up: every service on the bus
        feeder.cycle()
        await asyncio.sleep(1.0)
        packs = publisher.packs
        if publisher.ve and publisher.ve.connected and packs and len(packs.services) == services:
            if all(s.ve.connected for s in packs.services.values()):
                break
    await asyncio.sleep(1.0)
    owner = (await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
        body=[publisher.config.dbus.service],
    ))).body[0]  # fmt: skip
    by_sender.clear()
    paths_per_signal.clear()
    banks0, states0 = publisher.counters.banks, publisher.counters.states
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        feeder.cycle()
        await asyncio.sleep(1.0)
    await asyncio.sleep(0.5)
    elapsed = time.monotonic() - start
    bus.disconnect()
    bank_signals = by_sender.pop(owner, 0)
    return {
        "elapsed": elapsed, "banks": publisher.counters.banks - banks0,
        "states": publisher.counters.states - states0, "bank_signals": bank_signals,
        "pack_signals": sum(by_sender.values()), "senders": len(by_sender) + 1,
        "paths": sum(paths_per_signal) / max(1, len(paths_per_signal)),
    }  # fmt: skip


async def run(config_path: str, address: str, seconds: float, packs: int) -> dict:
    config = load(config_path)
    arbiter = Arbiter(config, zmq.Context.instance())
    stop = threading.Event()
    thread = threading.Thread(target=arbiter.run, args=(stop.is_set,), daemon=True)
    thread.start()
    publisher = Publisher(config, dbus_address=address)
    task = asyncio.create_task(publisher.run(install_signals=False))
    feeder = Feeder(config.states_endpoint, packs)
    try:
        return await count_signals(address, seconds, feeder, publisher, packs)
    finally:
        publisher.stop()
        await task
        stop.set()
        thread.join(5)
        arbiter.close()
        feeder.sock.close(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--packs", type=int, default=16)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bmsbench", dir="/tmp"))
    proc, address = start_bus(tmp)
    try:
        r = asyncio.run(run(write_config(tmp, args.packs), address, args.seconds, args.packs))
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    total = r["bank_signals"] + r["pack_signals"]
    print(
        f"{args.packs} packs x {CELLS} cells, {r['elapsed']:.1f} s: "
        f"{r['banks']} banks, {r['states']} states, {r['senders']} services signalling"
    )
    print(f"signals per second (all services)   {total / r['elapsed']:8.1f}")
    print(
        f"bank service: signals per bank      {r['bank_signals'] / max(1, r['banks']):8.2f}"
        "   (target <= 1; incumbent ~24 per update)"
    )
    print(
        f"pack services: signals per state    {r['pack_signals'] / max(1, r['states']):8.2f}"
        "   (target <= 1)"
    )
    print(f"paths per ItemsChanged (mean)       {r['paths']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
