"""An ARM board in the suite (issue 26): the emulated Raspberry Pi 5 prepared from nothing by bbdeploy's
own code, `bench` and `drift --device` on it as `qemu://pi5` and behind the loopback sshd (its Python as
`--remote-python`), crashes told apart from lost connections, and the bad inputs of devices.

Emulated inference is 20-450x slower than native: tiny artifacts, few images, one runner call each."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.parity import FLOAT_TOLERANCE
from bbdeploy.targets.devices import emulated_board
from tests.conftest import PLUMBING_MIN_COSINE, PLUMBING_TARGET, TINY, run_cli
from tests.target_checks import target_checks

SECOND, LAST = list(TARGETS)[1], list(TARGETS)[-1]  # other targets than the plumbing one
# the targets whose runtimes the board can install (emulated_board.refusal says why not, e.g. no aarch64 CPU torch)
ON_BOARD = [name for name, target in TARGETS.items() if emulated_board.refusal(target) is None]
REFUSED = [name for name in TARGETS if name not in ON_BOARD]

AARCH64 = 183  # ELF e_machine of AArch64


@pytest.fixture(scope="session")
def evaluation_images(tmp_path_factory, photos) -> Path:
    """Four of the built-in evaluation photos, as files (no labels: agreement with the float model)."""
    from PIL import Image

    from bbdeploy.data.photos import EVALUATION_PHOTOS

    folder = tmp_path_factory.mktemp("evaluation")
    for name in EVALUATION_PHOTOS[:4]:
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    return folder


@pytest.mark.long(seconds=30)
def test_the_board_is_prepared_from_nothing_and_then_cached(on_board):
    root = on_board.root
    header = (root / emulated_board.PYTHON).resolve().read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64
    cpuinfo = (root / "proc" / "cpuinfo").read_text()
    assert "CPU part\t: 0xd0b" in cpuinfo and "Raspberry Pi 5" in cpuinfo  # Cortex-A76
    site = root / emulated_board.SITE_PACKAGES
    for name, version in emulated_board.runtime_pins().items():  # every target's device runtime, as here
        assert list(site.glob(f"{name.replace('-', '_')}-{version}.dist-info")) or \
            list(site.glob(f"{name.lower().replace('-', '_')}-{version}.dist-info")), (name, version)
    started = time.perf_counter()
    assert emulated_board.prepare("pi5").root == root  # cached: keyed by what it holds
    assert time.perf_counter() - started < 2
    # the launcher is the board's Python, as a user passes it to ssh's --remote-python
    import subprocess

    done = subprocess.run([str(on_board.launcher), "-c", "import platform; print(platform.machine())"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "aarch64", done.stderr


@pytest.fixture(scope="module")
def host_drift(small_artifacts, evaluation_images) -> dict:
    """The same drift here, f32 pinned: what the board's float rows must equal."""
    done = run_cli("drift", *_artifacts(small_artifacts), "--data", str(evaluation_images), "--exec-precision", "f32",
                   "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _artifacts(small_artifacts) -> list[str]:
    return [str(small_artifacts[(t, p)]) for p in ("fp32", "int8") for t in ON_BOARD]


def _check_board_rows(rows: list[dict], name: str) -> None:
    for row in rows:
        device = row["device"]
        assert (device["name"], device["machine"], device["emulated"], device["kernel_machine"]) == (
            name, "aarch64", True, "x86_64"), row
        assert device["cpu"] == "Cortex-A76" and row["runtime_version"], row


@pytest.mark.long(seconds=60)
@pytest.mark.parametrize("via", ["qemu", "ssh"])
def test_bench_and_drift_on_the_arm_board(via, on_board, sshd, small_artifacts, evaluation_images, host_drift):
    """Every target, fp32 and int8, on an aarch64 Python: as qemu://pi5, and behind a real sshd with the
    emulated Python as --remote-python (so ssh's bundle, quoting and cleanup meet an ARM runner)."""
    device = ["--device", "qemu://pi5"] if via == "qemu" else [
        "--device", sshd["device"], *sshd["options"], "--remote-python", str(on_board.launcher)]
    name = device[1]
    artifacts = _artifacts(small_artifacts)
    bench = run_cli("bench", *artifacts, *device, "--runs", "2", "--warmup", "1", "--min-time", "0", "--json",
                    timeout=600)
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(bench.stdout)["results"]
    assert [(r["target"], r["precision"], r["status"]) for r in rows] == [
        (t, p, "measured") for p in ("fp32", "int8") for t in ON_BOARD]
    _check_board_rows(rows, name)
    assert all(emulated_board_warning(r) for r in rows)
    drift = run_cli("drift", *artifacts, "--data", str(evaluation_images), *device, "--exec-precision", "f32",
                    "--json", timeout=600)
    assert drift.returncode == 0, drift.stderr
    report = json.loads(drift.stdout)
    _check_board_rows(report["results"], name)
    assert report["device"]["machine"] == "aarch64" and f"Measured on: {name} (aarch64 Cortex-A76, emulated)" in drift.stderr
    for on_arm, here in zip(report["results"], host_drift["results"]):
        assert on_arm["status"] == here["status"] == "ok", (on_arm, here)
        assert here["device"]["machine"] == "x86_64" and not here["device"]["emulated"]
        if on_arm["precision"] == "fp32":  # the same float model on both machines, f32 pinned
            assert on_arm["max_abs_diff"] <= FLOAT_TOLERANCE["fp32"] and on_arm["agreement_top1"] == 1.0, on_arm
            assert on_arm["cosine"] == pytest.approx(here["cosine"], abs=1e-6)
        assert on_arm["samples"] == here["samples"] == 4


@pytest.mark.parametrize("target", REFUSED)
def test_a_target_whose_runtime_the_board_cannot_install_is_refused_in_one_line(target, small_artifacts):
    artifact = small_artifacts[(target, "fp32")]
    done = run_cli("bench", str(artifact), "--device", "qemu://pi5")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: {artifact.name} is a {target} artifact, and qemu://pi5 cannot run it: "
                                   f"{emulated_board.refusal(TARGETS[target])}; measure it over ssh:// on a board "
                                   "with its runtime"), done.stderr


def emulated_board_warning(row: dict) -> bool:
    from bbdeploy.targets.bench import EMULATED_WARNING

    return row["warnings"] == [EMULATED_WARNING]


@pytest.mark.long(seconds=10)
def test_a_failing_artifact_on_the_board_is_a_failed_row_and_the_others_are_measured(on_board, small_artifacts,
                                                                                    evaluation_images, tmp_path):
    """Seen under qemu 7.2's Cortex-A72 model (a Pi 4): OpenVINO 2026.4 cannot compile MobileNetV3-Small's
    int8 IR ("object is not initialized"; the A76 model can, and MobileNetV1's compiles on both): the target
    whose module names such a failure (FAILS_ON_PI4). (That OpenVINO says which float precision ran on the
    board, f16 on the A76, is checked in tests/test_run.py's pipeline on qemu://pi5.)"""
    from bbdeploy.quantization.options import QuantOptions
    from bbdeploy.stages.export import ExportOptions, export

    failing = next(name for name in TARGETS if getattr(target_checks(name), "FAILS_ON_PI4", None))
    other = next(name for name in TARGETS if name != failing)
    (row,) = export(ExportOptions("mobilenet_v3_small", targets=failing, weights="random", input_size=TINY,
                                  output=tmp_path, precision="int8", quant=QuantOptions(calib_size=4),
                                  min_cosine=PLUMBING_MIN_COSINE))
    artifacts = [row["artifact"], str(small_artifacts[(other, "int8")])]
    done = run_cli("drift", *artifacts, "--data", str(evaluation_images), "--device", "qemu://pi4", "--json",
                   timeout=300)
    assert done.returncode == 1, done.stderr
    failed, measured = json.loads(done.stdout)["results"]
    error = target_checks(failing).FAILS_ON_PI4
    assert (failed["status"], failed["error"], failed["agreement_top1"]) == ("failed", error, None), failed
    assert measured["status"] == "ok" and measured["device"]["cpu"] == "Cortex-A72" and measured["agreement_top1"] is not None
    assert f"✗ {Path(artifacts[0]).name}: {error}" in done.stderr


def test_a_crash_on_the_board_is_a_crash_and_a_missing_runtime_names_its_package(sshd, small_artifacts,
                                                                                 evaluation_images, tmp_path):
    """A runner killed by a signal behind ssh (which exits 255 for that too) is not a lost connection."""
    crashing = tmp_path / "crashing-python"
    crashing.write_text("#!/bin/sh\necho 'about to crash' >&2\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    artifact = str(small_artifacts[(PLUMBING_TARGET, "fp32")])
    for command in (["bench", artifact], ["drift", artifact, "--data", str(evaluation_images)]):
        done = run_cli(*command, "--device", sshd["device"], *sshd["options"], "--remote-python", str(crashing))
        assert done.returncode == 1, done.stderr
        assert (f"the runner crashed on {sshd['device']}: killed by signal 11 (SIGSEGV); its last output: "
                "about to crash") in done.stderr, done.stderr
        assert "cannot connect" not in done.stderr
    # a board without one runtime: that row names the package to install there, the others are measured
    lacking = TARGETS[LAST]
    module = lacking.packages[lacking.distributions.index(lacking.device_distributions[0])]
    blocker = tmp_path / "no-runtime"
    (blocker / module).mkdir(parents=True)
    (blocker / module / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    python = tmp_path / "python-without-it"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={blocker} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    artifacts = [str(small_artifacts[(LAST, "int8")]), str(small_artifacts[(PLUMBING_TARGET, "int8")])]
    done = run_cli("bench", *artifacts, "--device", sshd["device"], *sshd["options"], "--remote-python", str(python),
                   "--runs", "2", "--warmup", "0", "--min-time", "0", "--json")
    assert done.returncode == 1
    without, measured = json.loads(done.stdout)["results"]
    assert without["status"] == "failed" and without["error"] == (
        f"{sshd['device']} lacks the runtime module '{module}'; install it there: python3 -m pip install "
        f"{' '.join(lacking.device_distributions)}"), without
    assert measured["status"] == "measured"


@pytest.mark.parametrize("args, expected", [
    (["--device", "telnet://pi"], "error: unknown device 'telnet://pi'; pass one of local, ssh://[user@]host[:port], "
                                  "adb://SERIAL, qemu://pi5"),
    (["--device", "qemu://pi9"], "error: unknown emulated board 'pi9'; pass one of qemu://pi5, qemu://pi4"),
    (["--device", "adb://emulator-5554"], "error: adb://emulator-5554: adb devices cannot return an artifact's outputs "
                                          "(benchmark_model only times it); measure drift on local, ssh:// or "
                                          "qemu://pi5 and latency with bench --device adb://emulator-5554"),
])
def test_bad_drift_devices_are_one_line(args, expected, small_artifacts, evaluation_images):
    done = run_cli("drift", str(small_artifacts[(SECOND, "fp32")]), "--data", str(evaluation_images), *args)
    assert done.returncode == 2 and done.stderr.strip() == expected, done.stderr


def test_an_emulated_board_without_qemu_says_what_to_install(small_artifacts, tmp_path):
    """PATH without qemu-aarch64-static (and without mmdebstrap): one line naming the Debian package."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "ssh"):
        if Path(f"/usr/bin/{tool}").exists():
            (bare / tool).symlink_to(f"/usr/bin/{tool}")
    done = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--device", "qemu://pi5",
                   env={"PATH": str(bare)})
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: an emulated board needs qemu's user-mode emulator, and there is no qemu-aarch64-static here; "
        "install it: apt-get install qemu-user-static"), done.stderr


def test_preparing_a_board_without_mmdebstrap_says_what_to_install(small_artifacts, tmp_path):
    """qemu is there, the board is not prepared, and nothing can build its userland: one line."""
    import shutil

    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "qemu-aarch64-static").symlink_to(shutil.which("qemu-aarch64-static"))
    done = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--device", "qemu://pi5",
                   env={"PATH": str(bare), "BBDEPLOY_OFFLINE": "", emulated_board.BOARDS_ENV: str(tmp_path / "none")})
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: an emulated board is prepared with mmdebstrap, and there is none here; install it: "
        "apt-get install mmdebstrap"), done.stderr
    assert not (tmp_path / "none").exists()  # nothing half-made
