"""Nothing leaves the machine (issue 25): no bbdeploy command looks up a name or connects past this
machine, in its own process, its threads, its children or the board's runner, and none writes into
the user's home but bbdeploy's cache. Before the fix, an OpenVINO export made 18-23 lookups of
www.google-analytics.com (openvino-telemetry, from OpenVINO's converter and NNCF), a bench or drift of
an `.xml` one (from the runner), and `~/intel` and `~/.cache/Microsoft/DeveloperTools` (onnxruntime)
were written; see test_the_guard_sees_what_it_must for the guard itself. `bbdeploy run` is checked
under the same guard in tests/test_run.py, the installed wheel's commands in tests/test_wheel.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.targets.runner import RUNNERS, keep_runtimes_offline
from tests.conftest import FAKES

TINY_MODEL = ("mobilenet_v1", "--weights", "random", "--width", "0.25", "--input-size", "32")


@pytest.mark.long(seconds=75)
def test_no_command_reaches_past_this_machine_or_writes_into_home(offline_guard, sshd, phone, photos, tmp_path):
    guard = offline_guard
    data = tmp_path / "photos"
    data.mkdir()
    for name, photo in list(photos.items())[:6]:
        Image.fromarray(photo).save(data / f"{name}.png")
    out = tmp_path / "out"

    def bbdeploy(*args: str) -> str:
        done = guard.command(*args)
        assert done.returncode == 0, f"bbdeploy {args[0]} exited {done.returncode}: {done.stderr[-2000:]}"
        return done.stdout

    # every target, fp32 and int8 (QAT: post-training quantization, training, then each quantizer)
    qat = ("--int8", "--qat", "--train-data", str(data), "--epochs", "1", "--batch-size", "4", "--calib-size", "4",
           "--min-cosine", "0")
    for precision in ((), qat):
        rows = json.loads(bbdeploy("export", *TINY_MODEL, "--target", "all", *precision, "--output", str(out), "--json"))
        assert [(row["target"], row["status"]) for row in rows] == [(t, "exported") for t in TARGETS], rows
    artifacts = sorted(str(path) for suffix in {runner.SUFFIX for runner in RUNNERS.values()}
                       for path in out.glob(f"*{suffix}"))
    assert len(artifacts) == 2 * len(TARGETS), artifacts
    report = json.loads(bbdeploy("drift", *artifacts, "--data", str(data), "--report", str(tmp_path / "drift"),
                                 "--json"))
    assert all(row["agreement_top1"] is not None for row in report["results"]), report["results"]
    quick = ("--runs", "2", "--warmup", "1", "--min-time", "0", "--json")
    board = ("--device", sshd["device"], *sshd["options"], "--remote-python", str(guard.board_python))
    for device in (("--device", "local"), board):
        bench = json.loads(bbdeploy("bench", *artifacts, *device, *quick))
        assert [row["status"] for row in bench["results"]] == ["measured"] * len(artifacts), bench["results"]
    # drift on the board: evaluate.py runs the artifacts there (the runtimes' switches applied there too)
    on_board = json.loads(bbdeploy("drift", *artifacts, "--data", str(data), *board, "--json"))
    assert [row["status"] for row in on_board["results"]] == ["ok"] * len(artifacts), on_board["results"]
    guard.env.update(phone["env"])  # the stand-in adb and phone: what bbdeploy's side of adb does
    timed_over_adb = [artifact for artifact in artifacts for target in TARGETS.values()
                      if target.adb_tool and artifact.endswith(target.suffix)]
    bench = json.loads(bbdeploy("bench", *timed_over_adb, "--device", "adb://emulator-5554", "--benchmark-binary",
                                str(FAKES / "benchmark_model"), *quick))
    assert [row["status"] for row in bench["results"]] == ["measured"] * len(timed_over_adb), bench["results"]
    bbdeploy("info", "mobilenet_v1", "--stages")
    bbdeploy("models")

    assert (guard.traces / "board").exists()  # the board's runner ran under the guard
    assert guard.violations() == []


def test_the_guard_sees_what_it_must(offline_guard):
    """The guard above fails on each way out: a lookup in Python, a connection made below Python (bash's
    /dev/tcp here, as a C++ telemetry sender would: only strace sees it), a pip run, a file in the home
    folder."""
    python = ("import socket, pathlib, os, subprocess, sys\n"
              "try: socket.getaddrinfo('www.google-analytics.com', 443)\nexcept OSError: pass\n"
              "subprocess.run([sys.executable, '-m', 'pip', '--version'], capture_output=True)\n"
              "pathlib.Path(os.environ['HOME'], 'intel').mkdir(); pathlib.Path(os.environ['HOME'], 'intel', 'stats').touch()\n")
    assert offline_guard.command("-c", python, bbdeploy=(sys.executable,)).returncode == 0
    offline_guard.command("2", "bash", "-c", "exec 3<>/dev/tcp/198.51.100.7/443", bbdeploy=("timeout",))
    found = offline_guard.violations()
    assert any(v.startswith("socket.getaddrinfo 'www.google-analytics.com'") for v in found), found
    assert any('inet_addr("198.51.100.7")' in v for v in found), found
    assert any(v.startswith("subprocess.Popen") and "'pip', '--version'" in v for v in found), found
    assert "written into the home folder: intel/stats" in found, found


def test_switches_are_per_process_and_the_users_own_choice_wins(monkeypatch):
    """keep_runtimes_offline sets each runtime's variables only where the user set none, and blocks
    each module only in this process's import table (nothing written to disk)."""
    for runner in RUNNERS.values():
        for name in runner.OFFLINE_ENVIRONMENT:
            monkeypatch.setenv(name, "users-choice")
    keep_runtimes_offline()
    for runner in RUNNERS.values():
        for name in runner.OFFLINE_ENVIRONMENT:
            assert os.environ[name] == "users-choice"
    blocked = [module for runner in RUNNERS.values() for module in runner.OFFLINE_WITHOUT_MODULES]
    assert blocked, "no runtime blocks a module: this test then checks nothing about them"
    for module in blocked:
        done = subprocess.run([sys.executable, "-c", f"import bbdeploy, {module}"], capture_output=True, text=True)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, done.stderr
