"""`export --features 3,4,5`: the backbone without its classifier, one output per stage, on every target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.run.jobs import write_builtin_validation
from bbdeploy.stages.manifest import read_manifest
from tests.conftest import PLUMBING_MIN_COSINE, PLUMBING_TARGET, TINY, calibrated_checkpoint, run_cli
from tests.target_checks import layers_unprobed, target_checks

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
    _drift_compares_every_map(rows, tmp_path)  # the int8 ones: fp32 per-layer views are tests/test_layer_diff.py's


LAYER_IMAGES = 4


def _drift_compares_every_map(rows: list[dict], tmp_path: Path) -> None:
    """drift (--layers) on the int8 feature-map artifacts: each map against the float model's, every layer on the
    artifact's runtime, and each map checked at the layer that writes it (features_2: the last conv,
    conv + batch norm + hardswish) or next reads it (features_0/1 end in a residual addition)."""
    data = write_builtin_validation(tmp_path / "evaluation")
    artifacts = [row["artifact"] for row in rows]
    result = run_cli("drift", *artifacts, "--data", str(data), "--limit", "8", "--layers", "--layer-samples",
                     str(LAYER_IMAGES), "--json", timeout=600)
    results = json.loads(result.stdout)["results"]
    for row in results:
        assert row["agreement_top1"] is None and row["accuracy_top1"] is None  # no top-1 on feature maps
        assert [o["name"] for o in row["outputs"]] == ["features_0", "features_1", "features_2"]
        sqnr = [o["sqnr_db"] for o in row["outputs"]]
        assert all(value > 0 and o["cosine"] >= PLUMBING_MIN_COSINE for value, o in zip(sqnr, row["outputs"])), sqnr
        assert row["sqnr_db"] == min(sqnr)  # the table's figure: the worst map
        unprobed = layers_unprobed(row["target"], "int8")
        check = row["layers_check"]
        if unprobed:
            assert unprobed in check["error"], check
            continue
        assert check["error"] is None, (row["target"], check)
        assert [(p["output"], p["layer"], p["point"], p["seen"]) for p in check["points"]] == MAP_POINTS
        assert all(abs((p["layer_sqnr_db"] or 150) - (p["output_sqnr_db"] or 150)) <= 0.5 for p in check["points"])
    # an artifact whose layers cannot be probed says so and fails drift's gate; none other does
    assert result.returncode == (1 if any(r["layers_check"]["error"] for r in results) else 0), result.stderr
    refused = run_cli("drift", artifacts[0], "--data", str(data), "--min-agreement", "0.9")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr
    assert "returns feature maps, which have no top-1 or logits to judge; leave out --min-agreement" in refused.stderr


# MobileNetV3-Large: stage 3 ends in features.6 (its next conv is features.7's expansion), stage 4 in
# features.12, stage 5 is features.16, the last conv (torchvision's layer names)
MAP_POINTS = [("features_0", "features.7.block.0.0", "input", True),
              ("features_1", "features.13.block.0.0", "input", True),
              ("features_2", "features.16.0", "output", True)]


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
