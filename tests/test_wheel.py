"""The release wheel, built as a user or a release builder builds it, and installed runtime-only.

The wheel is built from the files git tracks (copied out, so a stale ``build/`` or
``*.egg-info`` of the work tree cannot be packed into it) with pip's isolated build, as
`pip wheel .` does on a builder. It must hold the three compiled modules for this interpreter and
everything a service reads at run time, and nothing of the tests, the benchmarks or the Cython
sources. It is then installed into a fresh virtual environment without an index (its
dependencies repacked from this environment, as the Venus installer's tests do), where the
compiled modules must be the ones in use and a captured frame must decode.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests import test_jbd
from tests.test_install_venus import dependency_wheels

REPO = Path(__file__).resolve().parent.parent
EXTENSIONS = ("_frames", "_messages", "_limits")

pytestmark = pytest.mark.timeout(600)


def _tracked_tree(into: Path) -> None:
    """The files git knows (tracked or new, not ignored), as a clean clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if rel in ("bmsbank/native", "bmsbank/services") or not src.is_file():
            continue  # a worktree's links to native/ and services/, or a deleted file
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, into / rel)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("the wheel is built from git's file list: run the tests in a git checkout")
    src = tmp_path_factory.mktemp("src")
    _tracked_tree(src)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = dist.glob("bmsbank-*.whl")
    return found


def test_the_wheel_is_tagged_for_this_interpreter_and_machine(wheel: Path) -> None:
    from bmsbank import __version__

    abi = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert wheel.name == f"bmsbank-{__version__}-{abi}-{abi}-linux_{platform.machine()}.whl"


def test_the_wheel_holds_what_runs_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for ext in EXTENSIONS:
        assert f"bmsbank/native/{ext}{suffix}" in names  # compiled
        assert f"bmsbank/native/{ext}_py.py" in names  # and its twin
        assert f"bmsbank/native/{ext}.pyi" in names
    assert {"bmsbank/py.typed", "bmsbank/native/py.typed"} <= names
    assert "bmsbank/services/publisher/victron_canbms.dbc" in names
    assert {"bmsbank/web/page.html", "bmsbank/web/app.js"} <= names  # the bank view page
    plugins = REPO / "services/poller/plugins"
    families = sorted(p.parent.name for p in plugins.glob("*/__init__.py"))
    assert len(families) >= 20
    for family in families:
        assert f"bmsbank/services/poller/plugins/{family}/__init__.py" in names, family
    for module in ("cli", "demo", "install", "venus"):
        assert f"bmsbank/{module}.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    unwanted = [n for n in names
                if n.split("/")[0] in ("tests", "bench", "scripts", "docs", "build")
                or n.endswith((".c", ".pyx", ".pxi", ".pyc"))]  # fmt: skip
    assert unwanted == []


def test_the_metadata_keeps_test_tools_out_of_a_runtime_install(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]  # fmt: skip
    runtime = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("pyzmq") for r in runtime)
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "cantools", "python-dbusmock"):
        assert not any(r.startswith(tool) for r in runtime), tool


def test_installed_without_index_the_compiled_modules_run(wheel: Path, tmp_path: Path) -> None:
    house = tmp_path / "wheelhouse"
    house.mkdir()
    shutil.copy2(wheel, house)
    dependency_wheels(house)
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("BMSBANK_PURE", "PYTHONPATH")}
    pip = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
         str(house), "bmsbank"], env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    listed = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=json"],
                            env=env, capture_output=True, text=True, check=True)  # fmt: skip
    installed = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert "bmsbank" in installed and not installed & {"pytest", "mypy", "ruff", "hypothesis"}
    # away from the repository, so only the installed package can be imported
    bmsbank = str(venv / "bin/bmsbank")
    version = subprocess.run([bmsbank, "--version"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60, check=True)  # fmt: skip
    assert ", compiled (CPython " in version.stdout, version.stdout + version.stderr
    frames = [c.hex for c in test_jbd.CAPTURED[:3]]
    decoded = subprocess.run([bmsbank, "decode", "jbd", *frames], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
    assert "pure-Python" not in decoded.stderr
    assert json.loads(decoded.stdout)["cells"] == pytest.approx([3.909, 3.901, 3.895, 3.901])
