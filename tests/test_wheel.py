"""What users install is what is tested: the wheel is built, installed with its declared dependencies
into a fresh virtual environment (nothing from this checkout, no dev extra), and its `bbdeploy`
command runs export, drift and bench there. An editable install cannot fool this test: a module left
out of the wheel or a dependency that only the dev extra brings fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the CPU build, installed first as the Makefile does (see README)


def _run(command: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{command[:4]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.long(seconds=90)
def test_the_installed_wheel_exports_drifts_and_benches(tmp_path, photos):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("bbdeploy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith("bbdeploy-")}
    assert packages == {"bbdeploy"}, packages  # no generic top-level names (pipeline, targets) installed
    assert "bbdeploy/targets/runner.py" in names and "bbdeploy/targets/devices/ssh.py" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    # --no-compile: byte-compiling torch and the converters costs a minute of CPU and tests nothing
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    _run([*pip, TORCH], tmp_path)
    _run([*pip, str(wheel)], tmp_path)

    work = tmp_path / "work"  # not the checkout: nothing can be imported from the source tree
    data = work / "photos"
    data.mkdir(parents=True)
    for name, photo in list(photos.items())[:6]:
        Image.fromarray(photo).save(data / f"{name}.png")
    bbdeploy = str(venv / "bin" / "bbdeploy")
    env = {"BBDEPLOY_OFFLINE": "1", "BBDEPLOY_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ""}
    rows = json.loads(_run([bbdeploy, "export", "mobilenet_v3_small", "--weights", "random", "--input-size", "64",
                            "--target", "onnx", "--int8", "--calib-size", "8", "--min-cosine", "0.5", "--output", "out", "--json"], work, env))
    (row,) = rows
    assert row["status"] == "exported" and row["parity"]["passed"] is True, row
    artifact = row["artifact"]
    assert Path(work / artifact).is_file() and Path(artifact).name == "mobilenet_v3_small_64px_int8.onnx"

    report = json.loads(_run([bbdeploy, "drift", artifact, "--data", "photos", "--json"], work, env))
    (result,) = report["results"]
    assert report["data"]["images"] == 6 and result["agreement_top1"] is not None

    bench = json.loads(_run([bbdeploy, "bench", artifact, "--runs", "3", "--warmup", "1", "--min-time", "0",
                             "--json"], work, env))
    (measured,) = bench["results"]
    assert measured["status"] == "measured" and measured["runs"] >= 3 and measured["latency_ms"]["p50"] > 0
    # the venv's own interpreter ran it, from the installed package
    assert _run([str(venv / "bin" / "python"), "-c", "import bbdeploy; print(bbdeploy.__file__)"], work, env
                ).strip().startswith(str(venv))
