"""Shared fixtures: an isolated weights cache, real photos, and a runner for the real CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bbdeploy
from bbdeploy.backbones import resolve
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.data.photos import calibration_photos, evaluation_photos, preprocess_image

# Under xdist every worker gets one torch (and OpenMP) thread: two workers with two threads each on a
# 2-core machine spend their time switching (the real Lite0 int8 tests took 2x as long that way).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the CLI subprocesses that tests start inherit it

FIXTURES = Path(__file__).parent / "fixtures"
FAKES = Path(__file__).parent / "fakes"  # stand-ins for adb and LiteRT's benchmark_model
RECORDED_DEVICES = Path(__file__).parent / "fixtures" / "device_state"  # each folder's SOURCE.md says where from
RECORDED_PHONE = RECORDED_DEVICES / "android_pixel_9_pro"
TINY = 64  # pixels: plumbing tests run the whole zoo at this resolution
# int8 floor for plumbing tests on random networks: at 64 px with 4-16 calibration crops their int8
# logit cosine measured 0.74-0.91 (trained networks: >= 0.985, see bbdeploy.stages.parity.DEFAULT_MIN_COSINE),
# while a broken quantization (e.g. weights scaled away from their grid) gives < 0.4
PLUMBING_MIN_COSINE = 0.5
# the backbone a plumbing test exports (where the point is the pipeline, not a graph): MobileNetV1 x0.25 at
# 32 px, 28 plain convolutions, converts to every target fp32 + int8 in 50 s where MobileNetV3-Small at
# 64 px took 140 s (measured on a 2-core AVX2 VM). PLUMBING_ARGS: the same on the command line.
PLUMBING_MODEL = {"model": "mobilenet_v1", "width": 0.25, "input_size": 32}
PLUMBING_ARGS = (PLUMBING_MODEL["model"], "--width", f"{PLUMBING_MODEL['width']:g}",
                 "--input-size", str(PLUMBING_MODEL["input_size"]))
PLUMBING_STEM = "mobilenet_v1_w0.25_32px"  # its artifacts' names start so
# the target a plumbing test of one target runs on: the table's first record (any would do; ONNX's, the
# first today, converts fastest). Tests that need a property pick the record by it, not by name.
PLUMBING_TARGET = next(iter(TARGETS))


def pytest_collection_modifyitems(items):
    """Longest first (`@pytest.mark.long(seconds=...)`, measured in the suite; a stable sort): a
    two-minute Lite0 export started last keeps one xdist worker busy while the other idles."""
    def seconds(item) -> float:
        marker = item.get_closest_marker("long")
        return marker.kwargs["seconds"] if marker else 0.0

    items.sort(key=seconds, reverse=True)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets an empty weights cache and no network downloads unless it asks for them."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("BBDEPLOY_CACHE_DIR", str(cache))
    monkeypatch.setenv("BBDEPLOY_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Every built-in photo (calibration and evaluation sets), by name."""
    return {**calibration_photos(), **evaluation_photos()}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `bbdeploy ARGS` in a fresh interpreter, as a user would, capturing stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bbdeploy", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def calibrated_checkpoint(name: str, photos: dict, folder: Path, width: float | None = None, size: int = TINY) -> Path:
    """Random weights with BN statistics measured on real photos (at `size` px) and a unit-scale classifier.

    Plain random init gives logits around 1e-13, where any parity tolerance passes; with these the
    logits' spread is at least 0.1 (0.14 for MobileNetV3-Small, the lowest), so 1e-3 is a real check.
    """
    torch.manual_seed(0)
    model = bbdeploy.create_backbone(name, width=width)
    pre = resolve(name).preprocess
    images = torch.from_numpy(np.stack([preprocess_image(p, pre, size) for p in photos.values()]))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(images)
        model.eval()
        for linear in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
            torch.nn.init.normal_(linear.weight, std=linear.in_features ** -0.5)
        logits = model(images)
    assert logits.std() > 0.1, f"{name}: calibrated logits too small to test parity"
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on a free loopback port with throwaway host and user keys, playing the board.

    Yields the `bench` arguments that reach it (device string and client options)."""
    import getpass
    import os
    import shutil
    import socket
    import subprocess
    import time

    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    os.chmod(folder / "authorized_keys", 0o600)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory, when run as root
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "w"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("sshd did not start: " + (folder / "sshd.log").read_text())
    client = ["--ssh-option", "UserKnownHostsFile=/dev/null", "--ssh-option", "StrictHostKeyChecking=no",
              "--ssh-option", "LogLevel=ERROR", "--ssh-option", "IdentitiesOnly=yes"]
    yield {"device": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "client": client,
           "options": [*client, "--ssh-option", f"IdentityFile={folder / 'user_key'}"]}
    server.terminate()
    server.wait(timeout=10)


@contextlib.contextmanager
def shared_folder(tmp_path_factory, name: str):
    """A folder both xdist workers share, held under a lock while in use: what one worker exports there
    (content-addressed) the other finds cached instead of exporting it again."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared / name


@pytest.fixture(scope="session")
def small_artifacts(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(target, precision) -> artifact, for every target: all fp32 ones first, then all int8 ones (exported
    once per suite run: the second worker finds them cached)."""
    from bbdeploy.stages.export import ExportOptions, export
    from bbdeploy.exporters.registry import TARGETS
    from bbdeploy.quantization.options import QuantOptions

    paths = {}
    with shared_folder(tmp_path_factory, "small-artifacts") as out:
        for precision in ("fp32", "int8"):
            rows = export(ExportOptions(**PLUMBING_MODEL, weights="random", output=out,
                                        precision=precision, quant=QuantOptions(calib_size=4),
                                        min_cosine=PLUMBING_MIN_COSINE))
            assert [(row["target"], row["status"] in ("exported", "cached")) for row in rows] == [
                (t, True) for t in TARGETS], rows
            paths.update({(row["target"], precision): Path(row["artifact"]) for row in rows})
    return paths


@pytest.fixture(scope="session")
def boards(tmp_path_factory) -> Path:
    """The boards folder, with every emulated board prepared in it from nothing (one folder for both xdist workers:
    prepare() locks it, so the second worker waits and uses the first one's board)."""
    from bbdeploy.targets.devices import emulated_board

    shared = tmp_path_factory.getbasetemp()
    folder = (shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared) / "boards"
    saved = {name: os.environ.get(name) for name in (emulated_board.BOARDS_ENV, "BBDEPLOY_OFFLINE", "BBDEPLOY_CACHE_DIR")}
    os.environ[emulated_board.BOARDS_ENV] = str(folder)
    os.environ["BBDEPLOY_CACHE_DIR"] = str(folder.parent / "board-cache")
    os.environ.pop("BBDEPLOY_OFFLINE", None)
    try:
        for board in emulated_board.BOARDS:  # the first from nothing, the others a hard-linked copy of it
            emulated_board.prepare(board)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return folder


@pytest.fixture
def on_board(boards, monkeypatch):
    """The prepared pi5 (emulated_board.PreparedBoard), with the tests' CLI pointed at its folder."""
    from bbdeploy.targets.devices import emulated_board

    monkeypatch.setenv(emulated_board.BOARDS_ENV, str(boards))
    return emulated_board.prepare("pi5")


@pytest.fixture
def phone(tmp_path):
    """The stand-in adb and benchmark_model of tests/fakes, with a phone folder and a call log."""
    (tmp_path / "phone" / "data" / "local" / "tmp").mkdir(parents=True)
    env = {"PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}", "FAKE_PHONE": str(tmp_path / "phone"),
           "FAKE_PHONE_BIN": str(FAKES / "phone-bin"), "FAKE_ADB_LOG": str(tmp_path / "adb.log"),
           "BBDEPLOY_STATE_ROOT": str(RECORDED_PHONE)}  # its sysfs and dumpsys: a recorded phone's
    return {"env": env, "root": tmp_path / "phone" / "data" / "local" / "tmp", "log": tmp_path / "adb.log"}


@pytest.fixture
def offline_guard(tmp_path):
    """A user's shell with an empty HOME, every name lookup and connection recorded (tests/netguard)."""
    from tests.netguard import OfflineGuard

    return OfflineGuard(tmp_path / "offline-guard")
