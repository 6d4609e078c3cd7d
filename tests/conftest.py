"""Shared fixtures.

The whole suite runs twice (README command 2): once on the compiled native modules and once with
``BMSBANK_PURE=1`` on their pure-Python twins. Tests that compare the two implementations directly
use the ``frames_impls`` / ``limits_impls`` fixtures, which always hold both.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bmsbank.demo import PRIVATE_BUS_CONF

IMPLS = ("compiled", "twin")


def _module(kind: str, which: str):
    name = f"bmsbank.native._{kind}" + ("_py" if which == "twin" else "")
    return importlib.import_module(name)


@pytest.fixture(params=IMPLS)
def frames_mod(request):
    """Each implementation of the frame codec in turn."""
    return _module("frames", request.param)


@pytest.fixture(params=IMPLS)
def limits_mod(request):
    """Each implementation of the bank kernels in turn."""
    return _module("limits", request.param)


@pytest.fixture(scope="session")
def frames_impls():
    """(compiled, twin) frame codecs, for equivalence tests."""
    return _module("frames", "compiled"), _module("frames", "twin")


@pytest.fixture(scope="session")
def limits_impls():
    """(compiled, twin) bank kernels, for equivalence tests."""
    return _module("limits", "compiled"), _module("limits", "twin")


def pure() -> bool:
    """True when this run forces the pure-Python twins."""
    return os.environ.get("BMSBANK_PURE") == "1"


@pytest.fixture
def dbus_address():
    """Address of a private dbus-daemon, killed after the test."""
    # A short directory of our own: unix socket paths are limited to 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="bmsbus", dir="/tmp"))
    conf = tmp / "bus.conf"
    conf.write_text(PRIVATE_BUS_CONF.format(sock=tmp / "bus.sock"))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:"), address
        yield address
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
