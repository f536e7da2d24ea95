"""`bbdeploy bench` on this machine: the method (warm-up, runs until count and time), the summary and
the warnings. Timing targets live in benchmarks/, not here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbdeploy.export import ExportOptions, export
from bbdeploy.quantization.options import QuantOptions
from bbdeploy.targets.bench import add_warnings, latency_summary
from tests.conftest import TINY, run_cli


@pytest.fixture(scope="module")
def small_artifacts(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("bench")
    paths = []
    for precision in ("fp32", "int8"):
        rows = export(ExportOptions("mobilenet_v3_small", input_size=TINY, output=out, precision=precision,
                                    quant=QuantOptions(calib_size=4)))
        assert [row["status"] for row in rows] == ["exported"] * 3
        paths += [Path(row["artifact"]) for row in rows]
    return paths


def test_local_bench_of_every_target(small_artifacts):
    result = run_cli("bench", *map(str, small_artifacts), "--runs", "7", "--warmup", "2", "--min-time", "0",
                     "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"]["name"] == "local" and report["device"]["cores"] >= 1
    rows = report["results"]
    assert [(r["target"], r["precision"]) for r in rows] == [
        ("onnx", "fp32"), ("tflite", "fp32"), ("openvino", "fp32"), ("onnx", "int8"), ("tflite", "int8"),
        ("openvino", "int8")]
    for row, path in zip(rows, small_artifacts):
        latency = row["latency_ms"]
        assert row["runs"] == 7 and row["threads"] == 1 and row["warmup"] == 2
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert row["throughput_per_s"] == pytest.approx(1000 / latency["mean"])
        manifest = json.loads(Path(str(path) + ".json").read_text())
        assert row["size_bytes"] == sum(f["bytes"] for f in manifest["files"])
        assert row["peak_rss_bytes"] > 20e6  # a Python process with a runtime loaded
    assert rows[1]["xnnpack"] == {"applied": True, "partitions": 1}  # one XNNPACK partition: all of the graph


def test_runs_continue_until_the_minimum_time(small_artifacts):
    result = run_cli("bench", str(small_artifacts[3]), "--runs", "1", "--warmup", "0", "--min-time", "0.5", "--json")
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


def test_warnings_users_need():
    entries = [{"backbone": "b", "target": "tflite", "input_size": 64, "batch": 1, "precision": p}
               for p in ("fp32", "int8")]
    rows = [_row(1.0, 1.2, {"applied": True, "partitions": 1}), _row(1.1, 2.0, {"applied": False, "partitions": 0})]
    add_warnings(rows, entries)
    assert rows[0]["warnings"] == []
    assert [w.split(":")[0] for w in rows[1]["warnings"]] == [
        "int8 is not faster than fp32 here (p50 1.10x of x)", "the XNNPACK delegate was not applied", "noisy device"]


@pytest.mark.parametrize("args, expected", [
    (["--device", "telnet://pi"], "error: unknown device 'telnet://pi'; pass local"),
    (["--runs", "0"], "error: --runs 0 must be at least 1"),
])
def test_bad_bench_input_is_one_line(args, expected, small_artifacts):
    result = run_cli("bench", str(small_artifacts[0]), *args)
    assert result.returncode == 2 and result.stderr.strip() == expected, result.stderr


def test_an_artifact_without_a_manifest_is_refused(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"not a model")
    result = run_cli("bench", str(artifact))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no manifest {artifact}.json: pass an artifact written by `bbdeploy export`"
