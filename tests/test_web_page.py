"""The bank view page in real headless Chromium against the running demo (issue 15, Done when 1).

The demo starts under the test (supervisord, simulators, pollers, arbiter, publisher and the web
service); Chromium from Debian's ``chromium`` package is driven through ``chromium-driver`` with
selenium (https://www.selenium.dev/documentation/webdriver/browsers/chrome/: a Service names the
driver binary, Options carry Chromium's switches). The page's numbers are checked against the
bank message of the same sequence number read from the tap; one pack's simulator is stopped and
the page must show that pack offline, with its reason, within stale_after + 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import zmq

from bmsbank.schema import TOPIC_BANK, unpack
from tests.test_demo_lifecycle import _env, _finish, _Output

pytestmark = pytest.mark.e2e

CHROMEDRIVER = "/usr/bin/chromedriver"
#: the README's screenshot: rewritten only when asked (BMSBANK_SCREENSHOT=1), so that a test run
#: leaves the work tree as it found it; otherwise the shot goes into the test's run directory
README_SHOT = os.path.join(os.path.dirname(__file__), "..", "docs", "web.png")
STALE_AFTER = 10.0  #: the demo's bank.stale_after (the default) [s]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,2300")  # fmt: skip

#: everything the checks read, in one script run (the page cannot change in between)
READ = """
const t = (id) => document.getElementById(id).textContent;
const cards = {};
for (const c of document.querySelectorAll('.card')) {
  const rows = Object.fromEntries([...c.querySelectorAll('tr')].map(
    (r) => [r.cells[0].textContent, r.cells[1].textContent]));
  cards[c.dataset.pack] = {state: c.querySelector('.state').textContent,
                           reason: c.querySelector('.reason').textContent,
                           health: rows['cell health'],
                           warnings: (c.querySelector('.health') || {}).innerHTML || '',
                           bars: c.querySelectorAll('.bar').length};
}
return {seq: t('seq'), soc: t('soc'), voltage: t('voltage'), current: t('current'),
        power: t('power'), cvl: t('cvl'), ccl: t('ccl'), dcl: t('dcl'), conn: t('conn'),
        ccl_why: t('ccl-why'), cards: cards,
        charts: document.querySelectorAll('svg polyline').length};
"""


def _f(x, digits, unit):
    return "–" if x is None else f"{x:.{digits}f} {unit}"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="bmsbank-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def demo(tmp_path):
    rundir = str(tmp_path / "run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmsbank.cli", "demo", "--runtime-dir", rundir, "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip
    out = _Output(proc)
    try:
        out.wait_for("CVL")
        url = next(line.split()[-1] for line in out.lines if line.strip().startswith("web"))
        yield rundir, url
    finally:
        proc.terminate()
        _finish(proc, rundir, out)


def _until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _history(url):
    try:
        with urllib.request.urlopen(url + "history.json?span=24h", timeout=2) as r:
            return json.load(r)
    except OSError:
        return None  # the service is restarting


def _tap(rundir):
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC_BANK)
    sock.connect(f"ipc://{rundir}/tap.ipc")
    return sock


def test_page_shows_the_tap_and_a_stopped_pack_goes_offline_with_its_reason(demo, browser):
    rundir, url = demo
    tap = _tap(rundir)
    banks: dict[int, dict] = {}
    browser.get(url)
    page = _until(
        "live values", lambda: (r := browser.execute_script(READ))["seq"] != "–" and r, 30
    )
    assert page["conn"] == "live"
    # the page's numbers equal the tap's bank of the same sequence number
    matched = 0
    deadline = time.monotonic() + 15
    while matched < 3 and time.monotonic() < deadline:
        while tap.poll(100):
            bank = unpack(tap.recv_multipart()[1])
            banks[bank["seq"]] = bank
        page = browser.execute_script(READ)
        bank = banks.get(int(page["seq"]))
        if bank is None:
            continue
        assert page["soc"] == _f(bank["soc"], 1, "%"), (page, bank["soc"])
        assert page["voltage"] == _f(bank["voltage"], 2, "V")
        assert page["current"] == _f(bank["current"], 1, "A")
        assert page["power"] == _f(bank["power"], 0, "W")
        assert (page["cvl"], page["ccl"], page["dcl"]) == (
            _f(bank["cvl"], 2, "V"),
            _f(bank["ccl"], 1, "A"),
            _f(bank["dcl"], 1, "A"),
        )
        assert page["ccl_why"] == bank["reasons"]["ccl"]
        assert set(page["cards"]) == {p["id"] for p in bank["packs"]}
        for p in bank["packs"]:  # cell health: what the arbiter learnt, "–" before a state
            health = page["cards"][p["id"]]["health"]
            assert health.startswith(p["cell_health"]["status"] if p["cell_health"] else "–")
        matched += 1
        time.sleep(0.5)
    assert matched >= 3, "the page never showed a bank the tap carried"
    # cell bars arrive from the state topic (at most 1 Hz)
    _until("cell bars", lambda: browser.execute_script(READ)["cards"]["jbd1:1"]["bars"] == 16, 10)
    assert browser.execute_script(READ)["cards"]["jbd1:1"]["state"] == "online"
    # learnt cell health with warnings (the demo's packs have too few current steps to learn):
    # shown on the card, a warning's text escaped, each cell's values in its bar's tooltip
    learnt = {
        "status": "learning",
        "resistance": [0.52, 0.91] + [None] * 14,
        "resistance_median": 0.52,
        "capacity": [None] * 16,
        "steps": 14,
        "charges": 0,
        "warnings": ["jbd1:1 cell 2: resistance 1.8× the pack median (14 steps) <b>"],
    }
    shown = browser.execute_script(  # drawn and read in one script: no bank comes between
        "const b = JSON.parse(JSON.stringify(bank));"
        "b.packs.find((p) => p.id === 'jbd1:1').cell_health = arguments[0]; showCards(b);"
        f"const read = () => {{ {READ} }};"
        "const bar = document.querySelector(\"[data-pack='jbd1:1'] .bar:nth-child(2)\");"
        "return [read(), bar.title];",
        learnt,
    )
    card = shown[0]["cards"]["jbd1:1"]
    assert card["health"] == "learning · median 0.52 mΩ · 14 steps · 0 charges"
    assert card["warnings"] == (
        "⚠ jbd1:1 cell 2: resistance 1.8× the pack median (14 steps) &lt;b&gt;"
    )
    assert shown[1].endswith(" V · 0.91 mΩ"), shown[1]
    conf = f"{rundir}/supervisord.conf"
    subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "stop",
                    "sim-jbd1"], check=True, capture_output=True)  # fmt: skip
    stopped = time.monotonic()
    card = _until("jbd1:1 offline", lambda: (
        c := browser.execute_script(READ)["cards"]["jbd1:1"])["state"] == "offline" and c,
        STALE_AFTER + 4)  # fmt: skip
    took = time.monotonic() - stopped
    assert took <= STALE_AFTER + 2.0, f"offline shown after {took:.1f} s"
    assert card["reason"], "an offline pack shows why"
    tap.close()
    # the web service restarts (supervisorctl, as a crash would): the history is still there
    before = _history(url)
    assert before, "no history points after the first 10 s"
    subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "restart",
                    "web"], check=True, capture_output=True)  # fmt: skip
    after = _until("history after the restart", lambda: _history(url), 10)
    assert {p["t"] for p in before} <= {p["t"] for p in after}
    # the page reconnects by itself; charts and the limit change the stopped pack caused show
    seq = int(browser.execute_script(READ)["seq"])
    _until("live again", lambda: int((r := browser.execute_script(READ))["seq"]) > seq + 2
           and r["conn"] == "live", 15)  # fmt: skip
    browser.execute_script("loadHistory()")
    _until("charts", lambda: browser.execute_script(READ)["charts"] >= 6, 10)
    log = browser.find_element("id", "log").text
    assert "CCL " in log and "→" in log, log
    shot = README_SHOT if os.environ.get("BMSBANK_SCREENSHOT") == "1" else f"{rundir}/web.png"
    browser.save_screenshot(os.path.abspath(shot))
    assert os.path.getsize(shot) > 10000
    with open(f"{rundir}/log/web.log", encoding="utf-8") as fh:
        log = fh.read()
    assert "stopped; history written" in log and "Traceback" not in log, log
