"""``bmsbank scan --ble``: which family an advertisement names, and the block it prints."""

from __future__ import annotations

import os
import subprocess
import sys

from bmsbank.services.poller import ble_scan
from bmsbank.services.poller.plugins.info import Ble

FFE0 = "0000ffe0-0000-1000-8000-00805f9b34fb"
FF00 = "0000ff00-0000-1000-8000-00805f9b34fb"
FAMILIES = {
    "jk": Ble(FFE0, "ffe1", "ffe1", names=("JK",)),
    "jk_new": Ble(FFE0, "ffe1", "ffe1", names=("JK_",)),
    "other_ffe0": Ble(FFE0, "ffe1", "ffe1"),
    "jbd": Ble(FF00, "ff01", "ff02", names=("SP0", "xiaoxiang")),
}


def test_the_longest_name_prefix_wins():
    assert ble_scan.match("JK_B2A8S20P", [], FAMILIES) == "jk_new"
    assert ble_scan.match("JK-B2A24S", [], FAMILIES) == "jk"
    assert ble_scan.match("xiaoxiang BMS", [FFE0], FAMILIES) == "jbd"  # the name beats a service


def test_a_service_decides_only_when_one_family_owns_it():
    assert ble_scan.match("", [FF00.upper()], FAMILIES) == "jbd"
    assert ble_scan.match("", [FFE0], FAMILIES) is None  # three families advertise FFE0
    assert ble_scan.match("phone", [], FAMILIES) is None


def test_every_registered_ble_family_is_matched_by_its_own_names():
    families = ble_scan.ble_families()
    for name, ble in families.items():
        for prefix in ble.names:
            found = ble_scan.match(prefix + "1", [])
            assert found is not None, (name, prefix)
            # another family may claim the name only with a longer, more specific prefix
            best = max(len(p) for p in families[found].names if (prefix + "1").startswith(p))
            assert found == name or best > len(prefix), (name, prefix, found)


def test_table_lists_bmss_with_mac_rssi_and_family():
    seen = [ble_scan.Seen("A4:C1:38:00:00:07", "SP04S020", -61, "jbd"),
            ble_scan.Seen("11:22:33:44:55:66", "", -40, None)]  # fmt: skip
    lines = ble_scan.table(seen)
    assert lines[0].split() == ["A4:C1:38:00:00:07", "-61", "dBm", "jbd", "SP04S020"]
    assert lines[1].split() == ["11:22:33:44:55:66", "-40", "dBm", "-"]


def test_scan_without_device_or_ble_exits_2():
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "scan"], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "--ble" in out.stderr


def test_scan_ble_prints_a_block_the_config_takes(tmp_path):
    # the whole command against the fake BlueZ: two BMSs of two families; then a missing adapter
    from bmsbank import config
    from bmsbank.services.poller.simulators.fakebluez import FakeBluez

    with FakeBluez(rssi_interval=0.1) as fake:
        fake.add_adapter("hci0")
        fake.add_device("hci0", "C8:47:8C:00:00:01", "JK_B2A24S15P", "jkbms_ble")
        fake.add_device("hci0", "A4:C1:38:00:00:02", "SP04S034L4S200A", "jbd")
        env = {**os.environ, **fake.env()}
        out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "scan", "--ble",
                              "--seconds", "1.5"], capture_output=True, text=True, timeout=60,
                             env=env)  # fmt: skip
        missing = subprocess.run([sys.executable, "-m", "bmsbank.cli", "scan", "--ble",
                                  "--adapter", "hci3", "--seconds", "0.5"], capture_output=True,
                                 text=True, timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("# ")]
    assert {(r[1], r[4]) for r in rows} == {("C8:47:8C:00:00:01", "jkbms_ble"),
                                            ("A4:C1:38:00:00:02", "jbd")}  # fmt: skip
    block = "\n".join(line for line in out.stdout.splitlines() if not line.startswith("# "))
    path = tmp_path / "bmsbank.toml"
    path.write_text("[bank]\nstale_after = 10\n" + block)
    ports = {p.bms: p for p in config.load(str(path)).ports}
    assert ports["jkbms_ble"].device == "ble:hci0/C8:47:8C:00:00:01"
    assert ports["jbd"].device == "ble:hci0/A4:C1:38:00:00:02"
    assert missing.returncode == 1 and "hci3" in missing.stderr
