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
