"""``bmsbank demo --profile all``: one simulated pack of every serial family at once.

The same checks a Venus client makes on the default demo: the bank and one service per pack on
D-Bus, every mandatory path, the limits for the bank's cell count; and each family's pack, read
through its own protocol end to end, shows what its simulator holds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bmsbank.demo import profile_ports
from tests.test_e2e import MANDATORY, SERVICE, Demo, _bus_names, processes_using, read_dbus

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PORTS = profile_ports("all")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    rundir = str(tmp_path_factory.mktemp("demo-all", numbered=True))
    d = Demo(rundir, profile="all")
    try:
        d.bank(lambda b: b["online"] == len(PORTS), timeout=60)
        deadline = time.monotonic() + 20
        while SERVICE not in asyncio.run(_bus_names(d.bus_address)):
            assert time.monotonic() < deadline, "the bank never appeared on D-Bus"
            time.sleep(0.2)
        yield d
    finally:
        output = d.stop()
    assert "bmsbank demo: stopped" in output, output
    assert "CVL because: bulk: 4 cells x 3.450 V" in output
    time.sleep(0.5)
    assert processes_using(rundir) == [], "the demo left processes behind"


def test_every_serial_family_has_a_pack_in_the_profile():
    from bmsbank.services.poller import plugins

    # BLE-only and CAN families have no serial port: the default profile shows them
    wired = [n for n, i in plugins.families().items() if i.link not in ("BLE", "CAN")]
    assert sorted(p.bms for p in PORTS) == sorted(wired)
    assert len(PORTS) >= 20


def test_the_bank_of_every_family_passes_the_venus_checks(demo):
    truth = demo.truth()
    assert len(truth) == len(PORTS)
    wanted = sorted([SERVICE] + [f"{SERVICE}_{p.replace(':', '_')}" for p in truth])
    deadline = time.monotonic() + 20
    while True:
        names, v = read_dbus(demo, MANDATORY)
        if sorted(names) == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(names) == wanted
    items = v["__items__"]
    for path in MANDATORY:
        assert path in items, path
    assert v["/Connected"] == 1
    assert v["/Info/MaxChargeVoltage"] == pytest.approx(4 * 3.45, abs=0.01)
    assert v["/Info/MaxChargeCurrent"] > 0 and v["/Info/MaxDischargeCurrent"] > 0
    assert v["/System/NrOfModulesOnline"] == len(PORTS)
    assert v["/System/NrOfModulesOffline"] == 0
    bms = [n for n, its in v["__all__"].items() if "/Info/MaxChargeVoltage" in its]
    assert bms == [SERVICE]
    instances = [its["/DeviceInstance"] for its in v["__all__"].values()]
    assert len(set(instances)) == len(instances)


def test_each_family_shows_what_its_simulator_holds(demo):
    demo.bank()
    truth = demo.truth()
    _, v = read_dbus(demo, ["/Dc/0/Voltage"])
    for pack, true in truth.items():
        shown = v["__all__"][f"{SERVICE}_{pack.replace(':', '_')}"]
        assert shown["/Connected"] == 1, pack
        # the coarsest wire resolutions: 0.1 V cells (Renogy), 0.1 A, whole percent SoC
        assert shown["/Dc/0/Voltage"] == pytest.approx(true["voltage"], abs=0.25), pack
        assert shown["/Dc/0/Current"] == pytest.approx(true["current"], abs=0.15), pack
        if not pack.startswith("mnb:"):  # MNB has no fuel gauge: SoC counted from 50 % at start
            assert shown["/Soc"] == pytest.approx(true["soc"], abs=1.5), pack
        cells = [shown[f"/Voltages/Cell{k + 1}"] for k in range(4)]
        assert cells == pytest.approx(true["cells"], abs=0.06), pack
