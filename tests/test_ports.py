"""`bmsbank ports`: adapters, their stable names, and which configured port uses which.

This machine has no USB serial adapter, so the adapters are pyserial's own ``ListPortInfo``
records (the interface ``list_ports.comports()`` returns) and a sysfs / by-id tree in a temporary
directory, laid out as the kernel and udev lay them out.
"""

from __future__ import annotations

import os
import subprocess
import sys

from serial.tools.list_ports_common import ListPortInfo

from bmsbank import ports
from bmsbank.config import parse


def info(device: str, vid: int | None, pid: int | None = None, **attrs) -> ListPortInfo:
    record = ListPortInfo(device, skip_link_detection=True)
    record.vid, record.pid = vid, pid
    for key, value in attrs.items():
        setattr(record, key, value)
    return record


def machine(tmp_path):
    """Two adapters: a CH340 with a by-id link and an FTDI without; an on-board UART."""
    dev = tmp_path / "dev"
    (dev / "serial" / "by-id").mkdir(parents=True)
    for name in ("ttyUSB0", "ttyUSB1", "ttyS0"):
        (dev / name).write_text("")
    stable = dev / "serial" / "by-id" / "usb-1a86_USB_Serial-if00-port0"
    stable.symlink_to(dev / "ttyUSB0")
    sys_tty = tmp_path / "sys" / "class" / "tty"
    for name, driver in (("ttyUSB0", "ch341-uart"), ("ttyUSB1", "ftdi_sio")):
        drivers = tmp_path / "sys" / "bus" / "usb-serial" / "drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        (sys_tty / name / "device").mkdir(parents=True)
        (sys_tty / name / "device" / "driver").symlink_to(drivers)
    infos = [
        info(str(dev / "ttyUSB1"), 0x0403, 0x6001, manufacturer="FTDI", product="FT232R",
             serial_number="A10K1234"),
        info(str(dev / "ttyUSB0"), 0x1A86, 0x7523, product="USB Serial"),
        info(str(dev / "ttyS0"), None),  # no vendor id: an on-board UART, not listed
    ]  # fmt: skip
    found = ports.adapters(infos, ports.by_id_names(str(dev / "serial" / "by-id")), str(sys_tty))
    return dev, stable, found


def test_adapters_carry_their_stable_name_and_chip(tmp_path):
    dev, stable, found = machine(tmp_path)
    assert [a.device for a in found] == [str(dev / "ttyUSB0"), str(dev / "ttyUSB1")]
    ch340, ftdi = found
    assert (ch340.by_id, ch340.chip, ch340.vid) == (str(stable), "CH340/CH341", 0x1A86)
    assert (ftdi.by_id, ftdi.chip, ftdi.serial_number) == (None, "FTDI", "A10K1234")


def test_the_report_says_which_port_uses_which_and_what_to_fix(tmp_path):
    dev, stable, found = machine(tmp_path)
    config = parse({"bank": {"stale_after": 10.0}, "ports": [
        {"name": "jk", "device": str(stable), "bms": "jkpb", "addresses": [1]},
        {"name": "gone", "device": "/dev/ttyUSB7", "bms": "jbd"},
        {"name": "net", "device": "socket://10.0.0.5:4001", "bms": "jbd"},
    ]}, "test")  # fmt: skip
    lines, warnings = ports.report(found, config)
    assert lines[0].startswith(f"{dev / 'ttyUSB0'}  {stable}  1a86:7523 USB Serial")
    assert lines[0].endswith("CH340/CH341  used by: jk")
    assert "(no by-id name)" in lines[1] and lines[1].endswith("FTDI  used by: no configured port")
    assert warnings == [
        "port gone: /dev/ttyUSB7 is not present",
        "port gone: /dev/ttyUSB7 can change at the next boot or replug; use its "
        "/dev/serial/by-id/ path",
    ]


def test_a_movable_name_of_a_present_adapter_gets_its_by_id_path(tmp_path, monkeypatch):
    dev, stable, found = machine(tmp_path)
    moved = [ports.Adapter("/dev/ttyUSB0", str(stable), *[None] * 5, "ch341-uart")]
    config = parse({"bank": {"stale_after": 10.0},
                    "ports": [{"name": "bus", "device": "/dev/ttyUSB0", "bms": "jbd"}]},
                   "test")  # fmt: skip
    monkeypatch.setattr(os.path, "realpath", lambda p: p)  # /dev/ttyUSB0 is that adapter
    lines, warnings = ports.report(moved, config)
    assert lines[0].endswith("used by: bus")
    assert warnings == [
        f"port bus: /dev/ttyUSB0 can change at the next boot or replug; use {stable}"]  # fmt: skip


def test_the_command_on_this_machine(tmp_path):
    cfg = tmp_path / "bmsbank.toml"
    cfg.write_text('[[ports]]\nname = "bus"\ndevice = "/dev/ttyUSB3"\nbms = "jbd"\n',
                   encoding="utf-8")  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "ports", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "no USB serial adapters found\n"  # no USB hardware here
    assert "port bus: /dev/ttyUSB3 is not present" in out.stderr
    assert "can change at the next boot" in out.stderr
