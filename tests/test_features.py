"""`export --features 3,4,5`: the backbone without its classifier, one output per stage, on every target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.manifest import read_manifest
from tests.conftest import PLUMBING_MIN_COSINE, PLUMBING_TARGET, TINY, calibrated_checkpoint, run_cli
from tests.target_checks import target_checks

# MobileNetV3-Large's stage 3/4/5 maps (stride 8/16/32) at 64 px: its block table's channels 40, 112 and
# the 960-channel last conv (torchvision's detection backbones tap the same three)
EXPECTED = [[40, 8, 8], [112, 4, 4], [960, 2, 2]]


@pytest.mark.long(seconds=60)
def test_three_feature_maps_on_every_target_float_and_int8(photos, tmp_path):
    weights = calibrated_checkpoint("mobilenet_v3_large", photos, tmp_path)
    for precision in ("fp32", "int8"):
        extra = ["--int8", "--calib-size", "16", "--min-cosine", str(PLUMBING_MIN_COSINE)] if precision == "int8" else []
        result = run_cli("export", "mobilenet_v3_large", "--weights", str(weights), "--features", "3,4,5",
                         "--input-size", str(TINY), "--output", str(tmp_path / precision), "--json", *extra)
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert [(r["target"], r["status"]) for r in rows] == [(t, "exported") for t in TARGETS]
        for row in rows:
            manifest = read_manifest(Path(row["manifest"]))
            assert manifest["backbone"]["features"]["shapes"] == EXPECTED
            assert len(manifest["outputs"]) == 3
            outputs = manifest["parity"]["outputs"]
            assert [o["name"] for o in outputs] == ["features_0", "features_1", "features_2"]
            assert manifest["parity"]["top1_agreement"] is None  # no top-1 on feature maps
            if precision == "fp32":
                assert all(o["max_abs_diff"] <= 1e-3 for o in outputs), (row["target"], outputs)
            else:
                assert all(PLUMBING_MIN_COSINE <= o["cosine"] <= 1 and o["sqnr_db"] > 0 for o in outputs), outputs
        for row in rows:
            if TARGETS[row["target"]].layouts[0] == "nhwc":  # the maps come out NHWC, as the input goes in
                assert [o["shape"] for o in read_manifest(Path(row["manifest"]))["outputs"]] == [
                    [1, h, w, c] for c, h, w in EXPECTED]
            own = getattr(target_checks(row["target"]), "check_feature_outputs", None)
            if own is not None:
                own(row)


@pytest.mark.parametrize("args, expected", [
    (["--features", "3,9"], "error: mobilenet_v3_large has no stage 9; pass one of 1, 2, 3, 4, 5"),
    (["--features", "3,4,5", "--num-classes", "10"],
     "error: --features exports the backbone without its classifier; leave out --num-classes"),
    (["--features", "three"], "error: --features 'three' is not a list of stage indices; pass e.g. 3,4,5"),
    (["--features", "3,4,5", "--int8", "--qat", "--train-data", "."],
     "error: --qat distills the classifier's logits; leave out --features (or --qat)"),
])
def test_bad_features_are_one_line(args, expected, tmp_path):
    result = run_cli("export", "mobilenet_v3_large", "--weights", "random", "--target", PLUMBING_TARGET, "--input-size",
                     str(TINY), "--output", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "out").exists()
