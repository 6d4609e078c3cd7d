"""[[ble]]: each adapter's devices become ports of one poller process; bad keys are named."""

from __future__ import annotations

import pytest

from bmsbank import config
from bmsbank.errors import ConfigError
from bmsbank.services.poller import ble_scan

BLE = """
[bank]
stale_after = 10
[[ports]]
name = "rs485"
device = "/dev/ttyUSB0"
bms = "jkpb"
addresses = [1, 2]
[[ble]]
adapter = "hci1"
[[ble.devices]]
name = "shed"
address = "a4:c1:38:00:00:01"
bms = "jbd"
interval = 2
[[ble.devices]]
name = "van"
address = "A4:C1:38:00:00:02"
bms = "jbd"
retries = 2
"""


def load(tmp_path, text: str) -> config.Config:
    path = tmp_path / "bmsbank.toml"
    path.write_text(text)
    return config.load(str(path))


def problems(tmp_path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    return [f"{p.key}: {p.expected}" for p in err.value.problems]


def test_ble_devices_are_ports_of_one_process_per_adapter(tmp_path):
    c = load(tmp_path, BLE)
    assert [p.name for p in c.ports] == ["rs485", "shed", "van"]  # [[ports]] first
    shed, van = c.ports[1:]
    assert shed.device == "ble:hci1/A4:C1:38:00:00:01" and shed.interval == 2.0
    assert config.ble_target(van.device) == ("hci1", "A4:C1:38:00:00:02") and van.retries == 2
    assert shed.addresses == [1] and shed.process == van.process == "ble-hci1"
    assert set(c.processes()) == {"shared", "ble-hci1"}
    assert c.pack_ids() == ["rs485:1", "rs485:2", "shed:1", "van:1"]


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (('address = "A4:C1:38:00:00:02"', 'address = "A4:C1:38"'), "ble[0].devices[1].address",
         "a MAC address"),
        (('bms = "jbd"\nretries', 'bms = "jkpb"\nretries'), "ble[0].devices[1].bms", "one of "),
        (('bms = "jbd"\nretries', 'bms = "auto"\nretries'), "ble[0].devices[1].bms", "one of "),
        (("retries = 2", 'device = "/dev/x"'), "ble[0].devices[1].device", "no such key"),
        (("retries = 2", "echo = true"), "ble[0].devices[1].echo", "no such key"),
        (('adapter = "hci1"', 'adapter = "usb0"'), "ble[0].adapter", "hci0"),
        (('adapter = "hci1"', 'adaptor = "hci1"'), "ble[0].adaptor", "did you mean adapter"),
        (('name = "van"', 'name = "rs485"'), 'ble[0].devices[1].name',
         "no other port or BLE device"),
        (('"A4:C1:38:00:00:02"', '"a4:c1:38:00:00:01"'), 'ble[0].devices[1].address',
         "ble[0].devices[0] has it too"),
        (("interval = 2", "interval = 9"), "bank.stale_after", "BLE device shed.interval"),
    ],
)  # fmt: skip
def test_bad_ble_keys_are_named(tmp_path, change, key, expected):
    text = BLE.replace(*change)
    assert text != BLE
    found = problems(tmp_path, text)
    assert any(p.startswith(f"{key}: ") and expected in p for p in found), found


def test_a_ble_only_family_is_refused_on_a_serial_port(tmp_path):
    from bmsbank.services.poller import plugins

    ble_only = [n for n, i in plugins.families().items() if i.link == "BLE"]
    if not ble_only:
        pytest.fail("no BLE-only family registered")
    text = BLE.replace('bms = "jkpb"', f'bms = "{ble_only[0]}"')
    assert any(p.startswith("ports[0].bms: ") for p in problems(tmp_path, text))


def test_scan_block_is_a_valid_config(tmp_path):
    seen = [
        ble_scan.Seen("A4:C1:38:00:00:07", "SP04S020", -60, "jbd"),
        ble_scan.Seen("A4:C1:38:00:00:08", "SP04S020", -70, "jbd"),
        ble_scan.Seen("11:22:33:44:55:66", "phone", -40, None),
    ]
    block = ble_scan.ble_block("hci0", seen)
    c = load(tmp_path, "[bank]\nstale_after = 10\n" + block)
    assert [(p.name, p.device, p.bms) for p in c.ports] == [
        ("SP04S020", "ble:hci0/A4:C1:38:00:00:07", "jbd"),
        ("SP04S020-2", "ble:hci0/A4:C1:38:00:00:08", "jbd"),
    ]
