"""``bmsbank simulate``'s PASS/FAIL lines: docs/LIMITS.md's requirements on a run's metrics."""

from __future__ import annotations

import subprocess
import sys

from bmsbank import plant
from bmsbank.plant.checks import REQUIREMENTS, check


def test_every_procedure_has_requirements():
    assert set(REQUIREMENTS) == set(plant.PROCEDURES)


def test_a_metric_out_of_bounds_fails_its_requirement_only():
    m = {"max_cell_voltage": 3.45, "bms_tripped": False, "charge_below_window_ah": 0.0,
         "final_soc": 80.0}  # fmt: skip
    assert check("cold-charge", m) == [
        ("no cell at 3.60 V, no BMS trip", True),
        ("no charge below 5 °C", True),
        ("charges once warm (SoC > 70 %)", True),
    ]
    bad = check("cold-charge", {**m, "charge_below_window_ah": 0.2, "max_cell_voltage": 3.61})
    assert [ok for _, ok in bad] == [False, False, True]
    assert [ok for _, ok in check("cold-charge", {})] == [False, False, False]  # missing: FAIL


def test_cli_prints_pass_per_requirement_and_exit_0():
    out = subprocess.run([sys.executable, "-m", "bmsbank.cli", "simulate", "all-lost"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = out.stderr.splitlines()
    assert [x.split()[0] for x in lines] == ["PASS"] * len(REQUIREMENTS["all-lost"])
    assert out.returncode == 0


def test_cli_prints_fail_and_exits_1_when_a_requirement_fails(monkeypatch, capsys):
    from bmsbank import cli

    real = plant.run
    monkeypatch.setattr(plant, "run", lambda *a, **k: {**real(*a, **k), "recovered": False})
    code = cli.main(["simulate", "all-lost"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and "FAIL  recovers" in err and err.count("FAIL  recovers") == 1


def test_plot_is_an_svg_whose_points_map_back_to_the_trace(tmp_path):
    import json
    import xml.etree.ElementTree as ET

    svg = tmp_path / "run.svg"
    cmd = [
        sys.executable,
        "-m",
        "bmsbank.cli",
        "simulate",
        "all-lost",
        "--trace",
        "--plot",
        str(svg),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    trace = [r for r in json.loads(out.stdout)["trace"] if r["cvl"] is not None]
    root = ET.parse(svg).getroot()  # parses: well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    lines = {p.get("data-series"): p for p in root.iter(f"{ns}polyline")}
    packs = len(trace[0]["cell_min"])
    assert set(lines) == {"CVL", "CCL"} | {f"pack {k} {w} cell" for k in range(1, packs + 1)
                                           for w in ("min", "max")}  # fmt: skip
    t0, t1 = float(root.get("data-t0")), float(root.get("data-t1"))
    left, right = float(root.get("data-left")), float(root.get("data-right"))
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "time [min]" in texts and "CVL [V]" in texts and "CCL [A]" in texts
    for name, key, k in (
        ("CVL", "cvl", None),
        ("CCL", "ccl", None),
        ("pack 2 max cell", "cell_max", 1),
    ):
        p = lines[name]
        v0, v1 = float(p.get("data-v0")), float(p.get("data-v1"))
        top, height = float(p.get("data-top")), float(p.get("data-height"))
        points = [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
        assert len(points) == len(trace)
        for (x, y), row in zip(points, trace, strict=True):
            want = row[key] if k is None else row[key][k]
            assert abs(t0 + (x - left) / (right - left) * (t1 - t0) - row["t"] / 60) < 0.01
            assert abs(v1 - (y - top) / height * (v1 - v0) - want) < 1e-3 * max(1.0, abs(want))
            assert top <= y <= top + height


def test_progress_line_on_a_terminal_only():
    import os

    master, slave = os.openpty()  # stderr a real terminal: the progress line is drawn
    proc = subprocess.Popen([sys.executable, "-m", "bmsbank.cli", "simulate", "all-lost"],
                            stdout=subprocess.DEVNULL, stderr=slave)  # fmt: skip
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the far end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(60) == 0
    text = seen.decode()
    assert "\r\x1b[Ksimulate all-lost: 0 % (0 of " in text and "PASS" in text
    # piped (test_cli_prints_pass_per_requirement_and_exit_0): only the PASS lines
