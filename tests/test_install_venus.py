"""install-venus.sh against a Venus-like tree in a temp dir (VENUS_ROOT).

The tree has what the installer meets on a GX: /opt/victronenergy/version, a /service directory
for svscan, /var/log linked to /data/log (as Venus's volatiles make it), /etc/udev/rules.d with a
Venus rule in it, an rc.local of the user's, and two USB serial adapters in /dev and /sys laid
out as the kernel does (by-id link -> ttyUSBn; /sys/class/tty/ttyUSBn/device -> the usb-serial
port, whose USB device above holds idVendor, idProduct, serial).

The wheelhouse is made offline, once per module: every dependency is repacked as a wheel from
the test environment's installed distribution (pip's RECORD lists its files), bmsbank itself is
packed from this worktree as a pure-Python wheel (no compiler: the twins run, as on a machine
without a compiled wheel), and pip's own wheel is there as the release ships it (the GX has no
pip). The venv is made from this interpreter's base Python, the ABI those wheels were built for.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "install-venus.sh"
APP = "data/apps/bmsbank"
RULE = "etc/udev/rules.d/zz-bmsbank-serial-starter.rules"
PURE_WHEEL = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
USER_RC = "#!/bin/sh\n# the user's own boot commands\necho hello > /tmp/hello\nexit 0\n"

pytestmark = pytest.mark.timeout(300)


# --- the wheelhouse ------------------------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def _write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> None:
    rows = [_record_line(n, d) for n, d in files.items()]
    rows.append([f"{dist_info}/RECORD", "", ""])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist_info}/RECORD", out.getvalue())


def _repack(dist: md.Distribution, into: Path) -> None:
    """A wheel of an installed distribution, from the files its RECORD lists."""
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = re.findall(r"^Tag: (\S+)$", wheel_meta, re.M) or ["py3-none-any"]
    name, version = _norm(dist.metadata["Name"]), dist.version
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for f in dist.files or []:
        rel = str(f)
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith((".pyc", "RECORD")):
            continue
        if rel.endswith(("INSTALLER", "REQUESTED", "direct_url.json")):
            continue
        src = Path(f.locate())
        if src.is_file():
            parts = rel.split("/", 1)
            if parts[0].endswith(".dist-info"):
                rel = f"{dist_info}/{parts[1]}"
            files[rel] = src.read_bytes()
    if f"{dist_info}/WHEEL" not in files:
        files[f"{dist_info}/WHEEL"] = PURE_WHEEL
    # the file name carries every tag of the WHEEL file, compressed (py2.py3-none-any)
    parts = [tag.split("-") for tag in tags]
    tag = "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))
    _write_wheel(into / f"{name}-{version}-{tag}.whl", files, dist_info)


def _bmsbank_wheel(into: Path) -> None:
    """bmsbank from this worktree, pure Python, laid out as setup.py's package_dir maps it."""
    from bmsbank import __version__ as version  # the one place the version is written

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dist_info = f"bmsbank-{version}.dist-info"
    files: dict[str, bytes] = {}
    for src_dir, target in (("bmsbank", "bmsbank"), ("native", "bmsbank/native"),
                            ("services", "bmsbank/services")):
        base = REPO / src_dir
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base)
            if src_dir == "bmsbank" and rel.parts[0] in ("native", "services"):
                continue  # the worktree's links to native/ and services/
            if "__pycache__" in rel.parts or not path.is_file():
                continue
            if path.suffix in (".py", ".pyi", ".dbc", ".html", ".js") or path.name == "py.typed":
                files[f"{target}/{rel.as_posix()}"] = path.read_bytes()
    meta = [
        "Metadata-Version: 2.1",
        "Name: bmsbank",
        f"Version: {version}",
        f"Requires-Python: {project['requires-python']}",
    ] + [f"Requires-Dist: {r}" for r in project["dependencies"]]
    files[f"{dist_info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = PURE_WHEEL
    files[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\nbmsbank = bmsbank.cli:main\n"
    _write_wheel(into / f"bmsbank-{version}-py3-none-any.whl", files, dist_info)


def dependency_wheels(into: Path) -> None:
    """Wheels of bmsbank's runtime dependencies (and pip), repacked from this environment."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r).name for r in project["dependencies"]] + ["pip"]
    seen: set[str] = set()
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = md.distribution(name)
        _repack(dist, into)
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    into = tmp_path_factory.mktemp("wheelhouse")
    _bmsbank_wheel(into)
    dependency_wheels(into)
    return into


# --- the Venus-like tree -------------------------------------------------------------------
def _adapter(root: Path, tty: str, by_id: str, usb: str, ids: tuple[str, str, str | None]) -> None:
    """A USB serial adapter as the kernel and udev show it, under ``root``."""
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    (dev / tty).touch()
    (dev / "serial/by-id").mkdir(parents=True, exist_ok=True)
    (dev / "serial/by-id" / by_id).symlink_to(f"../../{tty}")
    usb_dir = root / "sys/devices/platform/soc/usb1" / usb
    port = usb_dir / f"{usb}:1.0" / tty
    (port / "tty" / tty).mkdir(parents=True)
    vendor, product, serial = ids
    (usb_dir / "idVendor").write_text(vendor + "\n")
    (usb_dir / "idProduct").write_text(product + "\n")
    if serial is not None:
        (usb_dir / "serial").write_text(serial + "\n")
    cls = root / "sys/class/tty"
    cls.mkdir(parents=True, exist_ok=True)
    (cls / tty).symlink_to(os.path.relpath(port / "tty" / tty, cls))
    (port / "tty" / tty / "device").symlink_to("../..")


CONFIG = """\
runtime_dir = "/run/bmsbank"

[bank]
state_file = "/data/apps/bmsbank/var/state.json"

[[ports]]
name = "ftdi"
device = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10KXYZ-if00-port0"
bms = "jbd"

[[ports]]
name = "ch340"
device = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"
bms = "daly"
addresses = [1, 2]

[[ports]]
name = "absent"
device = "/dev/serial/by-id/usb-Prolific_Technology_Inc._USB-Serial_Controller_D-if00-port0"
bms = "jkpb"
addresses = [1]
"""


def venus_tree(root: Path, version: str = "v3.60") -> Path:
    (root / "opt/victronenergy").mkdir(parents=True)
    (root / "opt/victronenergy/version").write_text(f"{version}\nvenus\n202407011200\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "service/dbus-systemcalc-py").mkdir(parents=True)  # svscan's dir, a Venus service
    (root / "data/log").mkdir(parents=True)
    (root / "data/rc.local").write_text(USER_RC)
    (root / "data/rc.local").chmod(0o755)
    (root / "var").mkdir()
    (root / "var/log").symlink_to("../data/log")
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / "etc/udev/rules.d/simcom.rules").write_text('ENV{VE_SERVICE}="ignore"\n')
    _adapter(root, "ttyUSB0", "usb-FTDI_FT232R_USB_UART_A10KXYZ-if00-port0", "1-1",
             ("0403", "6001", "A10KXYZ"))
    _adapter(root, "ttyUSB1", "usb-1a86_USB_Serial-if00-port0", "1-2", ("1a86", "7523", None))
    return root


def listing(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its kind, mode and content hash (or link target)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if p.is_symlink():
                out[rel] = "link " + os.readlink(p)
            elif p.is_dir():
                out[rel] = f"dir {st.st_mode & 0o7777:o}"
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = f"file {st.st_mode & 0o7777:o} {digest}"
    return out


def run(root: Path, *args: str, wheelhouse: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VENUS_ROOT": str(root),
        "VENUS_PYTHON": os.path.realpath(sys._base_executable),
        "BMSBANK_PURE": "1",
    }
    cmd = ["sh", str(SCRIPT)] + (["--wheelhouse", str(wheelhouse)] if wheelhouse else [])
    cmd += list(args)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def written(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


# --- tests ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tree, its listing before, after a first install with the example config, after the
    user's config and a second install, and after a third install."""
    root = venus_tree(tmp_path_factory.mktemp("venus"))
    before = listing(root)
    first = run(root, wheelhouse=wheelhouse)
    after_first = listing(root)
    (root / APP / "bmsbank.toml").write_text(CONFIG)
    second = run(root, wheelhouse=wheelhouse)
    after_second = listing(root)
    return root, before, (first, after_first), (second, after_second)


def test_first_install_writes_only_where_venus_keeps_things(installed):
    root, before, (first, after), _ = installed
    changed = written(before, after)
    allowed = ("data/apps", "data/rc.local", "data/rcS.local", "service/bmsbank",
               "data/log/bmsbank")
    assert changed and all(p.startswith(allowed) for p in changed), sorted(
        p for p in changed if not p.startswith(allowed))
    assert not any(p.startswith(("opt", "usr", "etc", "dev", "sys")) for p in changed)
    # not started on the example's packs, and no exclusion for the example's adapters yet
    assert f"{APP}/service/down" in after and RULE not in after
    assert "installed, not started. Edit /data/apps/bmsbank/bmsbank.toml" in first.stdout


def test_example_config_keeps_its_state_on_data(wheelhouse, tmp_path):
    root = venus_tree(tmp_path / "venus")
    run(root, wheelhouse=wheelhouse)
    config = (root / APP / "bmsbank.toml").read_text()
    # the state files moved to /data (Venus's rootfs is read-only), nothing else changed
    example = (REPO / "config.example.toml").read_text()
    assert config == example.replace('"/var/lib/bmsbank/', '"/data/apps/bmsbank/var/')
    assert '"/data/apps/bmsbank/var/state.json"' in config and "/var/lib/" not in config
    # a second run keeps the config as it is, edited or not
    (root / APP / "bmsbank.toml").write_text(config + "# mine\n")
    done = run(root, wheelhouse=wheelhouse)
    assert (root / APP / "bmsbank.toml").read_text() == config + "# mine\n"
    assert "config /data/apps/bmsbank/bmsbank.toml kept as it is" in done.stdout


def test_files_and_modes(installed):
    root, _, _, (second, after) = installed
    app = root / APP
    for rel, mode in [("service/run", 0o755), ("service/log/run", 0o755), ("boot.sh", 0o755),
                      ("bmsbank.toml", 0o644), ("venv/pyvenv.cfg", 0o644),
                      (f"udev/{Path(RULE).name}", 0o644)]:
        assert (app / rel).stat().st_mode & 0o777 == mode, rel
    assert (root / RULE).stat().st_mode & 0o777 == 0o644
    assert os.readlink(root / "service/bmsbank") == "/data/apps/bmsbank/service"
    assert (root / "data/log/bmsbank").is_dir()
    assert (app / "service/log/run").read_text().endswith(
        "exec multilog t s25000 n4 /var/log/bmsbank\n")
    cfg = (app / "venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    # a valid config of the user's: the service is no longer held down
    assert not (app / "service/down").exists()
    assert "is valid" in second.stdout


def test_venv_runs_bmsbank_from_the_wheelhouse(installed):
    root = installed[0]
    venv = root / APP / "venv"
    env = {**os.environ, "BMSBANK_PURE": "1"}
    out = subprocess.run([str(venv / "bin/python"), "-c",
                          "import bmsbank, sys; print(bmsbank.__file__); print(sys.prefix)"],
                         capture_output=True, text=True, env=env, check=True,
                         cwd=root).stdout.split("\n")
    assert out[0].startswith(str(venv)) and out[1] == str(venv)
    config = str(root / APP / "bmsbank.toml")
    done = subprocess.run([str(venv / "bin/bmsbank"), "check-config", config],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (venv / "bin/supervisord").exists()


def test_run_script_renders_a_supervisord_config(installed):
    """The service's run script, pointed into the tree, up to the exec of supervisord."""
    root = installed[0]
    app = root / APP
    text = (app / "service/run").read_text()
    assert text.rstrip().endswith(
        "exec /data/apps/bmsbank/venv/bin/supervisord -n -c /data/apps/bmsbank/supervisord.conf")
    script = text.replace("/data/apps", f"{root}/data/apps").replace("/var/log", f"{root}/var/log")
    script = script.replace(f"exec {app}/venv/bin/supervisord", "exit 0 #")
    env = {**os.environ, "BMSBANK_PURE": "1"}
    rundir = root / "run/bmsbank"  # /run on the GX; it does not exist after a boot
    config = app / "bmsbank.toml"
    config.write_text(CONFIG.replace('"/run/bmsbank"', f'"{rundir}"'))
    try:
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                              cwd="/")
        assert done.returncode == 0, done.stdout
        assert rundir.is_dir() and rundir.stat().st_mode & 0o777 == 0o700
        conf = (app / "supervisord.conf").read_text()
        assert "logfile=/dev/stdout\nlogfile_maxbytes=0\n" in conf
        assert "[program:arbiter]" in conf and "[program:publisher]" in conf
        # supervisord reads it as it would on the GX (its log directory taken in the tree)
        probe = app / "probe.conf"
        probe.write_text(conf.replace("/var/log/bmsbank", f"{root}/var/log/bmsbank"))
        check = ("from supervisor.options import ServerOptions; o = ServerOptions(); "
                 f"o.realize(args=['-c', {str(probe)!r}]); "
                 "print(sorted(p.name for p in o.process_group_configs))")
        done = subprocess.run([str(app / "venv/bin/python"), "-c", check], capture_output=True,
                              text=True, cwd="/")
        assert done.returncode == 0, done.stderr
        assert "'arbiter'" in done.stdout and "'watchdog'" in done.stdout
    finally:
        config.write_text(CONFIG)
        shutil.rmtree(root / "run", ignore_errors=True)
        (app / "probe.conf").unlink(missing_ok=True)


def test_udev_rule_names_the_adapters_usb_ids(installed):
    root = installed[0]
    rules = [line for line in (root / RULE).read_text().splitlines() if not line.startswith("#")]
    assert rules == [
        'ACTION=="add", SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", ENV{ID_VENDOR_ID}=="0403", '
        'ENV{ID_MODEL_ID}=="6001", ENV{ID_SERIAL_SHORT}=="A10KXYZ", ENV{VE_SERVICE}="ignore"',
        'ACTION=="add", SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", ENV{ID_VENDOR_ID}=="1a86", '
        'ENV{ID_MODEL_ID}=="7523", ENV{VE_SERVICE}="ignore"',
        'ACTION=="add", SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", '
        'ENV{ID_SERIAL}=="Prolific_Technology_Inc._USB-Serial_Controller_D", '
        'ENV{VE_SERVICE}="ignore"',
    ]
    assert (root / RULE).read_text() == (root / APP / "udev" / Path(RULE).name).read_text()
    assert (root / "etc/udev/rules.d/simcom.rules").read_text() == 'ENV{VE_SERVICE}="ignore"\n'


def test_rc_hooks_once_and_boot_restores(installed, wheelhouse):
    root = installed[0]
    run(root, wheelhouse=wheelhouse)  # a third install changes nothing of the hooks
    rc = (root / "data/rc.local").read_text()
    assert rc.count(">>> bmsbank") == 1 and rc.count("<<< bmsbank") == 1
    assert rc.startswith("#!/bin/sh\n# >>> bmsbank")  # before the user's "exit 0"
    assert rc.endswith(USER_RC.split("\n", 1)[1])
    rcs = root / "data/rcS.local"
    assert rcs.read_text().count(">>> bmsbank") == 1 and os.access(rcs, os.X_OK)
    # after a reboot /service is a fresh copy; after a firmware update /etc is new
    (root / "service/bmsbank").unlink()
    (root / RULE).unlink()
    env = {**os.environ, "VENUS_ROOT": str(root)}
    subprocess.run(["sh", str(root / "data/rc.local")], env=env, check=True, timeout=30)
    assert os.readlink(root / "service/bmsbank") == "/data/apps/bmsbank/service"
    assert (root / RULE).read_text() == (root / APP / "udev" / Path(RULE).name).read_text()
    (root / "service/bmsbank").unlink()
    subprocess.run(["sh", str(rcs)], env=env, check=True, timeout=30)
    assert (root / "service/bmsbank").is_symlink()


def test_uninstall_leaves_the_tree_as_it_was(installed):
    root, before, _, _ = installed
    keep = root.parent / (root.name + "-keep")
    shutil.copytree(root, keep, symlinks=True)
    dry = run(root, "--uninstall", "--dry-run")
    assert "would remove /data/apps/bmsbank" in dry.stdout
    assert (root / APP).is_dir()
    run(root, "--uninstall")
    assert listing(root) == before
    # --keep-config keeps the config alone
    run(keep, "--uninstall", "--keep-config")
    assert sorted(p.name for p in (keep / APP).iterdir()) == ["bmsbank.toml"]
    assert (keep / APP / "bmsbank.toml").read_text() == CONFIG
    assert not (keep / RULE).exists() and not (keep / "service/bmsbank").exists()
    assert (keep / "data/rc.local").read_text() == USER_RC
    assert not (keep / "data/rcS.local").exists()


def test_dry_run_writes_nothing(wheelhouse, tmp_path):
    root = venus_tree(tmp_path / "venus")
    before = listing(root)
    done = run(root, "--dry-run", wheelhouse=wheelhouse)
    assert listing(root) == before
    assert "would write /data/apps/bmsbank/bmsbank.toml" in done.stdout
    assert "would pip install bmsbank" in done.stdout


@pytest.mark.parametrize("version", ["v3.55", "v2.94", "v3.52~3"])
def test_too_old_venus_is_refused(wheelhouse, tmp_path, version):
    root = venus_tree(tmp_path / "venus", version)
    before = listing(root)
    done = run(root, wheelhouse=wheelhouse, check=False)
    assert done.returncode == 1
    assert f"Venus OS {version} is too old: bmsbank needs v3.60 or newer" in done.stderr
    assert listing(root) == before


def test_newer_venus_and_betas_pass_the_check(wheelhouse, tmp_path):
    root = venus_tree(tmp_path / "venus", "v3.70~22")
    done = run(root, "--dry-run", wheelhouse=wheelhouse)
    assert "Venus OS v3.70~22" in done.stdout


def test_not_venus_is_refused(wheelhouse, tmp_path):
    root = venus_tree(tmp_path / "venus")
    (root / "opt/victronenergy/version").unlink()
    done = run(root, wheelhouse=wheelhouse, check=False)
    assert done.returncode == 1 and "this is not Venus OS" in done.stderr


def test_too_little_space_is_refused(wheelhouse, tmp_path):
    root = venus_tree(tmp_path / "venus")
    before = listing(root)
    free_mb = shutil.disk_usage(root / "data").free // 2**20
    done = run(root, "--min-free-mb", str(free_mb + 10), wheelhouse=wheelhouse, check=False)
    assert done.returncode == 1
    assert f"bmsbank needs at least {free_mb + 10} MB there" in done.stderr
    assert listing(root) == before


def test_missing_wheelhouse_and_bad_arguments(tmp_path):
    root = venus_tree(tmp_path / "venus")
    done = run(root, "--wheelhouse", str(tmp_path / "nowhere"), check=False)
    assert done.returncode == 1 and "wheelhouse" in done.stderr and "not found" in done.stderr
    done = run(root, "--frobnicate", check=False)
    assert done.returncode == 2 and "unknown argument: --frobnicate" in done.stderr


def test_rc_local_that_is_not_executable_is_refused(wheelhouse, tmp_path):
    root = venus_tree(tmp_path / "venus")
    (root / "data/rc.local").chmod(0o644)
    done = run(root, wheelhouse=wheelhouse, check=False)
    assert done.returncode == 1
    assert "/data/rc.local exists but is not executable" in done.stderr
    assert (root / "data/rc.local").read_text() == USER_RC
