"""``bmsbank demo``: the whole stack with simulated packs, no hardware needed.

The default profile: eleven 16-cell packs, two JBD packs on their own ports and four RS485 buses
(three JK PB packs, two Daly boards, two Seplos v3 packs, two Seplos v2 packs). The ``all``
profile: one pack of every serial (and SPI) BMS family, each on its own port, as a 12 V bank of
4-cell packs (HLPdata's BMS4S is 4S only). Each port is a simulator on a pseudo-terminal (an SPI
family's on a Unix socket, the device ``spisim:PATH``); pollers, arbiter and publisher run under
a real supervisord; a private dbus-daemon (unless ``DBUS_SYSTEM_BUS_ADDRESS`` is set); CAN-bus
BMS output over slcan on a pty whose far end is printed. Everything lives in one runtime
directory and stops with the demo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import zmq

from bmsbank import config as configuration
from bmsbank import runtime, watch
from bmsbank.config import WIRELESS_OR_CAN
from bmsbank.errors import BmsBankError
from bmsbank.schema import TOPIC_BANK
from bmsbank.services.poller import plugins
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.supervisor import Program, render, service_programs


class DemoPort(NamedTuple):
    """One simulated port of the demo."""

    name: str
    bms: str
    addresses: list[int]
    currents: list[float]  #: A per pack (+ = charge)
    socs: list[float]  #: % per pack
    imbalance: list[float]  #: V across the cells, per pack
    cells: int = 16


DEMO_PORTS = (
    DemoPort("jbd1", "jbd", [1], [6.0], [55.0], [0.004]),
    DemoPort("jbd2", "jbd", [1], [-3.5], [72.0], [0.012]),
    DemoPort(
        "jkbus", "jkpb", [1, 2, 3], [4.0, 2.5, -1.5], [61.0, 64.0, 58.0], [0.006, 0.020, 0.010]
    ),  # fmt: skip
    DemoPort("dalybus", "daly", [1, 2], [3.0, -2.0], [57.0, 63.0], [0.008, 0.015]),
    DemoPort("seplos3", "seplosv3", [0, 1], [2.0, 1.5], [60.0, 59.0], [0.005, 0.011]),
    DemoPort("seplos2", "seplos", [0, 1], [-1.0, 3.5], [62.0, 56.0], [0.009, 0.004]),
)
#: the default profile's Bluetooth packs: devices of a fake BlueZ adapter hci0 on the demo's
#: private bus (only there: on a bus given by DBUS_SYSTEM_BUS_ADDRESS the real BlueZ may live)
DEMO_BLE = (
    DemoPort("jkble", "jkbms_ble", [0], [2.5], [59.0], [0.007]),
    DemoPort("jbdble", "jbd", [1], [-1.0], [66.0], [0.009]),
)
#: the default profile's CAN input: a JK BMS broadcasting on an slcan bus of its own
DEMO_CAN = (DemoPort("jkcan", "jkbms_can", [0], [1.5], [60.0], [0.0]),)
PROFILES = ("default", "all")


def profile_ports(profile: str) -> tuple[DemoPort, ...]:
    """The ports of demo ``profile``: "default" (the mix above) or "all" (every family).

    Raises:
        ValueError: no such profile.

    """
    if profile == "default":
        return DEMO_PORTS
    if profile != "all":
        raise ValueError(f"unknown demo profile {profile!r}; known: {', '.join(PROFILES)}")
    ports = []
    wired = [n for n, i in plugins.families().items() if i.link not in WIRELESS_OR_CAN]
    for k, family in enumerate(wired):
        current = (2.0, -1.5, 1.0, 3.0, -0.5)[k % 5]  # some charge, some discharge: they differ
        ports.append(DemoPort(family, family, [plugins.info(family).default_address], [current],
                              [55.0 + k % 7 * 2], [0.003 + k % 4 * 0.002], cells=4))  # fmt: skip
    return tuple(ports)


def radio_packs(profile: str, own_bus: bool) -> tuple[tuple[DemoPort, ...], tuple[DemoPort, ...]]:
    """(BLE devices, CAN inputs) of demo ``profile``.

    The default profile's; its BLE devices only on the demo's own private bus (where the fake
    BlueZ may own org.bluez).
    """
    if profile != "default":
        return (), ()
    return (DEMO_BLE if own_bus and fake_bluez_available() else ()), DEMO_CAN


def fake_bluez_available() -> bool:
    """Whether the fake BlueZ can run: python-dbusmock (the ``demo`` extra) is installed.

    A runtime-only install (the wheel without extras) has no test tools; its demo leaves the
    Bluetooth packs out and says how to add them.
    """
    return all(importlib.util.find_spec(m) is not None for m in ("dbusmock", "dbus"))


#: ports polled by a process of their own (poller-<name>, restarted alone); the others share
#: the process poller-shared, as an installation's ports do by default
DEMO_OWN_PROCESS = frozenset({"jkbus"})

#: a private bus on which its clients may own any name and eavesdrop (demo and tests only); only
#: the user running the dbus-daemon may connect (no ``<allow user="*"/>``: dbus-daemon then takes
#: connections from its own uid only), so no other local user can switch a FET through it
PRIVATE_BUS_CONF = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


@dataclass
class DemoPlan:
    """Where everything of one demo run lives."""

    rundir: str
    config_path: str
    supervisord_conf: str
    dbus_address: str
    own_bus: bool
    can: str  #: "interface:channel" the publisher uses, or "none"
    can_peer: str | None  #: the far end of the demo's CAN pty, when the demo made one
    web_url: str = ""  #: the bank view page (bmsbank web)


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def ble_mac(index: int) -> str:
    """The MAC address of the demo's ``index``-th Bluetooth pack."""
    return f"C8:47:8C:00:00:{index + 1:02X}"


def _demo_config(
    rundir: str, can: str, ports: tuple[DemoPort, ...], own: frozenset[str],
    ble: tuple[DemoPort, ...] = (), can_inputs: tuple[DemoPort, ...] = (), web_port: int = 8088,
) -> str:  # fmt: skip
    """The demo's bmsbank.toml: its ports, BLE devices and CAN inputs, D-Bus on, CAN as asked."""
    interface, _, channel = can.partition(":")
    lines = [
        f"runtime_dir = {_toml_str(rundir)}", "", "[bank]", 'name = "demo"',
        f"state_file = {_toml_str(rundir + '/state.json')}", "",
    ]  # fmt: skip
    lines += ["[dbus]", "enabled = true", f"names_file = {_toml_str(rundir + '/names.json')}", ""]
    lines += ["[web]", "enabled = true", f"port = {web_port}",
              f"history_dir = {_toml_str(rundir + '/history')}", ""]  # fmt: skip
    lines += ["[can]", f"enabled = {'false' if interface == 'none' else 'true'}"]
    if interface != "none":
        lines += [f"interface = {_toml_str(interface)}", f"channel = {_toml_str(channel)}",
                  f"energy_file = {_toml_str(rundir + '/energy.json')}"]  # fmt: skip
    for name, bms, addresses, *_, cells in ports:
        info = plugins.info(bms)
        spi = info.link.upper().startswith("SPI")  # its simulator serves a socket, not a pty
        device = f"spisim:{_link(rundir, name)}" if spi else _link(rundir, name)
        lines += ["", "[[ports]]", f'name = "{name}"', f"device = {_toml_str(device)}",
                  f'bms = "{bms}"', f"addresses = {addresses}"]  # fmt: skip
        if any(o.name == "cells" for o in info.options):  # a family told its cell count (MNB)
            lines.append(f"cells = {cells}")
        if name in own:
            lines.append(f'process = "{name}"')
    if ble:
        lines += ["", "[[ble]]", 'adapter = "hci0"']
    for k, p in enumerate(ble):
        lines += ["", "[[ble.devices]]", f'name = "{p.name}"', f'address = "{ble_mac(k)}"',
                  f'bms = "{p.bms}"', f"addresses = {p.addresses}"]  # fmt: skip
    for p in can_inputs:
        lines += ["", "[[can_inputs]]", f'name = "{p.name}"', 'interface = "slcan"',
                  f"channel = {_toml_str(_link(rundir, p.name))}", f'bms = "{p.bms}"',
                  f"addresses = {p.addresses}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _model(p: DemoPort, i: int, **more: Any) -> BatteryModel:
    """The model of ``p``'s ``i``-th pack, as its simulator program builds it."""
    return BatteryModel(cells=p.cells, soc=p.socs[i], current=p.currents[i],
                        imbalance=p.imbalance[i], **more)  # fmt: skip


def _radio_simulators(
    rundir: str, python: str, dbus_address: str, ble: tuple[DemoPort, ...],
    can_inputs: tuple[DemoPort, ...],
) -> list[Program]:  # fmt: skip
    """The fake BlueZ with the BLE packs, a CAN peer per CAN input; their true values on file.

    Their models hold still (no current integrates into SoC), so the truth is written once.
    """
    programs = []
    specs = []
    for k, p in enumerate(ble):
        model = _model(p, 0)
        name = f"{plugins.info(p.bms).ble.names[0]}DEMO{k + 1}"  # type: ignore[union-attr]
        values = {"cells": model.cells, "soc": model.soc, "current": model.current,
                  "imbalance": model.imbalance}  # fmt: skip
        specs += ["--device", f"hci0/{ble_mac(k)}/{name}/{p.bms}/"
                  + ",".join(f"{key}={json.dumps(v)}" for key, v in values.items())]  # fmt: skip
        _write_truth(rundir, p, {p.addresses[0]: model})
    if ble:
        programs.append(Program("bluez", [
            python, "-m", "bmsbank.services.poller.simulators.fakebluez",
            "--address", dbus_address, "--adapter", "hci0", *specs,
        ], priority=3))  # fmt: skip
    for p in can_inputs:
        temperatures = [24.0, 25.5]  # can_peer's for its first pack
        _write_truth(rundir, p, {a: _model(p, 0, temperatures=temperatures) for a in p.addresses})
        programs.append(Program(f"sim-{p.name}", [
            python, "-m", "bmsbank.services.poller.simulators.can_peer", "--family", p.bms,
            "--link", _link(rundir, p.name), "--addresses", ",".join(map(str, p.addresses)),
            "--cells", str(p.cells), f"--soc={p.socs[0]}", f"--current={p.currents[0]}",
        ], priority=5))  # fmt: skip
    return programs


def _write_truth(rundir: str, p: DemoPort, packs: dict[int, BatteryModel]) -> None:
    """``sim-NAME.json`` as the serial simulators write theirs (tests compare the bank to it)."""
    data = {str(a): m.snapshot() for a, m in packs.items()}
    with open(f"{rundir}/sim-{p.name}.json", "w", encoding="utf-8") as fh:
        json.dump({"time": time.time(), "packs": data}, fh)


def _link(rundir: str, port: str) -> str:
    return f"{rundir}/tty-{port}"


def _simulators(rundir: str, python: str, ports: tuple[DemoPort, ...]) -> list[Program]:
    """One simulator program per demo port, each writing its packs' true values to a file."""
    return [
        Program(f"sim-{p.name}", [
            python, "-m", "bmsbank.services.poller.simulators", "--bms", p.bms,
            "--link", _link(rundir, p.name), "--addresses", ",".join(map(str, p.addresses)),
            # "=" joins values that start with a minus sign (a discharge) to their option
            "--current=" + ",".join(map(str, p.currents)), "--soc=" + ",".join(map(str, p.socs)),
            "--imbalance=" + ",".join(map(str, p.imbalance)), "--cells", str(p.cells),
            "--snapshot", f"{rundir}/sim-{p.name}.json",
        ], priority=5)
        for p in ports
    ]  # fmt: skip


def _private_dir(rundir: str) -> None:
    """Make ``rundir`` this user's only (mode 0700), creating it if needed.

    It holds the zmq sockets (the control socket switches FETs) and the private bus: another
    local user must not reach them. A directory of another user is refused; one of this user's
    that others may enter (``--runtime-dir /tmp/x`` made with the default umask) is closed.

    Raises:
        BmsBankError: ``rundir`` belongs to another user or cannot be made private.

    """
    os.makedirs(rundir, mode=0o700, exist_ok=True)
    info = os.stat(rundir)
    if info.st_uid != os.getuid():
        raise BmsBankError(f"runtime dir {rundir} belongs to another user (uid {info.st_uid}); "
                           "use a directory of your own")  # fmt: skip
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            os.chmod(rundir, 0o700)
        except OSError as exc:
            raise BmsBankError(
                f"runtime dir {rundir}: cannot make it private ({exc.strerror})"
            ) from None
        print(f"bmsbank demo: made {rundir} private to you (mode 0700: its sockets control FETs)")


def plan(rundir: str, can: str | None, profile: str = "default") -> DemoPlan:
    """Write the demo's config files into ``rundir`` and return where things are."""
    ports = profile_ports(profile)
    own = DEMO_OWN_PROCESS if profile == "default" else frozenset()
    env_bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    ble, can_inputs = radio_packs(profile, own_bus=not env_bus)
    python = sys.executable
    logdir = os.path.join(rundir, "log")
    _private_dir(rundir)
    os.makedirs(logdir, exist_ok=True)
    dbus_address = env_bus or f"unix:path={rundir}/dbus.sock"
    can_peer = None if can else f"{rundir}/can-peer"
    can = can or f"slcan:{rundir}/can-bms"
    config_path = f"{rundir}/bmsbank.toml"
    with open(config_path, "w", encoding="utf-8") as fh:
        fh.write(_demo_config(rundir, can, ports, own, ble, can_inputs, _free_port()))
    config = configuration.load(config_path)
    programs = _simulators(rundir, python, ports)
    programs += _radio_simulators(rundir, python, dbus_address, ble, can_inputs)
    if not env_bus:
        with open(f"{rundir}/dbus.conf", "w", encoding="utf-8") as fh:
            fh.write(PRIVATE_BUS_CONF.format(sock=f"{rundir}/dbus.sock"))
        programs.append(
            Program(
                "dbus",
                ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={rundir}/dbus.conf"],
                priority=1,
            )
        )
    if can_peer:
        programs.append(Program("canwire", [
            python, "-m", "bmsbank.services.poller.simulators.ptybridge",
            can.partition(":")[2], can_peer,
        ], priority=2))  # fmt: skip
    env = {"DBUS_SYSTEM_BUS_ADDRESS": dbus_address}
    programs += service_programs(config, python, config_path, env)
    conf = f"{rundir}/supervisord.conf"
    with open(conf, "w", encoding="utf-8") as fh:
        fh.write(render(programs, rundir, logdir, "bmsbank demo (generated)"))
    web_url = f"http://{config.web.listen}:{config.web.port}/"
    return DemoPlan(rundir, config_path, conf, dbus_address, not env_bus, can, can_peer, web_url)


def _free_port() -> int:
    """A loopback TCP port free now (8088 when it is; several demos may run at once)."""
    for port in (8088, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop supervisord (SIGTERM: it stops its programs), then anything left of its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # supervisord too slow (a loaded machine, 40 programs): kill its whole session, as
            # its programs run in process groups of their own (stopasgroup) but in its session
            _kill_session(proc.pid)
            proc.wait()
    _kill_session(proc.pid)  # what outlived a supervisord killed or crashed


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (supervisord was started as its leader)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rpartition(")")[2].split()
            if int(fields[3]) == sid:  # after "pid (comm)": state, ppid, pgrp, session
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to kill


def run(
    duration: float | None, can: str | None, rundir: str | None, keep: bool,
    profile: str = "default",
) -> int:  # fmt: skip
    """Run the demo until ``duration`` seconds pass or Ctrl-C; return the exit code.

    ``profile``: which packs (see :func:`profile_ports`).
    """
    made_dir = rundir is None
    rundir = rundir or tempfile.mkdtemp(prefix="bmsbank-demo-")
    try:
        p = plan(rundir, can, profile)
    except Exception:
        if made_dir:
            shutil.rmtree(rundir, ignore_errors=True)
        raise
    out = sys.stdout
    out.write(f"bmsbank demo ({profile} profile): runtime dir {p.rundir}\n")
    out.write(
        f"  D-Bus : {p.dbus_address}  service com.victronenergy.battery.bmsbank"
        f"{' (private bus)' if p.own_bus else ''}\n"
    )
    if p.can_peer:
        out.write(
            f"  CAN   : slcan far end at {p.can_peer} "
            f"(python-can: interface='slcan', channel='{p.can_peer}')\n"
        )
    else:
        out.write(f"  CAN   : {p.can}\n")
    if profile == "default" and p.own_bus and not fake_bluez_available():
        out.write("  BLE   : left out (the fake BlueZ needs python-dbusmock: "
                  "pip install 'bmsbank[demo]')\n")  # fmt: skip
    out.write(f"  status: bmsbank status --config {p.config_path}\n")
    out.write(f"  web   : {p.web_url}\n")
    out.write(f"  logs  : {p.rundir}/log/\n\n")
    out.flush()
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", p.supervisord_conf],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    context: zmq.Context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(f"ipc://{p.rundir}/tap.ipc")
    deadline = None if duration is None else time.monotonic() + duration
    code = 0
    screen = watch.Watch(watch.Screen(out))  # in place on a terminal, plain blocks in a pipe
    if threading.current_thread() is threading.main_thread():
        runtime.exit_on_stop_signals()  # SIGTERM/SIGHUP stop supervisord too, as Ctrl-C does
    try:
        while deadline is None or time.monotonic() < deadline:
            if supervisord.poll() is not None:
                out.write(f"supervisord exited ({supervisord.returncode}); see {p.rundir}/log\n")
                code = 1
                break
            wait = 1000 if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
            if sub.poll(min(wait, 1000)):
                topic, body = sub.recv_multipart()
                screen.take(topic, body)
    except (KeyboardInterrupt, SystemExit):
        out.write("bmsbank demo: stopping…\n")  # a second Ctrl-C is ignored while it stops
        out.flush()
    finally:
        sub.close()
        _stop(supervisord)
        if made_dir and not keep:
            shutil.rmtree(p.rundir, ignore_errors=True)
    out.write("bmsbank demo: stopped\n")
    return code
