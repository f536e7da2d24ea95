"""`bbdeploy bench` on this machine: the method (warm-up, runs until count and time), the summary and
the warnings. Timing targets live in benchmarks/, not here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.targets.bench import add_warnings, latency_summary
from bbdeploy.targets.runner.device_state import SHELL_DUMP
from tests.conftest import FAKES, PLUMBING_TARGET, run_cli
from tests.target_checks import target_checks

SECOND = list(TARGETS)[1]  # another target than the plumbing one
ADB = next(t for t in TARGETS.values() if t.adb_tool)  # the target an Android phone times (with adb_tool)
NOT_ADB = next(t for t in TARGETS.values() if not t.adb_tool)


def test_local_bench_of_every_target(small_artifacts):
    result = run_cli("bench", *map(str, small_artifacts.values()), "--runs", "7", "--warmup", "2", "--min-time", "0",
                     "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"]["name"] == "local" and report["device"]["cores"] >= 1
    rows = report["results"]
    assert [(r["target"], r["precision"]) for r in rows] == list(small_artifacts)
    for row, path in zip(rows, small_artifacts.values()):
        latency = row["latency_ms"]
        assert row["runs"] == 7 and row["threads"] == 1 and row["warmup"] == 2
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert row["throughput_per_s"] == pytest.approx(1000 / latency["mean"])
        manifest = json.loads(Path(str(path) + ".json").read_text())
        assert row["size_bytes"] == sum(f["bytes"] for f in manifest["files"])
        assert row["status"] == "measured" and row["error"] is None
        assert row["peak_rss_bytes"] > 20e6  # a Python process with a runtime loaded
        # what loading this artifact (and its runtime) added: 0 where the load reused pages freed before
        # it (CI saw 0 for one of ten small rows), never a figure that is not whole pages
        assert isinstance(row["load_rss_bytes"], int) and row["load_rss_bytes"] % 4096 == 0
        # what the runtime reports of itself (its execution precision, XNNPACK): the target's own check
        target_checks(row["target"]).check_local_bench_row(row)
    assert rows[0]["load_rss_bytes"] > 5e6  # the first load brings its runtime into the process


def test_one_artifact_that_cannot_run_is_a_failed_row_and_the_others_are_measured(small_artifacts, tmp_path):
    """Issue 12: results are rows. The broken file matches its manifest (so it is not refused as
    tampered with); its runtime cannot load it."""
    import hashlib
    import shutil

    broken = tmp_path / f"broken{TARGETS[PLUMBING_TARGET].suffix}"
    broken.write_bytes(b"not a model")
    manifest = json.loads(Path(str(small_artifacts[(PLUMBING_TARGET, "fp32")]) + ".json").read_text())
    manifest["files"] = [{"path": broken.name, "sha256": hashlib.sha256(broken.read_bytes()).hexdigest(),
                          "bytes": broken.stat().st_size}]
    Path(str(broken) + ".json").write_text(json.dumps(manifest))
    source = small_artifacts[(SECOND, "fp32")]
    tampered = tmp_path / source.name
    shutil.copy(source, tampered)
    shutil.copy(str(source) + ".json", str(tampered) + ".json")
    with open(tampered, "ab") as f:
        f.write(b"\0")
    artifacts = [small_artifacts[(PLUMBING_TARGET, "int8")], broken, small_artifacts[(SECOND, "int8")], tampered]
    result = run_cli("bench", *map(str, artifacts), "--runs", "3", "--warmup", "1", "--min-time", "0", "--json")
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [r["status"] for r in rows] == ["measured", "failed", "measured", "failed"]
    target_checks(PLUMBING_TARGET).check_unloadable_file_error(rows[1]["error"])  # the runtime's own words
    assert rows[3]["error"].startswith("the file differs from what its manifest recorded"), rows[3]["error"]
    assert all(r["runs"] == 3 and r["latency_ms"]["p50"] > 0 for r in (rows[0], rows[2]))
    assert f"✗ {broken.name}: " in result.stderr and "✓" in result.stderr


def test_artifacts_are_timed_interleaved_in_rounds(monkeypatch, tmp_path):
    """Rounds of A, B, A, B ...: both artifacts see the device in the same states."""
    from bbdeploy.targets import runner as runner_module

    monkeypatch.chdir(tmp_path)
    for name in ("A", "B"):
        Path(name).write_bytes(b"stand-in artifact")

    calls = []

    class Fake(runner_module.Runner):
        def __init__(self, name):
            self.name, self.runtime, self.runtime_version = name, "fake", "0"
            self.input = runner_module.TensorSpec("x", [1, 2], "float32")
            self.outputs = [runner_module.TensorSpec("y", [1, 2], "float32")]

        def _invoke(self, batch):
            calls.append(self.name)
            return [batch]

    monkeypatch.setattr(runner_module.artifact, "load", lambda path, threads, precision: Fake(path))
    outcomes = runner_module.measure(["A", "B"], warmup=1, runs=20, min_time=0)
    assert [o["result"]["runs"] for o in outcomes] == [20, 20]
    timed = calls[2:]  # after one warm-up run each
    block = 20 // runner_module.ROUNDS
    assert timed == (["A"] * block + ["B"] * block) * runner_module.ROUNDS


def test_a_local_run_past_its_timeout_is_one_line(small_artifacts):
    result = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--timeout", "0.01")
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: the benchmark did not finish within --timeout 0.01 s; pass fewer --runs, "
                                     "a smaller --min-time or a larger --timeout")


def test_runs_continue_until_the_minimum_time(small_artifacts):
    result = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "int8")]), "--runs", "1", "--warmup", "0", "--min-time", "0.5",
                     "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert row["runs"] > 1 and row["latency_ms"]["mean"] * row["runs"] >= 500 * 0.9


def test_latency_summary_by_hand():
    summary = latency_summary([4_000_000, 1_000_000, 3_000_000, 2_000_000, 10_000_000])
    assert summary["min"] == 1.0 and summary["p50"] == 3.0 and summary["mean"] == 4.0
    assert summary["p90"] == pytest.approx(7.6) and summary["p99"] == pytest.approx(9.76)
    assert summary["std"] == pytest.approx((((0 + 9 + 1 + 4 + 36) / 5) ** 0.5))


def _row(p50: float, p99: float, xnnpack=None) -> dict:
    return {"artifact": "x", "latency_ms": {"p50": p50, "p99": p99}, "xnnpack": xnnpack, "warnings": []}


def _entry(precision: str, **changes) -> dict:
    return {"backbone": "b", "width": None, "target": "t", "input_size": 64, "batch": 1, "layout": "nhwc",
            "precision": precision, **changes}


def test_int8_is_compared_with_its_own_fp32_sibling_only():
    """Another width or layout is another network or input: no "int8 is not faster" from those."""
    for changes in ({"width": 0.5}, {"layout": "nchw"}, {"input_size": 96}, {"batch": 4}):
        rows = [_row(1.0, 1.1), _row(1.2, 1.3)]
        add_warnings(rows, [_entry("fp32"), _entry("int8", **changes)])
        assert rows[1]["warnings"] == [], changes


def test_warnings_users_need():
    entries = [_entry(p) for p in ("fp32", "int8")]
    rows = [_row(1.0, 1.2, {"applied": True, "partitions": 1}), _row(1.1, 2.0, {"applied": False, "partitions": 0})]
    add_warnings(rows, entries)
    assert rows[0]["warnings"] == []
    assert [w.split(":")[0] for w in rows[1]["warnings"]] == [
        "int8 is not faster than fp32 here (p50 1.10x of x)", "the XNNPACK delegate was not applied", "noisy device"]


@pytest.mark.parametrize("args, expected", [
    (["--device", "telnet://pi"], "error: unknown device 'telnet://pi'; pass one of local, ssh://[user@]host[:port], adb://SERIAL, qemu://pi5"),
    (["--runs", "0"], "error: --runs 0 must be at least 1"),
])
def test_bad_bench_input_is_one_line(args, expected, small_artifacts):
    result = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), *args)
    assert result.returncode == 2 and result.stderr.strip() == expected, result.stderr


def test_an_artifact_without_a_manifest_is_refused(tmp_path):
    artifact = tmp_path / f"model{TARGETS[PLUMBING_TARGET].suffix}"
    artifact.write_bytes(b"not a model")
    result = run_cli("bench", str(artifact))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no manifest {artifact}.json: pass an artifact written by `bbdeploy export`"


def _remote_temp_folders() -> set[str]:
    import glob
    import tempfile

    return set(glob.glob(str(Path(tempfile.gettempdir()) / "bbdeploy.*")))


def _assert_nothing_left(before: set[str], within_s: float = 120.0) -> None:
    """No temp folder of this test's runs is left on the device (this machine, behind the loopback sshd).
    Other tests on the other xdist worker use the same sshd: their folders come and go while their runs
    last (at most a minute), so a new folder must still be there after `within_s` to count as left."""
    import time

    deadline = time.monotonic() + within_s
    while (left := _remote_temp_folders() - before) and time.monotonic() < deadline:
        time.sleep(2)
    assert not left, left


def test_ssh_bench_of_every_target_leaves_nothing_on_the_device(sshd, small_artifacts, tmp_path):
    import sys
    import tempfile

    before = _remote_temp_folders()
    # a file name with spaces and semicolons: quoted on its way to the device's shell, it is just a name;
    # unquoted, the device would run `cd ..; touch PWNED` in its temp folder's parent
    source = small_artifacts[(PLUMBING_TARGET, "int8")]
    odd = tmp_path / f"model a; cd ..; touch PWNED; b{source.suffix}"
    odd.write_bytes(source.read_bytes())
    manifest = json.loads(Path(str(source) + ".json").read_text())
    manifest["files"] = [{**manifest["files"][0], "path": odd.name}]
    Path(str(odd) + ".json").write_text(json.dumps(manifest))
    # the fp32 artifact renamed to the int8 one's name in another folder: equal names must not collide
    fp32 = small_artifacts[(PLUMBING_TARGET, "fp32")]
    twin = tmp_path / "twin" / source.name
    twin.parent.mkdir()
    twin.write_bytes(fp32.read_bytes())
    manifest = json.loads(Path(str(fp32) + ".json").read_text())
    manifest["files"] = [{**manifest["files"][0], "path": twin.name}]
    Path(str(twin) + ".json").write_text(json.dumps(manifest))
    others = [t for t in TARGETS if t != PLUMBING_TARGET]  # every other target's int8 artifact
    artifacts = [str(odd), *(str(small_artifacts[(t, "int8")]) for t in others), str(twin), str(source)]
    result = run_cli("bench", *artifacts, "--device", sshd["device"], *sshd["options"], "--remote-python",
                     sys.executable, "--runs", "5", "--warmup", "1", "--min-time", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"]["name"] == sshd["device"] and report["device"]["cores"] >= 1
    assert [(r["target"], r["precision"], r["runs"], r["status"]) for r in report["results"]] == [
        (PLUMBING_TARGET, "int8", 5, "measured"), *((t, "int8", 5, "measured") for t in others),
        (PLUMBING_TARGET, "fp32", 5, "measured"), (PLUMBING_TARGET, "int8", 5, "measured")]
    # each row timed its own file on the device (the twins' sizes differ by 3x)
    assert [r["device_file_bytes"] for r in report["results"]] == [Path(a).stat().st_size for a in artifacts]
    assert all(r["latency_ms"]["p50"] > 0 and r["peak_rss_bytes"] > 20e6 for r in report["results"])
    _assert_nothing_left(before)
    assert not (Path(tempfile.gettempdir()) / "PWNED").exists()


def test_ssh_errors_are_one_line_and_leave_nothing(sshd, small_artifacts, tmp_path):
    import socket
    import subprocess

    before = _remote_temp_folders()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    unreachable = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--device", f"ssh://127.0.0.1:{closed}", *sshd["options"])
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"error: cannot connect to ssh://127.0.0.1:{closed}: ssh: connect to host "
                                         f"127.0.0.1 port {closed}: Connection refused; check the host"), unreachable.stderr
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    denied = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--device", sshd["device"], *sshd["client"],
                     "--ssh-option", f"IdentityFile={stranger}")
    assert denied.returncode == 1 and "Permission denied" in denied.stderr and "ssh-copy-id" in denied.stderr, denied.stderr
    missing = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "int8")]), "--device", sshd["device"], *sshd["options"],
                      "--remote-python", "/no/such/python3")
    # the shell's own words (exit 127) are passed through, with the hint
    assert missing.returncode == 1 and missing.stderr.startswith(
        f"error: a command is missing on {sshd['device']}: "), missing.stderr
    assert "/no/such/python3: No such file or directory" in missing.stderr and "--remote-python PATH" in missing.stderr
    for stderr in (unreachable.stderr, denied.stderr, missing.stderr):
        assert len(stderr.strip().splitlines()) == 1
    _assert_nothing_left(before)


def _adb_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_adb_bench_sends_exactly_these_commands_and_cleans_up(phone, small_artifacts):
    artifact = small_artifacts[(ADB.name, "int8")]
    result = run_cli("bench", str(artifact), "--device", "adb://emulator-5554", "--benchmark-binary",
                     str(FAKES / "benchmark_model"), "--threads", "2", "--runs", "30", "--warmup", "3",
                     "--min-time", "0.5", "--json", env=phone["env"])
    assert result.returncode == 0, result.stderr
    calls = _adb_calls(phone["log"])
    folder = calls[1][-1].split()[-1]
    assert folder.startswith("/data/local/tmp/bbdeploy-")
    state = ["-s", "emulator-5554", "shell", SHELL_DUMP]  # the phone's state, before and after the runs
    assert calls == [
        state,
        ["-s", "emulator-5554", "shell", f"mkdir -p {folder}"],
        ["-s", "emulator-5554", "push", str(artifact), f"{folder}/model{ADB.suffix}"],
        ["-s", "emulator-5554", "push", str(FAKES / "benchmark_model"), f"{folder}/benchmark_model"],
        ["-s", "emulator-5554", "shell", f"chmod 755 {folder}/benchmark_model"],
        ["-s", "emulator-5554", "shell", f"{folder}/benchmark_model --graph={folder}/model{ADB.suffix} --num_threads=2 "
                                         "--warmup_runs=3 --num_runs=30 --min_secs=0.5 --use_xnnpack=true"],
        ["-s", "emulator-5554", "shell", "getprop ro.product.model; getprop ro.build.version.release; "
                                         "getprop ro.product.cpu.abi; nproc"],
        ["-s", "emulator-5554", "shell", f"rm -rf {folder}"],
        state,
    ]
    assert list(phone["root"].iterdir()) == []
    report = json.loads(result.stdout)
    assert report["device"]["machine"] == "Pixel 7" and report["device"]["os"] == "Android 14"
    (row,) = report["results"]
    # benchmark_model's `count=30 ... min=1976 ... avg=2022.82 std=30` (microseconds), no percentiles
    assert row["runs"] == 30 and row["threads"] == 2 and row["runtime"] == "benchmark_model"
    assert row["latency_ms"] == {"mean": 2.02282, "std": 0.03, "min": 1.976, "p50": None, "p90": None, "p99": None}
    assert row["peak_rss_bytes"] == int(8.46484 * 2**20) and row["xnnpack"]["applied"] is True
    # the recorded phone's state (tests/fixtures/device_state/android_pixel_9_pro/SOURCE.md)
    assert row["state_before"]["android_thermal_status"] == 0 and len(row["state_after"]["cpus"]) == 8


def test_adb_pins_with_taskset_and_refuses_a_sustained_run(phone, small_artifacts):
    artifact = small_artifacts[(ADB.name, "int8")]
    common = ["bench", str(artifact), "--device", "adb://emulator-5554", "--benchmark-binary",
              str(FAKES / "benchmark_model"), "--runs", "5", "--min-time", "0"]
    last = os.cpu_count() - 1  # the stand-in phone's shell is this machine's: a core it has
    pinned = run_cli(*common, "--cpus", f"0,{last}", "--json", env=phone["env"])
    assert pinned.returncode == 0, pinned.stderr
    (run,) = [call[-1] for call in _adb_calls(phone["log"]) if "benchmark_model --graph" in call[-1]]
    assert run.startswith(f"taskset {(1 | 1 << last):x} /data/local/tmp/bbdeploy-")  # toybox's hex mask
    (row,) = json.loads(pinned.stdout)["results"]
    assert row["cpus"] == [0, last] and [c["cpu"] for c in row["state_before"]["cpus"]] == [0, last]
    absent = run_cli(*common, "--cpus", "64", env=phone["env"])  # taskset's own refusal: the row fails
    assert absent.returncode == 1 and "taskset: failed to set pid" in absent.stderr
    refused = run_cli(*common, "--sustained", "30", env=phone["env"])
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: --sustained needs the time of every run, which benchmark_model does not print; time a sustained "
        "run over ssh:// or locally")


def test_adb_refuses_other_targets_before_touching_the_phone(phone, small_artifacts):
    refused = small_artifacts[(NOT_ADB.name, "int8")]
    result = run_cli("bench", str(small_artifacts[(ADB.name, "int8")]), str(refused),
                     "--device", "adb://emulator-5554",
                     "--benchmark-binary", str(FAKES / "benchmark_model"), env=phone["env"])
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {refused.name} is a {NOT_ADB.name} artifact; adb devices run "
                                     f"{ADB.name} artifacts only (with {ADB.adb_tool}); bench it locally or over ssh://")
    assert _adb_calls(phone["log"]) == []


def test_adb_unknown_phone_is_one_line_and_leaves_nothing(phone, small_artifacts):
    result = run_cli("bench", str(small_artifacts[(ADB.name, "int8")]), "--device", "adb://nosuchphone", "--benchmark-binary",
                     str(FAKES / "benchmark_model"), env=phone["env"])
    assert result.returncode == 1
    assert result.stderr.strip() == "error: adb on adb://nosuchphone failed: adb: device 'nosuchphone' not found"
    assert list(phone["root"].iterdir()) == []
