"""The family registry: folders found, metadata light, README's table true to the metadata."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bmsbank.services.poller import plugins

ROOT = Path(__file__).resolve().parent.parent


def test_every_folder_is_a_family_with_a_simulator():
    names = {"ant", "daly", "daly_ble", "daly_can", "daren_485", "ecs", "eg4_lifepower",
             "eg4_ll", "felicity", "heltecmodbus", "hlpdatabms4s", "jbd", "jkbms", "jkbms_ble",
             "jkbms_can", "jkpb", "ks48100", "lltjbd_up16s", "mnb", "pace", "renogy", "seplos",
             "seplosv3", "sinowealth", "victron_can"}  # fmt: skip
    assert set(plugins.families()) == names
    for name in plugins.families():
        cls = plugins.plugin_class(name)
        assert cls.info is plugins.info(name) and cls.name == name
        assert plugins.simulator_class(name).family is cls


def test_metadata_loads_no_codec_and_no_poller_code():
    code = (
        "import sys; from bmsbank.services.poller import plugins; from bmsbank import config; "
        "plugins.families(); print(sorted(m for m in sys.modules if 'native' in m "
        "or m.endswith(('.family', '.base', '.simulator', 'poller.service'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_readme_family_table_matches_the_metadata():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    row = (r"^\| `(\w+)` \| \[[^]]+\]\(([^)]+)\) \|([^|]+)\| (\d+|—) (8[NEO]1|Hz|bit/s|GATT) \|"
           r"([^|]+)\|"
           r"([^|]*)\|([^|]*)\|$")  # fmt: skip
    rows = re.findall(row, text, re.MULTILINE)
    assert {r[0] for r in rows} == set(plugins.families())
    for name, source, link, baud, parity, bus, controls, options in rows:
        info = plugins.info(name)
        assert source == f"services/poller/plugins/{name}/family.py", name
        assert (ROOT / source).is_file(), source
        # SPI: the clock; CAN: the bus bit rate; BLE: no speed, GATT characteristics
        framing = ("Hz" if info.link.startswith("SPI") else "bit/s" if info.link == "CAN"
                   else "GATT" if info.link == "BLE" else f"8{info.parity}1")  # fmt: skip
        assert (0 if baud == "—" else int(baud)) == info.baudrate and parity == framing, name
        # a serial family that also speaks BLE (JBD) lists both links
        links = [x.strip() for x in link.split(",")]
        assert all(x in info.link or x == "BLE" and info.ble for x in links), name
        assert ("BLE" in links) == (info.ble is not None), name
        first, last = info.addresses[0], info.addresses[-1]
        assert bus.strip().startswith("yes") == info.multidrop, name
        if info.multidrop:
            assert f"{first}–{last}" in bus, (name, bus)
        listed = {c.strip() for c in controls.split(",") if c.strip()}
        assert listed == set(info.controls), name
        assert set(re.findall(r"`(\w+)`", options)) == {o.name for o in info.options}, name


def test_counter_kinds_are_one_declared_set():
    import pytest

    from bmsbank.errors import FRAME_KINDS, LINK_COUNTERS, FrameError
    from bmsbank.native.spec import REASONS
    from bmsbank.services.poller.plugins.base import LinkStats

    assert set(REASONS.values()) <= FRAME_KINDS <= set(LINK_COUNTERS)
    assert tuple(LinkStats.__annotations__) == LINK_COUNTERS == tuple(LinkStats().as_dict())
    with pytest.raises(ValueError, match="not a declared link counter"):
        FrameError("x", kind="weird")
    with pytest.raises(ValueError, match="unknown link counter"):
        LinkStats().count("weird")


def test_a_reply_collected_until_a_frame_says_it_is_the_last():
    """Collect(until=...): frames <number> <last> <value> until one has last = 1."""
    import pytest

    from bmsbank.errors import FrameError, LinkTimeout
    from bmsbank.native.spec import Binary, Check, Field, Layout
    from bmsbank.services.poller.plugins.base import Collect, LinkStats, Plugin, Query, run_query
    from bmsbank.services.poller.plugins.info import FamilyInfo

    class Chunked(Plugin):
        info = FamilyInfo("chunked", "Chunked", "UART", 9600)
        framing = Binary(b"\xc5", fixed_length=5, check=Check("sum8", end=-1, at=-1))
        layouts = {"values": Layout((Field("n", 0, "u8"), Field("last", 1, "u8"),
                                     Field("values", 2, "u8", count=0)), 1, -1)}  # fmt: skip
        key_at = 0
        keys = {0xC5: "values"}

    def frame(n: int, last: int, value: int) -> bytes:
        body = bytes((0xC5, n, last, value))
        return body + bytes((sum(body) & 0xFF,))

    class Link:
        timeout = 0.1

        def __init__(self, data: bytes) -> None:
            self.buf = bytearray(data)

        def exchange(self, request, extract):
            return self.receive(extract)

        def receive(self, extract):
            got = extract(self.buf)
            if got is None:
                raise LinkTimeout("timeout")
            return got

    plugin = Chunked()
    q = Query("values", b"?", collect=Collect("n", until="last", frames=8))
    three = frame(1, 0, 10) + frame(2, 0, 20) + frame(3, 1, 30) + frame(4, 0, 40)
    got = run_query(plugin, Link(three), q, 1, {}, LinkStats())
    assert got["values"] == [10, 20, 30] and got["frames"] == 3
    with pytest.raises(FrameError) as err:  # the last frame never came
        run_query(plugin, Link(frame(1, 0, 10) + frame(2, 0, 20)), q, 1, {}, LinkStats())
    assert err.value.kind == "sequence"
