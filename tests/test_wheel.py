"""What users install is what is tested: the wheel is built, installed with its declared dependencies
into a fresh virtual environment (nothing from this checkout, no dev extra), and its `bbdeploy`
command runs export, drift and bench there. An editable install cannot fool this test: a module left
out of the wheel or a dependency that only the dev extra brings fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from bbdeploy.exporters.registry import TARGETS
from tests.conftest import PLUMBING_ARGS, PLUMBING_STEM

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the CPU build, installed first as the Makefile does (see README)



def _importable(venv: Path, packages: tuple[str, ...], cwd: Path) -> bool:
    """Whether the venv's Python finds every one of `packages` (without importing them)."""
    check = "import importlib.util, sys; sys.exit(not all(importlib.util.find_spec(p) for p in sys.argv[1:]))"
    return subprocess.run([str(venv / "bin" / "python"), "-c", check, *packages], cwd=cwd).returncode == 0


def _source_modules() -> list[str]:
    """Every .py file of the package's folders, as its path inside the wheel."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return sorted({f"{package.replace('.', '/')}/{path.relative_to(ROOT / folder).as_posix()}"
                   for package, folder in package_dirs.items() for path in (ROOT / folder).rglob("*.py")
                   if "__pycache__" not in path.parts})


def _run(command: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return _output(done, command)


def _output(done: subprocess.CompletedProcess, command: list[str]) -> str:
    assert done.returncode == 0, f"{command[:4]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.long(seconds=120)
def test_the_installed_wheel_exports_drifts_and_benches(tmp_path, photos, offline_guard):
    """...and nothing leaves the machine or lands in HOME from its commands (issue 25: the guard of
    tests/test_offline.py, on what a plain `pip install` brings, openvino-telemetry included)."""
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("bbdeploy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith("bbdeploy-")}
    assert packages == {"bbdeploy"}, packages  # no generic top-level names (pipeline, targets) installed
    # every module of the source folders, under the name pyproject's package-dir gives it: a new
    # sub-package missing from `packages` fails here (the runner's runtimes/ among them)
    missing = sorted(set(_source_modules()) - set(names))
    assert not missing, missing
    assert "bbdeploy/targets/runner/runtimes/onnxruntime.py" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    # --no-compile: byte-compiling torch and the converters costs a minute of CPU and tests nothing
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    _run([*pip, TORCH], tmp_path)
    _run([*pip, str(wheel)], tmp_path)
    # the targets a plain install runs (their packages import there); the others come with an extra
    installed = [name for name, target in TARGETS.items() if _importable(venv, target.packages, tmp_path)]
    extra = [name for name in TARGETS if name not in installed]
    pair = [installed[0], installed[-1]]  # two targets of the plain install, its first and its last

    work = tmp_path / "work"  # not the checkout: nothing can be imported from the source tree
    data = work / "photos"
    data.mkdir(parents=True)
    for name, photo in list(photos.items())[:6]:
        Image.fromarray(photo).save(data / f"{name}.png")
    def bbdeploy(*args: str) -> str:  # the venv's command, as a user's shell runs it, under the guard
        command = (str(venv / "bin" / "bbdeploy"),)
        return _output(offline_guard.command(*args, bbdeploy=command, cwd=work), [*command, *args])

    offline_guard.env["BBDEPLOY_OFFLINE"] = "1"
    rows = json.loads(bbdeploy("export", *PLUMBING_ARGS, "--weights", "random",
                               "--target", ",".join(pair), "--int8", "--calib-size", "8", "--min-cosine", "0.5",
                               "--output", "out", "--json"))
    assert [(row["target"], row["status"], row["parity"]["passed"]) for row in rows] == [
        (name, "exported", True) for name in pair], rows
    artifacts = [row["artifact"] for row in rows]
    assert Path(work / artifacts[0]).is_file() and Path(artifacts[0]).name == f"{PLUMBING_STEM}_int8{TARGETS[pair[0]].suffix}"

    report = json.loads(bbdeploy("drift", *artifacts, "--data", "photos", "--json"))
    assert report["data"]["images"] == 6 and all(r["agreement_top1"] is not None for r in report["results"])

    bench = json.loads(bbdeploy("bench", *artifacts, "--runs", "3", "--warmup", "1", "--min-time", "0", "--json"))
    for measured in bench["results"]:
        assert measured["status"] == "measured" and measured["runs"] >= 3 and measured["latency_ms"]["p50"] > 0
    for name in extra:  # a target of an extra, not installed: its row names what to install, in one line
        failed = offline_guard.command("export", *PLUMBING_ARGS, "--weights", "random", "--target", name,
                                       "--output", "out", "--json", bbdeploy=(str(venv / "bin" / "bbdeploy"),), cwd=work)
        assert failed.returncode == 1, failed.stderr
        (row,) = json.loads(failed.stdout)
        assert row["error"] == (f"target {name} needs the Python package '{TARGETS[name].packages[0]}'; "
                                f"pip install {TARGETS[name].install}"), row
    assert offline_guard.violations() == []
    env = {"PYTHONPATH": ""}
    # the venv's own interpreter ran it, from the installed package
    assert _run([str(venv / "bin" / "python"), "-c", "import bbdeploy; print(bbdeploy.__file__)"], work, env
                ).strip().startswith(str(venv))
