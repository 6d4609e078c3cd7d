"""CPU per BLE pack-update of the BLE poller process, against the fake BlueZ.

Starts a private dbus-daemon with the fake BlueZ on it (services/poller/simulators/fakebluez.py:
N JBD packs of 16 cells on adapter hci0, replies notified in 20-byte pieces as over a default
ATT MTU) and the real poller process (``python -m bmsbank.services.poller --process ble-hci0``,
what ``bmsbank supervisor-config`` renders for a ``[[ble]]`` adapter), whose states go to a PULL
socket this script holds in place of the arbiter (with a ROUTER at its control endpoint, where
the poller says hello). After a warm-up it reads, over a fixed window,
the poller's CPU time from ``/proc/<pid>/schedstat`` (all its threads: the pollers, the BLE event
loop with bleak and dbus-fast, zmq) and divides it by the pack-updates received. The fake BlueZ
and the dbus-daemon are measured too, for scale: on a GX their part is bluetoothd's and the
system bus's.

The issue's target is 0.1 ms per BLE pack-update (the incumbent reports ~10 % of a Cerbo's CPU
per BLE pack); the table prints the ratio against it. ``--threads`` adds the poller's CPU and
wake-ups per pack-update by thread (the BLE loop, each device's poller thread, zmq's I/O
thread); ``--refuse-acquire`` measures the fallback paths (StartNotify, WriteValue);
``--floor`` measures :data:`MINIMAL` in the poller's place: what the job costs any Python
process on this machine before decoding anything.

    .venv/bin/python bench/ble.py [--packs 1,4] [--window 20] [--warmup 5] [--interval 1]
        [--threads] [--refuse-acquire] [--floor]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
from stack import schedstat_ns  # bench/ is on sys.path for a bench script

from bmsbank.config import load
from bmsbank.schema import TOPIC_STATE
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.fakebluez import FakeBluez

#: argv: the fake's bus address, the states endpoint, MACs. The least any Python process can do
#: for the poller's job, as bench/floor.py has it for a serial port: one thread, every device
#: at once (each request written to all, then every reply gathered with one epoll), BlueZ's
#: AcquireNotify/AcquireWrite sockets read and written raw, the replies sent undecoded, one
#: zmq message per device. Set-up (connect, acquire) is over before the window.
MINIMAL = r"""
import asyncio, os, select, sys, time
import zmq
from dbus_fast import Message
from dbus_fast.aio import MessageBus

ADDRESS, ENDPOINT, MACS = sys.argv[1], sys.argv[2], sys.argv[3:]
GATT = "org.bluez.GattCharacteristic1"


async def acquire(bus, path, member):
    reply = await bus.call(Message(destination="org.bluez", path=path, interface=GATT,
                                   member=member, signature="a{sv}", body=[{}]))
    return reply.unix_fds[reply.body[0]]


async def connect():
    bus = await MessageBus(bus_address=ADDRESS, negotiate_unix_fd=True).connect()
    links = []
    for mac in MACS:
        dev = "/org/bluez/hci0/dev_" + mac.replace(":", "_")
        await bus.call(Message(destination="org.bluez", path=dev,
                               interface="org.bluez.Device1", member="Connect"))
        links.append((await acquire(bus, dev + "/service000c/char000d", "AcquireNotify"),
                      await acquire(bus, dev + "/service000c/char0010", "AcquireWrite")))
    return bus, links


bus, links = asyncio.new_event_loop().run_until_complete(connect())
push = zmq.Context().socket(zmq.PUSH)
push.connect(ENDPOINT)
poller = select.epoll()
for notify, _write in links:
    poller.register(notify, select.EPOLLIN)
requests = (bytes.fromhex("dda50300fffd77"), bytes.fromhex("dda50400fffc77"))
while True:
    began = time.monotonic()
    replies = {notify: b"" for notify, _write in links}
    for request in requests:
        got = {}
        for notify, write in links:
            os.write(write, request)
            got[notify] = b""
        pending = set(got)
        while pending and (events := poller.poll(0.5)):
            for fd, _event in events:
                got[fd] += os.read(fd, 1024)
                if len(got[fd]) >= 7 and len(got[fd]) >= got[fd][3] + 7:  # DD cmd st len .. 77
                    pending.discard(fd)
        for fd, reply in got.items():
            replies[fd] += reply
    for reply in replies.values():
        push.send_multipart([b"state", reply])
    time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
"""

TARGET_MS = 0.1  #: the issue's target per BLE pack-update [ms]
HEADER = (
    f"{'packs':>5} {'interval':>8} {'updates':>7} {'poller ms/upd':>13} {'x target':>8} "
    f"{'fake BlueZ ms/upd':>17} {'dbus ms/upd':>11}"
)


def write_config(rundir: Path, macs: list[str], interval: float) -> str:
    """The bench's bmsbank.toml: one [[ble]] adapter with one JBD device per pack."""
    text = (
        f'runtime_dir = "{rundir}"\nlog_level = "warning"\n'
        f'[bank]\nname = "bench"\nstate_file = ""\n'
        f'[dbus]\nenabled = false\n[[ble]]\nadapter = "hci0"\n'
    )
    for k, mac in enumerate(macs):
        text += (
            f'[[ble.devices]]\nname = "b{k}"\naddress = "{mac}"\nbms = "jbd"\n'
            f"interval = {interval}\n"
        )
    path = rundir / "bench.toml"
    path.write_text(text)
    return str(path)


def thread_stats(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread of ``pid``, "name/tid" -> (ns on a CPU, timeslices: about its wake-ups)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8") as fh:
                name = fh.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                ns, _wait, slices = (int(x) for x in fh.read().split())
        except OSError:
            continue  # a thread that just ended
        out[f"{name}/{tid}"] = (ns, slices)
    return out


def thread_split(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], updates: int
) -> str:
    """One line per thread group: ms and wake-ups per pack-update."""
    groups: dict[str, list[int]] = {}
    for key, (ns, slices) in after.items():
        ns0, slices0 = before.get(key, (0, 0))
        name = key if key.startswith("python/") else key.rsplit("/", 1)[0]
        group = groups.setdefault(name, [0, 0])
        group[0] += ns - ns0
        group[1] += slices - slices0
    return "; ".join(
        f"{name} {ns / 1e6 / updates:.3f} ms {slices / updates:.1f} wakes"
        for name, (ns, slices) in sorted(groups.items(), key=lambda kv: -kv[1][0])
    )


def count_states(sock: zmq.Socket, seconds: float) -> int:
    """States received during ``seconds``."""
    states = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            states += sock.recv_multipart()[0] == TOPIC_STATE
    return states


def run(
    packs: int,
    interval: float,
    warmup: float,
    window: float,
    refuse_acquire: bool = False,
    floor: bool = False,
) -> tuple[int, float, float, float, str]:
    """(updates, poller ms, fake BlueZ ms, dbus-daemon ms, per-thread split) of one run."""
    macs = [f"AA:BB:CC:DD:EE:{k + 1:02X}" for k in range(packs)]
    with tempfile.TemporaryDirectory(prefix="bench-ble-") as tmp, FakeBluez() as fake:
        rundir = Path(tmp)
        fake.add_adapter("hci0")
        for k, mac in enumerate(macs):
            model = BatteryModel(cells=16, soc=50.0 + k, current=-5.0 + k)
            fake.add_device("hci0", mac, f"JBD-SP16S{k:03d}", "jbd", model)
            if refuse_acquire:
                fake.refuse_acquire(mac)
        config_path = write_config(rundir, macs, interval)
        config = load(config_path)
        context = zmq.Context.instance()
        sink = context.socket(zmq.PULL)
        sink.bind(config.states_endpoint)
        # the arbiter's control ROUTER: without it the poller's zmq thread keeps reconnecting
        control = context.socket(zmq.ROUTER)
        control.bind(config.control_endpoint)
        env = dict(os.environ, **fake.env())
        cmd = [sys.executable, "-m", "bmsbank.services.poller", "--config", config_path,
               "--process", "ble-hci0"]  # fmt: skip
        if floor:
            cmd = [sys.executable, "-c", MINIMAL, fake.address, config.states_endpoint, *macs]
        poller = subprocess.Popen(cmd, env=env)
        try:
            count_states(sink, warmup)
            assert fake.server is not None and fake.daemon is not None
            pids = {"poller": poller.pid, "fake": fake.server.pid, "dbus": fake.daemon.pid}
            before = {k: schedstat_ns(p) for k, p in pids.items()}
            threads = thread_stats(poller.pid)
            updates = count_states(sink, window)
            spent = {k: (schedstat_ns(p) - before[k]) / 1e6 for k, p in pids.items()}
            split = thread_split(threads, thread_stats(poller.pid), max(updates, 1))
        finally:
            poller.terminate()
            poller.wait(10)
            sink.close(0)
            control.close(0)
    return updates, spent["poller"], spent["fake"], spent["dbus"], split


def main() -> int:
    """Measure every asked pack count and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", default="1,4", help="pack counts on one adapter, comma-separated")
    p.add_argument("--window", type=float, default=20.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval [s]")
    p.add_argument("--threads", action="store_true", help="print the poller's per-thread split")
    p.add_argument("--refuse-acquire", action="store_true",
                   help="the fake refuses AcquireNotify/AcquireWrite: the fallback paths "
                        "(StartNotify, WriteValue) are measured")  # fmt: skip
    p.add_argument("--floor", action="store_true",
                   help="measure MINIMAL, the least any Python process can do for the same job, "
                        "in place of the poller")  # fmt: skip
    args = p.parse_args()
    print(HEADER, flush=True)
    for n in (int(x) for x in args.packs.split(",")):
        updates, poller_ms, fake_ms, dbus_ms, split = run(
            n, args.interval, args.warmup, args.window, args.refuse_acquire, args.floor
        )
        if not updates:
            print(f"{n:>5} {args.interval:>8g} {0:>7}  no pack-updates (see the poller's log)")
            continue
        per = poller_ms / updates
        print(
            f"{n:>5} {args.interval:>8g} {updates:>7} {per:>13.3f} {per / TARGET_MS:>8.1f} "
            f"{fake_ms / updates:>17.3f} {dbus_ms / updates:>11.3f}",
            flush=True,
        )
        if args.threads:
            print(f"      poller threads: {split}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
