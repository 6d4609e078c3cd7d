"""``bmsbank decode`` decodes every captured frame of every family's tests.

Each family's test module holds its captures in its contract class (``captured``); here every one
goes through the command line, as a user would paste it (``REQUEST=REPLY`` where the protocol's
replies do not say what they answer), and must decode to what the capture's source says.
"""

from __future__ import annotations

import importlib
import json

import pytest

from bmsbank.cli import main
from bmsbank.services.poller import plugins
from bmsbank.services.poller.decode import decode_replies, parse_args
from tests.plugin_contract import Captured, PluginContract, assert_close


def contract(name: str) -> type[PluginContract]:
    """The contract class of family ``name`` (in tests/test_<name>.py)."""
    module = importlib.import_module(f"tests.test_{name}")
    found = [
        c
        for c in vars(module).values()
        if isinstance(c, type)
        and issubclass(c, PluginContract)
        and getattr(c, "plugin_name", None) == name
    ]
    assert len(found) == 1, f"tests/test_{name}.py has one contract class"
    return found[0]


#: the families of serial links (a CAN family's frames are tested in its own test module)
SERIAL = [n for n, i in plugins.families().items() if i.link != "CAN"]
CAPTURES = [
    pytest.param(name, i, cap, id=f"{name}-{i}")
    for name in SERIAL
    for i, cap in enumerate(contract(name).captured)
]


def test_every_family_has_a_test_module_with_captures():
    names = {p.values[0] for p in CAPTURES}
    assert names == set(SERIAL)


@pytest.mark.parametrize("name, index, cap", CAPTURES)
def test_the_cli_decodes_every_capture(capsys, name: str, index: int, cap: Captured):
    arg = f"{cap.request}={cap.hex}" if cap.request else cap.hex
    address = contract(name).address
    plugin = plugins.load(name)
    parts, _, _ = decode_replies(plugin, parse_args([arg]), address)
    collect = plugin.collecting(cap.part)  # one frame of several: its number is not kept
    expect = {k: v for k, v in cap.expect.items() if collect is None or k != collect.index}
    assert_close(parts[cap.part], expect, cap.source)
    code = main(["decode", name, arg] + ([] if address is None else ["--address", str(address)]))
    out, err = capsys.readouterr()
    data = json.loads(out)
    if code == 0:  # a whole state from this one reply
        assert data["kind"] == "state" and data["bms"] == name, data
    else:  # one part of a poll cycle: the state is incomplete, the decoded parts are shown
        assert code == 1 and "incomplete state" in err, err
        assert cap.part in data["parts"]
