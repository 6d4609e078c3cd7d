"""Config: every bad key stops start-up with one line naming the key, the file, what is expected."""

from __future__ import annotations

import pytest

from bmsbank import config
from bmsbank.errors import ConfigError

GOOD = """
runtime_dir = "/tmp/x"
[bank]
stale_after = 5
max_charge_current = 80
[can]
enabled = true
interface = "virtual"
channel = "vcan0"
[[ports]]
name = "ttyUSB0"
device = "/dev/ttyUSB0"
bms = "jbd"
[[ports]]
name = "rs485"
device = "/dev/serial/by-id/usb-FTDI-if00"
bms = "jkpb"
addresses = [1, 2, 15]
interval = 1.5
"""


def write(tmp_path, text: str) -> str:
    path = tmp_path / "bmsbank.toml"
    path.write_text(text)
    return str(path)


def test_good_config_is_typed(tmp_path):
    c = config.load(write(tmp_path, GOOD))
    assert c.bank.stale_after == 5.0 and isinstance(c.bank.stale_after, float)
    assert c.bank.max_charge_current == 80.0
    assert c.bank.ccl_cell_table == [[3.40, 1.0], [3.45, 0.5], [3.50, 0.1], [3.55, 0.0]]
    assert c.can.enabled and c.can.interface == "virtual" and c.can.bitrate == 500000
    assert [p.name for p in c.ports] == ["ttyUSB0", "rs485"]
    assert c.ports[0].addresses == [1]  # the plugin's default address
    assert c.pack_ids() == ["ttyUSB0:1", "rs485:1", "rs485:2", "rs485:15"]
    assert c.states_endpoint == "ipc:///tmp/x/states.ipc"
    assert c.control_endpoint == "ipc:///tmp/x/control.ipc"
    other = config.parse({"zmq": {"control": "tcp://127.0.0.1:5999"}}, "test")
    assert other.control_endpoint == "tcp://127.0.0.1:5999"


def test_layering_argument_over_environment_over_file(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.setenv(config.ENV_CONFIG, path)
    monkeypatch.setenv(config.ENV_RUNTIME_DIR, "/tmp/env")
    assert config.load().runtime_dir == "/tmp/env"
    assert config.load(runtime_dir="/tmp/arg").runtime_dir == "/tmp/arg"
    monkeypatch.delenv(config.ENV_RUNTIME_DIR)
    assert config.load().runtime_dir == "/tmp/x"


@pytest.mark.parametrize(
    "text,key,expected",
    [
        ("[bank]\nstale_aftr = 3\n", "bank.stale_aftr", "unknown key"),
        ("[bank]\nstale_after = 0\n", "bank.stale_after", "seconds >= 0.5"),
        ("[bank]\nstale_after = 'ten'\n", "bank.stale_after", "seconds >= 0.5"),
        ("[bank]\nccl_cell_table = [[3.5, 2.0]]\n", "bank.ccl_cell_table", "fraction 0-1"),
        ("[can]\nbitrate = 125000\n", "can.bitrate", "250000 or 500000"),
        ("[can]\non_stale = 'quiet'\n", "can.on_stale", '"safe"'),
        ("[can]\nforce_charge_soc = 100\n", "can.force_charge_soc", "0 = off"),
        ("[can]\nforce_charge_after = -1\n", "can.force_charge_after", "seconds >= 0"),
        (
            "[can]\nforce_charge_soc = 20\nforce_charge_release = 20\n",
            "can.force_charge_release",
            "above force_charge_soc (20 %), got 20",
        ),
        (
            "[can]\nforce_charge_soc = 35\n",  # the default release (30 %) is below it
            "can.force_charge_release",
            "above force_charge_soc (35 %)",
        ),
        ("[dbus]\nservice = 'com.example.x'\n", "dbus.service", "com.victronenergy.battery."),
        ("colour = 'red'\n", "colour", "unknown key"),
        ("[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'nope'\n", "ports[0].bms", "one of"),
        ("[[ports]]\nname = 'a'\nbms = 'jbd'\n", "ports[0].device", "device path"),
        (
            "[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'jbd'\naddresses = [1, 2]\n",
            "ports[0].addresses",
            "single address",
        ),
        (
            "[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'jkpb'\naddresses = [0]\n",
            "ports[0].addresses",
            "1-15",
        ),
        ("[[ports]]\nname = 'a b'\ndevice = '/dev/x'\nbms = 'jbd'\n", "ports[0].name", "letters"),
        (
            "[[ports]]\nname='a'\ndevice='/x'\nbms='jbd'\n[[ports]]\nname='a'\ndevice='/y'\nbms='jbd'\n",
            "ports[1].name",
            "a name no other port has; ports[0] has 'a' too",
        ),
        ("[bank\n", "syntax", "valid TOML"),
        (
            "[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'jkpb'\nsettings_every = 0\n",
            "ports[0].settings_every",
            "1-3600, got 0",
        ),
        (
            "[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'jkpb'\nsettings_every = 'often'\n",
            "ports[0].settings_every",
            "poll cycles",
        ),
        (  # another family's option is not this one's
            "[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'jbd'\nsettings_every = 5\n",
            "ports[0].settings_every",
            "unknown key",
        ),
        ("[[ports]]\nname = 'a'\ndevice = '/dev/x'\nbms = 'jbd'\necho = 'yes'\n", "ports[0].echo",
         '"auto"'),  # fmt: skip
    ],
)
def test_bad_key_names_key_file_and_expectation(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("echo", ['"auto"', "true", "false"])
def test_family_options_and_echo_are_typed(tmp_path, echo):
    c = config.load(write(tmp_path, GOOD + f"settings_every = 5\necho = {echo}\n"))
    rs485 = c.port("rs485")
    assert rs485.options == {"settings_every": 5}
    assert rs485.echo == {"true": True, "false": False}.get(echo, "auto")
    assert c.port("ttyUSB0").options == {} and c.port("ttyUSB0").echo == "auto"


def test_the_poller_builds_its_family_with_the_port_options(tmp_path):
    from bmsbank.services.poller.service import Poller

    c = config.load(write(tmp_path, GOOD + "settings_every = 7\necho = true\n"))
    poller = Poller(c.port("rs485"), lambda msg: None)
    assert poller.plugin.options == {"settings_every": 7} and poller.transport.echo is True
    settings = [q for q in poller.plugin.queries(1) if q.part == "settings"]
    assert settings[0].every == 7


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="existing TOML config file"):
        config.load(str(tmp_path / "nope.toml"))


def test_example_config_is_valid():
    c = config.load("config.example.toml")
    assert c.ports and c.can.bitrate == 500000


def test_docs_config_lists_every_key_with_its_default():
    with open("docs/CONFIG.md", encoding="utf-8") as fh:
        assert config.reference() in fh.read(), "regenerate the table in docs/CONFIG.md"


def test_can_output_keys(tmp_path):
    c = config.load(write(tmp_path, "[can]\n"))
    assert c.can.on_stale == "safe" and c.can.force_charge_soc == 0.0  # force charge off
    assert c.can.energy_file == "/var/lib/bmsbank/energy.json"
    text = (
        "[can]\non_stale = 'silent'\nforce_charge_soc = 10\nforce_charge_after = 600\n"
        "force_charge_release = 25\nenergy_file = ''\nbitrate = 250000\n"
    )
    c = config.load(write(tmp_path, text))
    assert (c.can.on_stale, c.can.force_charge_soc, c.can.force_charge_after) == ("silent", 10, 600)
    assert c.can.force_charge_release == 25.0 and isinstance(c.can.force_charge_release, float)
    assert c.can.energy_file == "" and c.can.bitrate == 250000


def test_product_id_defaults_clear_of_other_drivers_and_refuses_dvcc_quirk_ids():
    assert config.parse({}, "test").dbus.product_id == 0xBA5B
    for taken in (0xBA44, 0xBA45, 0xBA77):  # aggregate-batteries, virtual DC system, serialbattery
        assert config.parse({}, "test").dbus.product_id != taken
    assert config.parse({"dbus": {"product_id": 0xBA44}}, "test").dbus.product_id == 0xBA44
    with pytest.raises(ConfigError, match=r"dbus.product_id.*DVCC"):
        config.parse({"dbus": {"product_id": 0xB009}}, "test")  # Pylontech: Venus lowers its CVL
