"""End to end: ``bmsbank demo`` under supervisord, read by a Venus-style D-Bus client and over CAN.

Real parts only: simulators on pseudo-terminals, pyserial pollers, ZeroMQ, the arbiter, the
publisher on a private dbus-daemon, python-can slcan on the far side of a pty, supervisord.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import can
import pytest
import zmq
from dbus_fast import BusType, Message, MessageType, Variant  # noqa: F401
from dbus_fast.aio import MessageBus

from bmsbank.demo import DEMO_PORTS, profile_ports, radio_packs
from bmsbank.schema import TOPIC_BANK, unpack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SERVICE = "com.victronenergy.battery.bmsbank"
MANDATORY = [
    "/Mgmt/ProcessName", "/Mgmt/ProcessVersion", "/Mgmt/Connection", "/DeviceInstance",
    "/ProductId", "/ProductName", "/FirmwareVersion", "/HardwareVersion", "/Connected",
    "/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", "/Dc/0/Temperature", "/Soc", "/Capacity",
    "/InstalledCapacity", "/ConsumedAmphours", "/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent",
    "/Info/MaxDischargeCurrent", "/Info/BatteryLowVoltage", "/System/MinCellVoltage",
    "/System/MaxCellVoltage", "/System/MinVoltageCellId", "/System/MaxVoltageCellId",
    "/System/NrOfModulesOnline", "/System/NrOfModulesOffline",
    "/System/NrOfModulesBlockingCharge", "/System/NrOfModulesBlockingDischarge",
    "/Io/AllowToCharge", "/Io/AllowToDischarge", "/Alarms/HighCellVoltage", "/Alarms/LowVoltage",
]  # fmt: skip
# 14: two JBD ports, four buses, two BLE devices (JK BLE, JBD) and a JK CAN input
DEMO_PACKS = sum(len(port[2]) for port in DEMO_PORTS + sum(radio_packs("default", True), ()))
STALE_AFTER = 10.0  # the demo's default


class Demo:
    """A running ``bmsbank demo`` and handles on its parts."""

    def __init__(self, rundir: str, profile: str = "default") -> None:
        self.rundir = rundir
        ble, can_inputs = radio_packs(profile, own_bus=True)  # the demo makes its own bus here
        self.ports = profile_ports(profile) + ble + can_inputs
        env = dict(os.environ)
        env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bmsbank.cli", "demo", "--runtime-dir", rundir,
             "--duration", "600", "--profile", profile],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        # read the demo's output all along: a full pipe would block the demo's prints
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.started = time.monotonic()
        self.bus_address = f"unix:path={rundir}/dbus.sock"
        self.can_peer = f"{rundir}/can-peer"
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
        self.sub.connect(f"ipc://{rundir}/tap.ipc")

    def bank(self, pred=lambda b: True, timeout: float = 20.0) -> dict:
        """The next bank message from the tap that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.output)
            if self.sub.poll(200):
                bank = unpack(self.sub.recv_multipart()[1])
                if pred(bank):
                    return bank
        raise AssertionError(f"no matching bank within {timeout} s")

    def truth(self) -> dict[str, dict]:
        """The simulators' true pack values, by pack id."""
        out = {}
        for name, *_ in self.ports:
            with open(f"{self.rundir}/sim-{name}.json", encoding="utf-8") as fh:
                for addr, values in json.load(fh)["packs"].items():
                    out[f"{name}:{addr}"] = values
        return out

    def supervisorctl(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c",
             f"{self.rundir}/supervisord.conf", *args],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip

    def stop(self) -> str:
        self.sub.close(0)
        self.ctx.term()
        if self.proc.poll() is None:  # SIGTERM, as a service manager stops it (Ctrl-C alike)
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.reader.join(10)
        return "".join(self.output)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)


def processes_using(path: str) -> list[str]:
    """Command lines of live processes that mention ``path`` (read from /proc, no ps needed)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in args:
            found.append(f"{pid} {args}")
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    rundir = str(tmp_path_factory.mktemp("demo", numbered=True))
    d = Demo(rundir)
    try:
        d.bank(lambda b: b["online"] == DEMO_PACKS, timeout=30)
        # the first bank may already have every pack (the arbiter gathers them before it): give
        # the publisher the moment it takes to put that bank on D-Bus
        deadline = time.monotonic() + 15
        while SERVICE not in asyncio.run(_bus_names(d.bus_address)):
            assert time.monotonic() < deadline, "the bank never appeared on D-Bus"
            time.sleep(0.2)
        yield d
    finally:
        output = d.stop()
    assert "bmsbank demo: stopped" in output, output
    # the demo shows the charge state and why each limit has its value
    assert "| bulk, last full unknown |" in output
    assert "CVL because: bulk: 16 cells x 3.450 V" in output
    assert "CCL because: " in output and "DCL because: " in output
    time.sleep(0.5)
    assert processes_using(rundir) == [], "the demo left processes behind"


async def _bus_names(address: str) -> list[str]:
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(
            Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus", member="ListNames")
        )  # fmt: skip
        return list(reply.body[0])
    finally:
        bus.disconnect()


async def _read_paths(
    address: str, paths: list[str], service: str = SERVICE
) -> tuple[list[str], dict]:
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="ListNames",
            )
        )
        names = [n for n in reply.body[0] if n.startswith("com.victronenergy.battery.")]
        values = {}
        for path in paths:
            r = await bus.call(
                Message(
                    destination=service,
                    path=path,
                    interface="com.victronenergy.BusItem",
                    member="GetValue",
                )
            )
            assert r.message_type == MessageType.METHOD_RETURN, (path, r.body)
            values[path] = r.body[0].value
        items = await bus.call(
            Message(
                destination=SERVICE,
                path="/",
                interface="com.victronenergy.BusItem",
                member="GetItems",
            )
        )
        values["__items__"] = {k: v["Value"].value for k, v in items.body[0].items()}
        # every battery service's items, the way a Venus client scans the bus
        values["__all__"] = {}
        for name in names:
            r = await bus.call(
                Message(destination=name, path="/", interface="com.victronenergy.BusItem",
                        member="GetItems")
            )  # fmt: skip
            values["__all__"][name] = {k: v["Value"].value for k, v in r.body[0].items()}
        return names, values
    finally:
        bus.disconnect()


def read_dbus(demo: Demo, paths: list[str], service: str = SERVICE) -> tuple[list[str], dict]:
    return asyncio.run(_read_paths(demo.bus_address, paths, service))


def dbus_until(demo: Demo, expected: dict, timeout: float = 5.0, service: str = SERVICE) -> bool:
    """Read the paths until they hold the expected values; fail with what they hold."""
    deadline = time.monotonic() + timeout
    while True:
        _, v = read_dbus(demo, list(expected), service)
        got = {p: v[p] for p in expected}
        if got == expected:
            return True
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def test_venus_client_finds_the_bank_and_reads_every_mandatory_path(demo):
    # the bank and one service per pack, of which only the bank is a BMS (has limits); a pack's
    # service appears with its first state, eleven of them in the first second's burst
    wanted = sorted([SERVICE] + [f"{SERVICE}_{p.replace(':', '_')}" for p in demo.truth()])
    deadline = time.monotonic() + 15
    while True:
        names, v = read_dbus(demo, MANDATORY)
        if sorted(names) == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(names) == wanted
    bms = [n for n, items in v["__all__"].items() if "/Info/MaxChargeVoltage" in items]
    assert bms == [SERVICE]
    instances = [items["/DeviceInstance"] for items in v["__all__"].values()]
    assert len(set(instances)) == len(instances)  # every service its own instance
    # what Victron's systemcalc needs to pick it as battery monitor and as BMS
    assert isinstance(v["/ProductId"], int) and isinstance(v["/DeviceInstance"], int)
    assert v["/Connected"] == 1
    assert isinstance(v["/ProductName"], str) and v["/ProductName"]
    assert isinstance(v["/Mgmt/Connection"], str) and v["/Mgmt/Connection"]
    for path in ("/Info/MaxChargeVoltage", "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent"):
        assert isinstance(v[path], float), (path, v[path])
    assert v["/Info/MaxChargeVoltage"] == pytest.approx(16 * 3.45, abs=0.01)
    assert v["/System/NrOfModulesOnline"] == DEMO_PACKS
    assert v["/System/NrOfModulesOffline"] == 0
    items = v["__items__"]
    for path in MANDATORY:
        assert path in items, path
        assert items[path] == v[path] or path.startswith("/Dc") or path == "/Soc"


def test_dbus_values_follow_the_simulators(demo):
    demo.bank()  # a fresh bank
    truth = demo.truth()
    _, v = read_dbus(
        demo,
        [
            "/Dc/0/Voltage",
            "/Dc/0/Current",
            "/Soc",
            "/System/MinCellVoltage",
            "/System/MaxCellVoltage",
            "/Capacity",
            "/InstalledCapacity",
        ],
    )
    packs = list(truth.values())
    assert len(packs) == DEMO_PACKS
    mean_v = sum(p["voltage"] for p in packs) / len(packs)
    assert v["/Dc/0/Voltage"] == pytest.approx(mean_v, abs=0.05)
    # currents are constant in the demo: protocol scaling (10 mA JBD, 1 mA JK) plus D-Bus rounding
    assert v["/Dc/0/Current"] == pytest.approx(sum(p["current"] for p in packs), abs=0.1)
    cap = sum(p["capacity"] for p in packs)
    soc = sum(p["soc"] * p["capacity"] for p in packs) / cap
    assert v["/Soc"] == pytest.approx(soc, abs=1.0)  # JBD reports whole percent
    assert v["/InstalledCapacity"] == pytest.approx(cap, abs=0.1)
    # Venus battery services publish the remaining Ah as /Capacity
    assert v["/Capacity"] == pytest.approx(sum(p["remaining"] for p in packs), abs=0.5)
    cells = [c for p in packs for c in p["cells"]]
    assert v["/System/MinCellVoltage"] == pytest.approx(min(cells), abs=0.002)
    assert v["/System/MaxCellVoltage"] == pytest.approx(max(cells), abs=0.002)
    # each pack's own service shows its cells as its simulator holds them
    for pack, true in truth.items():
        items = v["__all__"][f"{SERVICE}_{pack.replace(':', '_')}"]
        shown = [items[f"/Voltages/Cell{k + 1}"] for k in range(len(true["cells"]))]
        assert shown == pytest.approx(true["cells"], abs=0.002), pack
        assert items["/Connected"] == 1


def test_can_frames_decode_per_seed_004_and_agree_with_dbus(demo):
    frames: dict[int, bytes] = {}
    times: dict[int, list[float]] = {}
    expected = {0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F, 0x372, 0x373, 0x374, 0x375, 0x376,
                0x377, 0x378, 0x379, 0x380, 0x381, 0x382}  # fmt: skip
    with can.Bus(interface="slcan", channel=demo.can_peer, sleep_after_open=0) as bus:
        bus.flush()
        start = time.monotonic()
        # at least 3.5 s (0x351 every second); identity and energy frames go every 10 s
        while time.monotonic() < start + 3.5 or (
            not expected <= set(frames) and time.monotonic() < start + 15.0
        ):
            msg = bus.recv(0.2)
            if msg is not None:
                frames[msg.arbitration_id] = bytes(msg.data)
                times.setdefault(msg.arbitration_id, []).append(time.monotonic())
    _, v = read_dbus(
        demo,
        [
            "/Info/MaxChargeVoltage",
            "/Info/MaxChargeCurrent",
            "/Info/MaxDischargeCurrent",
            "/Dc/0/Voltage",
            "/Dc/0/Current",
            "/Soc",
            "/System/NrOfModulesOnline",
        ],
    )
    for can_id in sorted(expected):
        assert can_id in frames, hex(can_id)
    assert len(times[0x351]) >= 3  # every second
    assert 0x360 not in frames  # the demo does not configure the force-charge rule
    f = frames[0x351]
    assert int.from_bytes(f[0:2], "little") * 0.1 == pytest.approx(
        v["/Info/MaxChargeVoltage"], abs=0.051
    )
    assert int.from_bytes(f[2:4], "little") * 0.1 == pytest.approx(
        v["/Info/MaxChargeCurrent"], abs=0.051
    )
    assert int.from_bytes(f[4:6], "little") * 0.1 == pytest.approx(
        v["/Info/MaxDischargeCurrent"], abs=0.051
    )
    f = frames[0x356]
    assert int.from_bytes(f[0:2], "little", signed=True) * 0.01 == pytest.approx(
        v["/Dc/0/Voltage"], abs=0.02
    )
    assert int.from_bytes(f[2:4], "little", signed=True) * 0.1 == pytest.approx(
        v["/Dc/0/Current"], abs=0.11
    )
    assert int.from_bytes(frames[0x355][0:2], "little") == pytest.approx(v["/Soc"], abs=1.0)
    assert int.from_bytes(frames[0x372][0:2], "little") == v["/System/NrOfModulesOnline"]


def test_killed_poller_goes_offline_and_comes_back(demo):
    before = demo.bank(lambda b: b["online"] == DEMO_PACKS)["cvl"]
    pid = int(demo.supervisorctl("pid", "poller-jkbus").strip())
    os.kill(pid, signal.SIGSTOP)  # hung first: its packs must go offline within stale_after
    try:
        t0 = time.monotonic()
        bank = demo.bank(lambda b: b["online"] == DEMO_PACKS - 3, timeout=STALE_AFTER + 5)
        assert time.monotonic() - t0 <= STALE_AFTER + 1.5
        assert bank["offline"] == 3
        online = [p for p in bank["packs"] if p["online"]]
        total = sum(p["capacity"] for p in online)  # recomputed at once over the packs left
        share_limit = min(p["ccl"] * total / p["capacity"] for p in online)
        why = bank["reasons"]["ccl"]
        # never more than a share allows; equal to it unless a rise is still on its hold or
        # ramp (packs join the demo one by one, each on the ramp: 1 A/s per pack)
        assert bank["ccl"] <= share_limit + 1e-6
        if bank["ccl"] < share_limit - 0.05:
            assert why.startswith(("held after a cut", "ramping up to")), why
            assert f"up to {share_limit:.1f} A" in why, why
        else:
            assert why.startswith("jbd"), why
        cells = bank["cells_per_pack"]  # jkbus packs may still be charging: CVL down to float
        assert bank["cvl"] == pytest.approx(cells * 3.375) and "unseen" in bank["reasons"]["cvl"]
        assert bank["alarms"]["bms_cable"] == 2
        # the publisher gets the same bank a moment after this test's tap reader does
        assert dbus_until(demo, {"/System/NrOfModulesOffline": 3, "/Alarms/BmsCable": 2})
    finally:
        os.kill(pid, signal.SIGKILL)  # dead: supervisord restarts it (also after a failure)
    t1 = time.monotonic()
    demo.bank(lambda b: b["online"] == DEMO_PACKS, timeout=10)
    assert time.monotonic() - t1 <= 5.0
    # every pack seen again for cvl_interval (20 s): CVL back where it was
    t2 = time.monotonic()
    demo.bank(lambda b: b["cvl"] == pytest.approx(before), timeout=30)
    assert time.monotonic() - t2 <= 20.0 + 2.0
    new_pid = int(demo.supervisorctl("pid", "poller-jkbus").strip())
    assert new_pid != pid


async def _set_value(address: str, service: str, path: str, value: Variant) -> int:
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(Message(
            destination=service, path=path, interface="com.victronenergy.BusItem",
            member="SetValue", signature="v", body=[value],
        ))  # fmt: skip
        return reply.body[0]
    finally:
        bus.disconnect()


def set_value(demo: Demo, service: str, path: str, value: Variant) -> int:
    return asyncio.run(_set_value(demo.bus_address, service, path, value))


def test_dbus_writes_reach_the_bms_and_show(demo):
    pack = f"{SERVICE}_jkbus_2"
    assert set_value(demo, pack, "/Io/ForceChargingOff", Variant("i", 1)) == 0
    # publisher -> arbiter -> poller -> JK PB simulator; the answer and the effect come back
    assert dbus_until(demo, {"/Control/LastResult": "charge off: done"}, 15, pack)
    assert dbus_until(demo, {"/Io/AllowToCharge": 0}, 10, pack)
    bank = demo.bank(lambda b: b["blocking_charge"] == 1)
    assert bank["ccl"] == 0.0  # a pack that cannot charge blocks bank charge
    assert set_value(demo, pack, "/Io/ForceChargingOff", Variant("i", 0)) == 0
    assert dbus_until(demo, {"/Control/LastResult": "charge on: done"}, 15, pack)
    assert dbus_until(demo, {"/Io/AllowToCharge": 1}, 10, pack)
    demo.bank(lambda b: b["blocking_charge"] == 0)
    # a JBD pack can re-sync its SoC; a JK PB pack does not offer it (read-only: 1)
    jbd = f"{SERVICE}_jbd2_1"
    assert set_value(demo, jbd, "/Settings/ResetSoc", Variant("i", 1)) == 0
    assert dbus_until(demo, {"/Control/LastResult": "reset SoC: done", "/Settings/ResetSoc": 0},
                      15, jbd)  # fmt: skip
    assert set_value(demo, pack, "/Settings/ResetSoc", Variant("i", 1)) == 1
