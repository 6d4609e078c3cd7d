"""House rules CI enforces: ruff clean, mypy clean over the whole bmsbank namespace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_is_clean():
    out = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean():
    out = subprocess.run([str(ROOT / "scripts" / "typecheck")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
