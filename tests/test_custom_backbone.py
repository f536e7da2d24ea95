"""Bring your own backbone: `bbdeploy export tests.custom_net:build` goes through export, int8, drift and
bench like a zoo backbone, on every target; the import path is only ever what the user typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.manifest import read_manifest
from tests.conftest import PLUMBING_TARGET, run_cli

PREPROCESS = {"input_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def own_artifacts(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("own")
    (folder / "pre.json").write_text(json.dumps(PREPROCESS))
    # --min-cosine 0: the plumbing of your own code is what is checked here (this random 16-channel net's
    # MNN int8 measured cosine 0.49 against 0.99+ elsewhere, an MNN quantizer finding noted in issue 17)
    result = run_cli("export", "tests.custom_net:build", "--weights", "random", "--int8", "--preprocess",
                     str(folder / "pre.json"), "--calib-size", "16", "--min-cosine", "0", "--output",
                     str(folder / "out"), "--json")
    assert result.returncode == 0, result.stderr
    return folder, json.loads(result.stdout)


def test_own_backbone_exports_int8_to_every_target_with_its_preprocessing(own_artifacts):
    _, rows = own_artifacts
    assert [(r["target"], r["status"]) for r in rows] == [(t, "exported") for t in TARGETS]
    for row in rows:
        manifest = read_manifest(Path(row["manifest"]))
        assert manifest["backbone"]["name"] == "tests.custom_net:build" and manifest["backbone"]["num_classes"] == 10
        assert len(manifest["backbone"]["code_sha256"]) == 64
        assert manifest["preprocess"]["size"] == 64 and manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5]
        assert manifest["parity"]["samples"] == 112 and 0 < manifest["parity"]["cosine"] <= 1
        assert Path(row["artifact"]).name.startswith("tests_custom_net_build_int8")  # no ':' in file names


def test_drift_and_bench_run_every_artifact_of_it(own_artifacts, photos):
    folder, rows = own_artifacts
    artifacts = [row["artifact"] for row in rows]
    data = folder / "data"
    data.mkdir(exist_ok=True)
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(photos[name]).save(data / f"{name}.png")

    refused = run_cli("drift", *artifacts, "--data", str(data))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: {Path(artifacts[0]).name} was exported from your own code tests.custom_net:build; pass --model "
        "tests.custom_net:build to rebuild its float reference (bbdeploy does not import code a manifest names)")

    drift = run_cli("drift", *artifacts, "--data", str(data), "--model", "tests.custom_net:build", "--json")
    assert drift.returncode == 0, drift.stderr
    report = json.loads(drift.stdout)
    assert [r["samples"] for r in report["results"]] == [4] * len(TARGETS)
    bench = run_cli("bench", *artifacts, "--runs", "3", "--warmup", "1", "--min-time", "0", "--json")
    assert bench.returncode == 0, bench.stderr
    assert [r["status"] for r in json.loads(bench.stdout)["results"]] == ["measured"] * len(TARGETS)


@pytest.mark.parametrize("model, extra, expected", [
    ("tests.no_such_module:build", [], "error: cannot import 'tests.no_such_module' for backbone "
                                       "'tests.no_such_module:build' (No module named 'tests.no_such_module')"),
    ("tests.custom_net:no_such_function", [], "error: module 'tests.custom_net' has no function 'no_such_function'"),
    ("tests.custom_net:not_a_module", [], "error: tests.custom_net:not_a_module returned a str, not a torch.nn.Module"),
    ("mobilenet_v2", ["--preprocess", "pre.json"], "error: --preprocess applies to your own backbones"),
    ("tests.custom_net:build", ["--preprocess", "bad.json"], "error: --preprocess 'bad.json': unknown resize"),
])
def test_bad_own_backbone_input_is_one_line(model, extra, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pre.json").write_text(json.dumps(PREPROCESS))
    (tmp_path / "bad.json").write_text(json.dumps({"resize": 256}))
    (tmp_path / "tests").symlink_to(Path(__file__).parent)  # the import path resolves from the working folder
    result = run_cli("export", model, "--weights", "random", "--target", PLUMBING_TARGET, "--output", str(tmp_path / "out"),
                     *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "out").exists()
