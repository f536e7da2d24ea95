"""`bbdeploy run --executor ray` against a real Ray cluster: a head and one worker node on loopback,
each declaring one device resource, as a lab with two boards would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PLUMBING_TARGET, run_cli
from tests.test_run import SMALL_MODEL

RAY = shutil.which("ray", path=str(Path(sys.executable).parent))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """`ray start --head` with device:board-a, then a worker node with device:board-b, token
    authentication on (Ray's default for clusters), stopped after. Yields the client's address and
    environment."""
    import secrets
    import tempfile

    assert RAY is not None, "ray is not installed in this environment; pip install 'bbdeploy[ray]'"
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    node = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        for command in (["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}",
                         "--resources", json.dumps({"device:board-a": 1})],
                        [f"--address=127.0.0.1:{port}", "--num-cpus=1", "--resources", json.dumps({"device:board-b": 1})]):
            # started in a folder of its own, as a node on another machine would be: a relative path
            # that reached a worker unresolved would be taken from there
            done = subprocess.run([RAY, "start", *command, *node], env=env, capture_output=True, text=True, cwd=temp)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield f"127.0.0.1:{port}", {key: env[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.long(seconds=30)
def test_ray_keeps_one_benchmark_per_device_while_devices_run_side_by_side(ray_cluster, sshd, tmp_path):
    """Two boards the cluster declares (both the loopback sshd, so their benchmarks can overlap) and
    one it does not: that one is named at start, its rows fail with how to declare it, the others are
    measured; the output folder is written relative to the pipeline file, though the cluster's nodes
    were started in another folder."""
    options = sshd["options"][1::2]
    board = {"url": sshd["device"], "python": sys.executable, "ssh_options": options}
    # the same sshd under another address (without the user name): another board to bbdeploy, whose
    # results are keyed by the address, so neither board's results are the other's cached ones
    other = {**board, "url": "ssh://" + sshd["device"].rpartition("@")[2]}
    # one target: the export of each precision is a job of its own, and each brings a bench job per
    # device, so each board has two benchmarks to keep apart (the targets are the other tests' concern)
    pipeline = {"models": [SMALL_MODEL], "targets": [PLUMBING_TARGET],
                "precisions": {"fp32": {}, "int8": {"min_cosine": 0.0}}, "calibration": {"size": 8},
                "validation": {"limit": 8}, "devices": {"board-a": board, "board-b": other, "board-c": board},
                "bench": {"runs": 5, "warmup": 1, "min_time": 1.0}, "output": "out"}  # beside the file
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    address, env = ray_cluster
    done = run_cli("run", str(path), "--executor", "ray", "--address", address, "--json", env=env, timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]
    # said at start, before the first job: the undeclared board, and that the rest runs
    assert "warning: the Ray cluster has no resource device:board-c: the rows of board-c will fail" in " ".join(
        done.stderr.split()), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (tmp_path / "out" / "report.json").is_file() and all(
        Path(row["artifact"]).is_relative_to(tmp_path / "out") for row in report["rows"] if row["artifact"])
    measured = [r for r in report["rows"] if r["device"] != "board-c"]
    assert len(measured) == 4 and all(r["status"] == "ok" for r in measured), measured
    for row in (r for r in report["rows"] if r["device"] == "board-c"):
        # the first stage that needs the board is its own drift (issue 26)
        assert row["status"] == "failed" and row["stage"] == "drift" and "device:board-c" in row["reason"], row
    benches = [job for job in report["jobs"] if job["kind"] == "bench"]
    assert sorted(job["device"] for job in benches) == ["board-a", "board-a", "board-b", "board-b"]

    def overlap(a, b):
        return a["started"] < b["finished"] and b["started"] < a["finished"]

    same = [(a, b) for i, a in enumerate(benches) for b in benches[i + 1:] if a["device"] == b["device"]]
    other = [(a, b) for i, a in enumerate(benches) for b in benches[i + 1:] if a["device"] != b["device"]]
    assert not any(overlap(a, b) for a, b in same), same
    assert any(overlap(a, b) for a, b in other), other
