"""``bmsbank scan``: every serial family found on a pty by its simulator, a mixed RS485 bus swept.

The times are the issue's promises to a user waiting at a terminal (a scan that stops at the
first family that answers takes seconds; a full sweep of addresses 1-16 under half a minute),
not benchmarks: each is the scan's own design figure with a wide margin.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import serial

from bmsbank.services.poller import plugins
from bmsbank.services.poller.scan import (
    PortBusy,
    parse_addresses,
    ports_block,
    scan,
    serial_families,
)
from bmsbank.services.poller.simulators import create
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.bus import SharedBus, line_speed
from bmsbank.services.poller.simulators.ptyserver import PtyServer

FAMILIES = serial_families()
CELLS = {"hlpdatabms4s": 4}  #: families whose BMS has one cell count (else 8 here)


@pytest.fixture
def served():
    servers: list[PtyServer] = []

    def start(sim) -> PtyServer:
        server = PtyServer(sim)
        if isinstance(sim, SharedBus):
            sim.attach(server.slave)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_found_at_its_default_address(served, family):
    info = plugins.info(family)
    cells = CELLS.get(family, 8)
    model = BatteryModel(cells=cells, soc=64.0)
    server = served(create(family, {info.default_address: model}))
    started = time.monotonic()
    found = scan(server.device)
    took = time.monotonic() - started
    assert [(f.family, f.address) for f in found] == [(family, info.default_address)]
    assert found[0].cells == cells and found[0].baudrate == info.baudrate
    assert took <= 5.0, f"{family}: {took:.1f} s"


def test_a_mixed_rs485_bus_is_swept_whole(served):
    """Three families at three addresses, two speeds: all found, none confused for another."""
    wanted = {("seplos", 2): 16, ("seplosv3", 5): 15, ("felicity", 9): 8}
    bus = SharedBus([create(name, {addr: BatteryModel(cells=n)})
                     for (name, addr), n in wanted.items()])  # fmt: skip
    server = served(bus)
    with serial.Serial(server.device, 4800) as port:  # the speed the user left the port at
        before = line_speed(port.fileno())
    started = time.monotonic()
    found = scan(server.device, parse_addresses("1-16"))
    took = time.monotonic() - started
    assert {(f.family, f.address): f.cells for f in found} == wanted
    assert took <= 30.0, f"full sweep took {took:.1f} s"
    assert line_speed(server.slave) == before == 4800  # the line settings are put back
    block = ports_block("rs485", server.device, found)
    assert 'bms = "seplosv3"' in block and "addresses = [5]" in block
    assert "several families share this bus" in block


def test_a_port_held_by_a_running_poller_is_refused(served):
    server = served(create("jbd", {1: BatteryModel()}))
    with serial.Serial(server.device, 9600, exclusive=True):
        with pytest.raises(PortBusy, match="in use"):
            scan(server.device)


def test_nothing_answering_finds_nothing(served):
    server = served(create("jbd", {1: BatteryModel()}))
    server.silent = True
    assert scan(server.device, families=["jbd", "daly"]) == []


def test_the_cli_prints_a_ready_ports_block(served, tmp_path):
    server = served(create("jbd", {1: BatteryModel(cells=4)}))
    cli = [sys.executable, "-m", "bmsbank.cli", "scan", server.device]
    done = subprocess.run([*cli, "--name", "van"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-5:] == [
        "[[ports]]", 'name = "van"', f'device = "{server.device}"', 'bms = "jbd"', "addresses = [1]"
    ]
    assert "4 cells" in done.stdout and "jbd at 9600 8N1, address 1" in done.stderr
    config = tmp_path / "bmsbank.toml"  # the block is a valid port of a config file as printed
    config.write_text(f'runtime_dir = "{tmp_path}"\n{done.stdout}')
    checked = subprocess.run([sys.executable, "-m", "bmsbank.cli", "check-config", str(config)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    bad = subprocess.run([*cli, "--addresses", "16-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "16-1" in bad.stderr


@pytest.mark.parametrize(("text", "addresses"), [
    ("1-4", [1, 2, 3, 4]), ("7", [7]), ("1,3,0x30-0x31", [1, 3, 48, 49]), ("2,1-3", [2, 1, 3]),
])  # fmt: skip
def test_address_ranges(text, addresses):
    assert parse_addresses(text) == addresses


@pytest.mark.parametrize("bad", ["", "a", "1-", "5-2", "256", "-1", "1-300"])
def test_bad_address_ranges_say_what_is_wrong(bad):
    with pytest.raises(ValueError, match="addresses"):
        parse_addresses(bad)


def test_an_auto_port_scans_at_start_then_polls_what_answered(served, tmp_path, caplog,
                                                             monkeypatch):
    """``bms = "auto"``: the poller finds the Daly board, logs it and sends Daly states."""
    import logging
    import threading

    from bmsbank.config import load
    from bmsbank.services.poller import service

    server = served(create("daly", {1: BatteryModel(cells=4, current=2.5)}))
    path = tmp_path / "bmsbank.toml"
    path.write_text(f'runtime_dir = "{tmp_path}"\n[[ports]]\nname = "van"\n'
                    f'device = "{server.device}"\nbms = "auto"\ninterval = 0.2\n')  # fmt: skip
    config = load(str(path))
    assert config.port("van").addresses == [1] and config.pack_ids() == ["van:1"]
    sent: list[dict] = []
    stop = threading.Event()
    real_sender = service.zmq_sender

    def sender(cfg, context):
        sock, _ = real_sender(cfg, context)

        def send(msg):
            sent.append(msg)
            if len(sent) >= 2:
                stop.set()

        return sock, send

    monkeypatch.setattr(service, "zmq_sender", sender)  # the states, straight to this test
    with caplog.at_level(logging.INFO):
        thread = threading.Thread(target=service.run, args=(config, "van", stop.is_set))
        thread.start()
        thread.join(30)
    stop.set()
    assert not thread.is_alive()
    assert [(s["bms"], s["pack"], len(s["cells"])) for s in sent[:2]] == [("daly", "van:1", 4)] * 2
    assert sent[0]["current"] == pytest.approx(2.5, abs=0.1)
    assert any("bms = auto: found daly at address 1 (4 cells" in m for m in caplog.messages)


def test_an_auto_port_takes_no_family_options(tmp_path):
    from bmsbank.config import load
    from bmsbank.errors import ConfigError

    path = tmp_path / "bmsbank.toml"
    path.write_text('[[ports]]\nname = "van"\ndevice = "/dev/ttyUSB0"\nbms = "auto"\n'
                    "invert_current = true\naddresses = [2, 2]\n")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load(str(path))
    text = str(err.value)
    assert "ports[0].invert_current" in text and "ports[0].addresses" in text
