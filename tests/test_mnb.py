"""MNB (MAX17853 over SPI): protocol-built words, the chip simulator, the poller end to end.

No public capture of an MNB's SPI traffic exists: the public driver's own test module
(Louisvdw/dbus-serialbattery etc/dbus-serialbattery/bms/mnb_test_max17853.py) stubs the
transfers out and only prints the requests. The replies below are built from the protocol as the
driver reads it (mnb_utils_max17853.py ``spi_xfer_MAX17``: a read reply carries FLAGS(5) CRC(3)
-(4) DATA(16) OK(1) CRC3(DATA)(3); a write reply FLAGS, address, data), with register values
chosen where the driver's stub chose them (its fake current 0x2014, fake thermistor 0x2059) and
the expected values worked out by hand from the driver's formulas; the CRC-3 of each is checked
against an implementation of the driver's algorithm written here independently of the family's.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from typing import Any, ClassVar

import pytest

from bmsbank.cli import main
from bmsbank.errors import FrameError
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.decode import decode_replies, parse_args
from bmsbank.services.poller.plugins.base import LinkStats, Plugin, run_query
from bmsbank.services.poller.plugins.mnb.family import (
    crc3,
    read,
    read_reply,
    setup_writes,
    write,
)
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.spi_transport import SpiSocketServer, SpiTransport
from bmsbank.state import make_state
from tests.plugin_contract import Captured, PluginContract, assert_close, extract_all
from tests.test_poller import port_config

BUILT = "built from the protocol (mnb_utils_max17853.py spi_xfer_MAX17; no public capture)"
STUB = "the driver's stub value (mnb_test_max17853.py data_cycle), reply built from the protocol"

CAPTURED = [
    # VERSION 0x8532: model 0x853 (MAX17853, foxBMS MXM_MODEL_ID_MAX17853), silicon revision 2.
    Captured(BUILT, "00 08 53 28", "version", {"model": 0x853, "revision": 2, "value": 0x8532},
             request="80 60 00 08"),
    # CELL2 (0x48) = 0xA974: 14-bit 10845 x 0.305 mV = 3.307725 V, the pack's cell 1.
    Captured(BUILT, "00 0a 97 4d", "cell1", {"voltage": 3.307725, "value": 0xA974, "ok": 1},
             request="a4 70 00 08"),
    # CELL9 (0x4F) = 0xABE1: 11000 x 0.305 mV = 3.355 V (the low 2 bits are not the value).
    Captured(BUILT, "00 0a be 1c", "cell8", {"voltage": 3.355}, request="a7 d0 00 08"),
    # CELL1 (0x47), the current-sense amplifier: 0x2014 steps (the stub's CSA(0x2014)) =
    # 2.50466 V -> (2.50466 - 2.5) / 0.025 + 2.2 = +2.3864 A (charging).
    Captured(STUB, "00 08 05 0b", "current", {"current": 2.3864}, request="a3 80 00 08"),
    # AUX0 (0x59), 0x2059 steps (the stub's gpio_decode(0x2000 + 0x59)):
    # ln(16383 / 8282) / 0.01998 - 12.74 = 21.402128 °C.
    Captured(STUB, "00 08 16 49", "aux0", {"temperature": 21.402128}, request="ac d0 00 08"),
    # AUX5 (0x5E) at full scale 0x3FFF: no thermistor fitted -> None.
    Captured(BUILT, "00 0f ff c8", "aux5", {"temperature": None}, request="af 70 00 08"),
    # DIAG1 (0x57) 6582 steps: 6582 / 16384 x 2.3077 V / 3.2 mV + 8.3 - 273 = 25.012551 °C.
    Captured(BUILT, "00 06 6d 8e", "diag1", {"temperature": 25.012551}, request="ab 90 00 08"),
    # STATUS1 (0x02) = 0x1080: cell over voltage (bit 12) and aux under voltage = hot (bit 7);
    # flags 0b00010 with their CRC-3 6 in the first byte.
    Captured(BUILT, "16 01 08 09", "status1", {"value": 0x1080, "flags": 2},
             request="81 00 00 08"),
    # SCANCTRL (0x66) = 0xAE21: scan done (bit 15), data ready (bit 13).
    Captured(BUILT, "00 0a e2 18", "scanctrl", {"data_ready": True}, request="b3 10 00 08"),
    # the write SCANCTRL = 0x0E21 that starts a scan; the reply DRV reads: flags, address, data.
    Captured(BUILT, "00 66 0e 21", "write_66_0e21", {"register": 0x66, "flags": 0},
             request="33 70 e2 12"),
]  # fmt: skip


def driver_crc3(word: int, length: int) -> int:
    """CRC-3 as the driver computes it (CrcA_MAX17: a shifting mask), written out here."""
    mask, test, rest = 0x0B << (length - 1), 1 << (length + 2), word << 3
    for _ in range(length):
        if rest & test:
            rest ^= mask
        mask >>= 1
        test >>= 1
    return rest


class TestMnb(PluginContract):
    plugin_name = "mnb"
    captured = CAPTURED
    requests: ClassVar[dict[str, str]] = {
        "version": "80 60 00 08",  # read 0x00: RW 1, address 0, CRC3(0x100) = 6, data 0
        "cell1": "a4 70 00 08",  # read 0x48
        "current": "a3 80 00 08",  # read 0x47
        "scanctrl": "b3 10 00 08",  # read 0x66
        "write_66_0e21": "33 70 e2 12",  # write 0x66 = 0x0E21: CRC3(0x066) = 7, CRC3(data) = 2
    }
    address = None
    roundtrip_tolerance: ClassVar[dict[str, float]] = {"cells": 0.0002, "current": 0.007}

    def make_models(self) -> dict[int, BatteryModel]:
        """The MNB board: 8 cells, the driver's 129.6 Ah."""
        return {0: BatteryModel(cells=8, capacity=129.6, soc=63.5, current=-12.3,
                                imbalance=0.031, temperatures=[21.5, 23.0],
                                faults={"high_charge_temperature"})}  # fmt: skip

    def check_state(self, state: dict[str, Any], model: BatteryModel) -> None:
        """As the contract, but the SoC is the driver's count, not the model's: 50 % at start."""
        truth = model.snapshot()
        tol = {"voltage": 0.002, "current": 0.007, "capacity": 1e-9, "cells": 0.0002,
               "temperatures": 0.01}  # fmt: skip
        for key, t in tol.items():
            assert_close(state[key], truth[key], key, tol=t)
        assert state["soc"] == pytest.approx(50.0, abs=0.01)
        assert state["remaining"] == pytest.approx(64.8, abs=0.02)
        assert state["mosfet_temperature"] == pytest.approx(model.mosfet_temperature, abs=0.05)
        assert state["charge_fet"] and state["discharge_fet"]  # cells 3.3 V: both outputs on

    # -- the contract's serial-stream checks, in their SPI form --------------------------------
    def test_bad_checksum_is_rejected_and_counted(self, plugin: Plugin) -> None:
        """A read's CRC-3 is checked with the request (a reply alone does not say it is a read)."""
        for cap in self.captured:
            if cap.request_bytes[0] & 0x80 == 0:
                continue  # a write's reply carries no check
            bad = bytearray(cap.raw)
            bad[-1] ^= 0x01
            frames, errors, _ = extract_all(plugin, bytes(bad))
            assert frames == [bytes(bad)] and not errors, "SPI words come whole"
            with pytest.raises(FrameError) as err:
                plugin.parse(frames[0], cap.request_bytes)
            assert err.value.kind == "checksum", cap.source

    def test_noise_and_partial_frames_between_good_ones(self, plugin: Plugin) -> None:
        """An SPI transfer returns exactly its reply: words are taken in order, a part waits."""
        raw = self.captured[0].raw
        buf = bytearray(raw + raw + raw[:3])
        stats = LinkStats()
        assert plugin.extract(buf, stats) == raw and plugin.extract(buf, stats) == raw
        assert plugin.extract(buf, stats) is None and buf == raw[:3]
        assert stats.noise_bytes == 0

    def test_echo_is_dropped_by_the_transport(self, plugin: Plugin, tmp_path) -> None:
        """SPI has no echo: instead, the SPI transport reads the chip through its stand-in."""
        models = self.make_models()
        server = SpiSocketServer(simulators.create("mnb", models), str(tmp_path / "spi.sock"))
        server.start()
        transport = SpiTransport(server.device, plugin.baudrate)
        transport.open()
        try:

            class SpiLink:
                timeout = 0.2

                def exchange(self, request: bytes, extract: Any) -> bytes:
                    transport.drain()
                    transport.send(request)
                    return transport.receive(extract, self.timeout)

                def receive(self, extract: Any) -> bytes:
                    return transport.receive(extract, self.timeout)

            stats, parts, link = LinkStats(), {}, SpiLink()
            for q in plugin.queries(0):
                parts[q.part] = run_query(plugin, link, q, 0, parts, stats)
            state = validate_state(make_state("sim", 0, "mnb", 0, plugin.state(parts), {}))
            self.check_state(state, models[0])
            assert server.transactions == len(plugin.queries(0))
        finally:
            transport.close()
            server.stop()


# -- the wire ---------------------------------------------------------------------------------
def test_crc3_is_the_drivers():
    for length, values in ((9, range(1 << 9)), (16, range(0, 1 << 16, 97)), (5, range(32))):
        for v in values:
            assert crc3(v, length) == driver_crc3(v, length), (length, v)


def test_requests_are_laid_out_as_the_driver_builds_them():
    """Byte by byte as spi_xfer_MAX17 composes txdata (RW, address, CRC-3s, data, RW)."""
    for rw, address, data in ((1, 0x48, 0), (0, 0x66, 0x0E21), (0, 0x1F, 0xB20C), (1, 0xFF, 0)):
        crca, crcb = driver_crc3(rw << 8 | address, 9), driver_crc3(data, 16)
        expected = bytes((rw << 7 | address >> 1,
                          (address & 1) << 7 | crca << 4 | data >> 12,
                          (data >> 4) & 0xFF,
                          (data << 4) & 0xFF | rw << 3 | crcb))  # fmt: skip
        assert (read(address) if rw else write(address, data)) == expected


def test_the_chip_is_configured_as_the_driver_does_for_its_cell_count():
    """init_max's writes for 8 cells (values worked out from its formulas), once per start."""
    writes = dict(setup_writes(8))
    assert writes[0x18] == 0x2999  # PACKCFG: top cell 9 (8 cells above the current input)
    assert writes[0x1A] == writes[0x1B] == 0x41FE  # alerts on inputs 2..9 (bits 1..8)
    assert writes[0x64] == 0x41FF  # measure the block and inputs 1..9 (bits 0..8)
    assert writes[0x20] == int(3.65 / 0.000305) << 2  # cell over voltage 3.65 V
    assert writes[0x22] == int(2.55 / 0.000305) << 2
    assert writes[0x29] == int(3.65 * 8 / 0.003967) << 2  # block over voltage 29.2 V
    assert writes[0x33] == int(16383 / math.exp(0.01988 * (40 + 12.74))) << 2  # hot: 40 °C
    plugin = plugins.load("mnb", {"cells": 4})
    once = [q for q in plugin.queries(0) if q.every == 0]
    assert len(once) == len(setup_writes(4)) + 2  # the writes, ID1, ID2
    assert dict(setup_writes(4))[0x18] == 0x2555
    assert [q.part for q in plugin.queries(0) if q.part.startswith("cell")] == [
        "cell1", "cell2", "cell3", "cell4"]  # fmt: skip
    assert plugin.queries(0)[0].part == "version"  # the identification read comes first


BAD_WORDS = [
    pytest.param("00 0a 97 4c", "a4 70 00 08", "checksum", id="read-with-wrong-crc3"),
    pytest.param("ff ff ff ff", "a4 70 00 08", "checksum", id="miso-stuck-high"),
    pytest.param("00 0a 97", "a4 70 00 08", "malformed", id="short-word"),
    pytest.param("00 0a 97 4d", None, "unexpected", id="no-request"),
    pytest.param("00 0a 97 4d", "a4 70 00 09", "unexpected", id="request-with-wrong-crc3"),
    pytest.param("00 0a 97 4d 00", "a4 70 00 08", "malformed", id="long-word"),
    pytest.param(read_reply(0x1234).hex(), "80 60 00 08", "unexpected", id="not-a-max1785x"),
    pytest.param(read_reply(0x0000).hex(), "80 60 00 08", "unexpected", id="miso-stuck-low"),
    pytest.param(read_reply(0x8E21).hex(), "b3 10 00 08", "truncated", id="scan-not-ready"),
]


@pytest.mark.parametrize("reply, asked, kind", BAD_WORDS)
def test_malformed_replies_are_rejected_by_kind(plugin_mnb, reply, asked, kind):
    frame = bytes.fromhex(reply)
    with pytest.raises(FrameError) as err:
        plugin_mnb.parse(frame, bytes.fromhex(asked) if asked else None)
    assert err.value.kind == kind


@pytest.fixture
def plugin_mnb() -> Plugin:
    return plugins.load("mnb")


def test_check_crc_false_accepts_a_wrong_crc3():
    plugin = plugins.load("mnb", {"check_crc": False})
    _, fields = plugin.parse(bytes.fromhex("00 0a 97 4c"), bytes.fromhex("a4 70 00 08"))
    assert fields["voltage"] == pytest.approx(3.307725)


def test_current_calibration_options():
    plugin = plugins.load("mnb", {"current_offset": 0.0, "current_gain": 0.05})
    _, fields = plugin.parse(bytes.fromhex("00 08 05 0b"), bytes.fromhex("a3 80 00 08"))
    assert fields["current"] == pytest.approx((0x2014 * 0.000305 - 2.5) / 0.05)
    with pytest.raises(ValueError):
        plugins.load("mnb", {"cells": 14})  # input 15 would be past CELL14


def test_cli_decodes_a_reply_with_its_request(capsys):
    assert main(["decode", "mnb", "a4 70 00 08=00 0a 97 4d"]) == 1  # one part: no whole state
    out, err = capsys.readouterr()
    assert "incomplete state" in err and '"voltage": 3.307725' in out
    assert main(["decode", "mnb", "00 0a 97 4d"]) == 1
    assert "rejected (unexpected)" in capsys.readouterr().err


def test_a_whole_cycle_decodes_offline_to_a_state():
    """Every request of a cycle with the simulator's reply, through ``decode_replies``."""
    plugin = plugins.load("mnb")
    sim = simulators.create("mnb", TestMnb().make_models())
    pairs = [(q.request, sim.transfer(q.request)) for q in plugin.queries(0)]
    args = [f"{req.hex()}={rep.hex()}" for req, rep in pairs]
    parts, stats, left = decode_replies(plugin, parse_args(args))
    assert left == 0 and stats.noise_bytes == 0
    state = plugin.state(parts)
    assert state["cells"][0] == pytest.approx(3.3074, abs=0.0002)
    assert state["hardware"] == "MNB (MAX17853 rev 2) 8S" and state["serial"] == "4D4E4200"


# -- what the family computes in software ---------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(plugin: Plugin, current: float, cells: list[float]) -> float:
    return plugin.count_charge(current, cells)  # type: ignore[attr-defined]


def test_soc_is_counted_as_the_driver_counts_it():
    plugin, clock = plugins.load("mnb", {"capacity": 100.0}), Clock()
    plugin.clock = clock  # type: ignore[attr-defined]
    mid = [3.30] * 8
    assert counted(plugin, 10.0, mid) == 50.0  # the driver's start: half the capacity
    clock.now += 1800  # half an hour at +10 A: +5 Ah
    assert counted(plugin, 10.0, mid) == pytest.approx(55.0)
    clock.now += 3600  # an hour at -20 A
    assert counted(plugin, -20.0, mid) == pytest.approx(35.0)
    clock.now += 36000  # held at empty, never below
    assert counted(plugin, -20.0, mid) == 0.0
    clock.now += 1
    assert counted(plugin, 0.0, [3.61] + [3.4] * 7) == 100.0  # a cell over 3.60 V: full
    clock.now += 1
    assert counted(plugin, 0.0, [2.59] + [3.2] * 7) == 0.0  # a cell under 2.60 V: empty


def test_charge_and_load_outputs_follow_the_driver_with_hysteresis():
    plugin = plugins.load("mnb")
    outputs = plugin.outputs  # type: ignore[attr-defined]
    assert outputs([3.3] * 8) == (True, True)
    assert outputs([3.61] + [3.4] * 7) == (False, True)  # over 3.60 V: charging stops
    assert outputs([3.55] + [3.4] * 7) == (False, True)  # not back on until under 3.50 V
    assert outputs([3.49] + [3.4] * 7) == (True, True)
    assert outputs([2.59] + [3.2] * 7) == (True, False)  # under 2.60 V: the load goes off
    assert outputs([2.65] + [3.2] * 7) == (True, False)  # not back on until over 2.70 V
    assert outputs([2.71] + [3.2] * 7) == (True, True)


# -- the SPI transport and the poller ----------------------------------------------------------
@pytest.fixture
def chip(tmp_path):
    """An MNB simulator served on a socket; yields the server."""
    models = TestMnb().make_models()
    models[0].faults = set()
    server = SpiSocketServer(simulators.create("mnb", models), str(tmp_path / "mnb.sock"))
    server.start()
    yield server
    server.stop()


def test_the_poller_reads_a_pack_through_the_spi_stand_in(chip):
    sent: list[dict] = []
    poller = Poller(port_config(chip.device, "mnb", [0], interval=0.2), sent.append)
    assert isinstance(poller.transport, SpiTransport)
    try:
        poller.poll_once()
        chip.chip.corrupt = 1  # a read goes out with a wrong CRC-3: counted, read again
        poller.poll_once()
    finally:
        poller.close()
    assert len(sent) == 2
    state = validate_state(sent[-1])
    model = chip.chip.model
    assert state["bms"] == "mnb" and state["pack"] == "p:0"
    assert state["cells"] == pytest.approx(model.cell_voltages, abs=0.0002)
    assert state["current"] == pytest.approx(model.current, abs=0.007)
    assert state["temperatures"] == pytest.approx(model.temperatures, abs=0.01)
    assert state["serial"] == "4D4E4200"
    assert state["link"]["checksum"] == 1 and state["link"]["ok"] == 2


def test_a_missing_stand_in_is_a_port_error_and_comes_back(tmp_path):
    path = str(tmp_path / "late.sock")
    sent: list[dict] = []
    poller = Poller(port_config("spisim:" + path, "mnb", [0]), sent.append)
    poller.poll_once()
    assert not sent and poller.links[0].stats.port_errors == 1
    server = SpiSocketServer(simulators.create("mnb", TestMnb().make_models()), path).start()
    try:
        poller.retry_at = 0.0
        poller.poll_once()
        assert len(sent) == 1
        server.stop()  # the chip goes: the next transaction fails, the port is lost
        poller.poll_once()
        assert not poller.transport.is_open
    finally:
        poller.close()
        server.stop()


def test_the_simulator_runs_in_another_process_as_the_demo_starts_it(tmp_path):
    """``python -m ...simulators --bms mnb`` serves a socket; a poller here reads it."""
    path = tmp_path / "demo.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.services.poller.simulators", "--bms", "mnb",
         "--link", str(path), "--addresses", "0", "--cells", "8", "--current", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if path.exists():
                break
            time.sleep(0.05)
        sent: list[dict] = []
        poller = Poller(port_config(f"spisim:{path}", "mnb", [0]), sent.append)
        try:
            poller.poll_once()
        finally:
            poller.close()
        assert len(sent) == 1 and sent[0]["current"] == pytest.approx(5.0, abs=0.007)
        assert len(sent[0]["cells"]) == 8
    finally:
        proc.terminate()
        proc.wait(timeout=5)
