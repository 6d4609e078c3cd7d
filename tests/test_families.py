"""The family registry: folders found, metadata light, README's table true to the metadata."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bmsbank.services.poller import plugins

ROOT = Path(__file__).resolve().parent.parent


def test_every_folder_is_a_family_with_a_simulator():
    assert set(plugins.families()) == {"daly", "jbd", "jkbms", "jkpb", "seplos", "seplosv3"}
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
    row = r"^\| `(\w+)` \|[^|]+\|([^|]+)\| (\d+) \|([^|]+)\|([^|]*)\|([^|]*)\|$"
    rows = re.findall(row, text, re.MULTILINE)
    assert {r[0] for r in rows} == set(plugins.families())
    for name, link, baud, bus, controls, options in rows:
        info = plugins.info(name)
        assert int(baud) == info.baudrate and link.strip() in info.link, name
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
