"""KS48100 plugin and simulator: Daren 485 with ``>`` requests, on frames built from the protocol.

No raw KS48100 RS485 exchange is public (searched: dbus-serialbattery's ks48100.py, sns01_485.py
and PR #168, syssi/esphome-ks-bms (BLE, another protocol), fl4p/batmon-ha). The requests here are
the ones mr-manuel/venus-os_dbus-serialbattery bms/ks48100.py sends, byte for byte. Every reply is
BUILT: the Daren 485 frame layout (see daren_485/family.py) around INFO bytes of the Daren
captures in tests/test_daren_485.py (same values) or values from PR #168's log ("get_serial:
CER2408-04", "hardware_version: SNS01 16S100A Ho20-T1 02.02.01"), with the checksum computed.
"""

from __future__ import annotations

import pytest

from bmsbank.config import parse
from bmsbank.errors import FrameError
from bmsbank.native.spec import FRAME, NONE, PARTIAL, AsciiHex
from bmsbank.schema import validate_state
from bmsbank.services.poller import plugins, simulators
from bmsbank.services.poller.plugins.base import Plugin
from bmsbank.services.poller.plugins.daren_485.family import frame
from bmsbank.services.poller.service import Poller
from bmsbank.services.poller.simulators.battery import BatteryModel
from bmsbank.services.poller.simulators.ptyserver import PtyServer
from bmsbank.state import make_state
from tests.plugin_contract import Captured, MultidropContract, extract_all, poll
from tests.test_daren_485 import CAPTURED as DAREN

BUILT = "built: Daren 485 layout, INFO of tests/test_daren_485.py capture {}, CID1 0x{:02X}"
LOG = "built from dbus-serialbattery PR #168's log (SNS01 16S100A Ho20-T1, serial CER2408-04)"
# mr-manuel/venus-os_dbus-serialbattery bms/ks48100.py create_command_get_* at address 1
R42, R47, R51 = ">220142420000FDAF\r", ">22014247E00201FD32\r", ">220142510000FDAF\r"
RB3, RB4 = ">22014AB0600A010103FF56FB61\r", ">22014AB0600A010104FF00FB6B\r"


def cap(source: str, text: str, part: str, expect: dict, request: str) -> Captured:
    return Captured(source, (text + "\r").encode().hex(), part, expect, request.encode().hex())


CAPTURED = [
    # 0: realtime, CID1 0x42 (the request's): Daren capture 0's values (SoC 67 %, 53.12 V, 0 A,
    # 53.60 of 80.00 Ah, 204 cycles, both FETs on).
    cap(BUILT.format(0, 0x42), "~22014200E0C6001A2C14C0100D010D010CDB0D010D010D000D020"
        "CE60CF80D020D010CDF0D020D020D000CE0010E0104010E040104010401040104000000000050011F4014F"
        "000CC000000000000000000230000000000000000000000000000000000000000000000D591", "realtime",
        {"soc": 67.0, "voltage": 53.12, "current": 0.0, "capacity": 80.0, "remaining": 53.6,
         "cycles": 204, "fet_status": 0x23, "temperatures": [26.0] * 4}, R42),
    # 1: realtime, CID1 0x4A (as Daren answers): Daren capture 1's values, discharging -11.16 A.
    cap(BUILT.format(1, 0x4A), "~22014A00E0C600168A146D100CC90CC70CC70CC70C9F0CC90CC60"
        "CCA0CC60CCB0CC20CC90CC10CC90CC60CC8008C00A000960400AA00AA009600A0FBA400000061013E80241"
        "000ED000000020000000000230000000000000000000000000000000000000000000000D3F4", "realtime",
        {"soc": 57.7, "voltage": 52.29, "current": -11.16, "current_status": 2}, R42),
    # 2: params, CID1 0x42: Daren capture 5's values (120.00 A, 16 cells, "DJM2205180061").
    cap(BUILT.format(5, 0x42), "~220142006082000E4209C40073002D2EE00E4209C400102EE01F4"
        "005A00000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF444A4D3232303531383030363120202020202"
        "020E03B",
        "params", {"charge_current_limit": 120.0, "param_cells": 16,
                   "bms_barcode": "DJM2205180061"}, R47),
    # 3: capacity (B0 module 4, CID1 0x4A): Daren capture 11 as it is.
    Captured(DAREN[11].source, DAREN[11].hex, "capacity",
             {"remaining": 53.6, "capacity": 80.0, "design_capacity": 100.0},
             RB4.encode().hex()),
    # 4: serial (B0 module 3, function length 0x56 repeated): pack serial "CER2408-04", born
    # 2024-08-01, manufacturer "CERRNSS", the rest NUL.
    cap(LOG, "~22014A0040EEB0010103FF56434552323430382D3034000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000180801434552524E53530000000000000000000"
        "0000000CFE0", "serial", {"function_length": 0x56, "pack_serial": "CER2408-04",
                          "born": [24, 8, 1], "manufacturer": "CERRNSS"}, RB3),
    # 5: maker (0x51, CID1 0x42): hardware type "Ho20-T1", product "SNS01", project "16S100A",
    # software 02.02.01, boot 01 01.
    cap(LOG, "~220142006046486F32302D5431202020534E53303120202020203136533130304120202"
        "00202010101EFC1", "maker", {"hardware_type": "Ho20-T1", "product_code": "SNS01",
                         "project_code": "16S100A", "version": "02.02.01"}, R51),
]  # fmt: skip


class TestKs48100(MultidropContract):
    plugin_name = "ks48100"
    address = 1
    captured = CAPTURED
    requests = {"realtime": R42.encode().hex(), "params": R47.encode().hex(),
                "capacity": RB4.encode().hex(), "serial": RB3.encode().hex(),
                "maker": R51.encode().hex()}  # fmt: skip

    def checksum_index(self, length: int) -> int:
        return length - 5  # the first CHKSUM digit (the frame ends with CR)


@pytest.fixture
def plugin() -> Plugin:
    return plugins.load("ks48100")


def test_metadata_and_what_differs_from_daren(plugin: Plugin) -> None:
    daren = plugins.load("daren_485")
    assert isinstance(plugin, type(daren)) and plugin.layouts is daren.layouts
    assert (plugin.baudrate, plugin.addresses, plugin.default_address) == (9600, range(32), 1)
    assert plugin.reply_timeout == 3.0 and daren.reply_timeout == 1.0
    assert [o.name for o in plugin.info.options] == ["swap_fets"] and not plugin.controls
    assert plugin.queries(12)[1].request == b">220C4247E0020CFD0E\r"  # 0x47: INFO = address


def test_captured_cycle_builds_state(plugin: Plugin) -> None:
    parts = dict(plugin.parse(c.raw, c.request_bytes, 1) for c in CAPTURED[1:])
    state = validate_state(make_state("ttyUSB0", 1, "ks48100", 0, plugin.state(parts), {}))
    assert state["current"] == pytest.approx(-11.16) and state["soc"] == pytest.approx(57.7)
    assert state["serial"] == "CER2408-04" and state["bms_ccl"] == 120.0
    assert state["hardware"] == "KS48100 SNS01 16S100A Ho20-T1 fw 02.02.01"


@pytest.mark.parametrize("cid1", [0x46, 0x4B], ids=["cid1-46", "cid1-4b"])
def test_reply_with_a_cid1_of_no_ks48100_request_is_unexpected(plugin: Plugin, cid1: int) -> None:
    raw = frame(b"~", 1, cid1, 0, bytes.fromhex(CAPTURED[0].raw[13:-5].decode()))
    with pytest.raises(FrameError) as err:
        plugin.parse(raw, R42.encode())
    assert err.value.kind == "unexpected"


def test_a_reply_may_start_with_either_byte(plugin: Plugin) -> None:
    tilde = CAPTURED[0].raw
    angle = b">" + tilde[1:]
    frames, errors, stats = extract_all(plugin, b"\x00" + angle + tilde)
    assert frames == [angle, tilde] and not errors and stats.noise_bytes == 1
    assert plugin.parse(angle, R42.encode(), 1) == plugin.parse(tilde, R42.encode(), 1)
    daren = plugins.load("daren_485")  # Daren replies start with "~" only
    assert extract_all(daren, angle)[0] == []


def test_request_framing_finds_gt_requests_in_both_implementations(frames_impls) -> None:
    """The simulator's request framing: ``>`` starts a request, ``~`` (a Daren request) does not."""
    stream = b"\x00~22014A42E00201FD28\r" + R42.encode() + b">2201" + RB3.encode()
    results = []
    for impl in frames_impls:
        framer, buf, got = impl.framer(AsciiHex(soi=b">")), bytearray(stream), []
        while (step := impl.take(framer, buf))[0] not in (NONE, PARTIAL):
            got.append(step)
        results.append(got)
        assert [data for status, _, data, _ in got if status == FRAME] == [
            R42.encode(),
            RB3.encode(),
        ]
        assert framer.payload(R42.encode())[:4] == bytes((0x22, 1, 0x42, 0x42))
    assert results[0] == results[1]


def test_simulator_listens_for_its_own_requests_only(plugin: Plugin) -> None:
    sim = simulators.create("ks48100", {1: BatteryModel()})
    for request in (
        "~22014A42E00201FD28\r",  # Daren's realtime request at address 1
        ">220242420000FDAE\r",  # address 2: nobody there
        ">22014247E00202FD31\r",  # 0x47 with another address as COMMAND INFO
    ):
        assert sim.feed(request.encode()) == [], request
    (reply,) = sim.feed(R42.encode())
    assert reply.startswith(b"~22014200") and plugin.parse(reply, R42.encode(), 1)[0] == "realtime"
    (reply,) = sim.feed(RB4.encode())
    assert reply.startswith(b"~22014A00")  # B0 goes to CID1 0x4A, and the reply repeats it


def test_daren_and_ks48100_packs_share_one_bus() -> None:
    """Each simulator answers its own family's requests at its own address, never the other's."""
    daren, ks = plugins.load("daren_485"), plugins.load("ks48100")
    models = {1: BatteryModel(soc=20.0), 2: BatteryModel(soc=80.0, current=12.0)}
    sims = (simulators.create("daren_485", {1: models[1]}),
            simulators.create("ks48100", {2: models[2]}))  # fmt: skip

    class Bus:
        """Both simulators hear every request; what either says comes back."""

        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def feed(self, data: bytes) -> list[bytes]:
            return [r for sim in sims for r in sim.feed(data)]

    for plugin, address, silent in ((daren, 1, 2), (ks, 2, 1)):
        state = poll(plugin, Bus(), address)
        assert state["soc"] == pytest.approx(models[address].soc)
        for q in plugin.queries(silent):
            assert Bus().feed(q.request) == []


def test_poller_reads_a_pack_on_a_pty(tmp_path) -> None:
    model = BatteryModel(cells=16, soc=55.0, current=-20.0, temperatures=[18.0, 19.0, 20.0])
    server = PtyServer(
        simulators.create("ks48100", {3: model}), link=str(tmp_path / "tty"), model_wire=True
    ).start()
    try:
        port = parse(
            {"ports": [{"name": "p", "device": server.device, "bms": "ks48100", "addresses": [3]}]},
            "test",
        ).ports[0]
        sent: list[dict] = []
        poller = Poller(port, sent.append)
        poller.poll_once()
        poller.close()
    finally:
        server.stop()
    (state,) = sent
    validate_state(state)
    assert state["current"] == pytest.approx(-20.0) and state["soc"] == pytest.approx(55.0)
    assert state["temperatures"] == pytest.approx(model.temperatures)
    assert state["serial"] == "KS48100-0003" and state["link"]["timeout"] == 0
