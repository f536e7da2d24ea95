"""`drift --layers`: every layer's tensors as the artifact's own runtime computes them, against the float
model's at the same points (exporters/*_probes.py, stages/layer_diff.py), on the digits artifacts of
test_drift.py (MobileNetV1 x0.25 trained on scikit-learn's digits, every target, fp32 and int8)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bbdeploy.exporters.probes import by_order
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.drift import DriftOptions, drift
from bbdeploy.stages.layer_points import float_points
from bbdeploy.targets.runner.evaluate import sample_positions
from tests.conftest import run_cli
from tests.target_checks import layers_unprobed, target_checks
from tests.test_drift import digits, digits_artifacts, digits_checkpoint  # noqa: F401  (fixtures)

# MobileNetV1: a stem conv, 13 depthwise + 13 pointwise convs and the classifier, in network order
MOBILENET_V1_LAYERS = ["conv_stem", *[f"blocks.{stage}.{unit}.conv_{kind}" for stage, units in
                                      enumerate((1, 2, 2, 6, 2)) for unit in range(units) for kind in ("dw", "pw")],
                       "classifier"]
BROKEN = "blocks.3.0.conv_pw"  # a pointwise convolution in the middle of the network
IMAGES = 8


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_layer_is_compared_on_the_artifacts_runtime(target, precision, digits, digits_artifacts):
    # the same images for the plain drift and the per-layer view: the check's output figure is drift's own
    report = drift(DriftOptions(artifacts=[digits_artifacts[(target, precision)]], data=digits / "test",
                                limit=IMAGES, layers=True, layer_samples=IMAGES, exec_precision="f32"))
    (row,) = report["results"]
    assert len(MOBILENET_V1_LAYERS) == 28
    assert [layer["layer"] for layer in row["layers"]] == MOBILENET_V1_LAYERS
    assert row["layer_samples"] == IMAGES
    unprobed = layers_unprobed(target, precision)
    if unprobed:  # the row says why, as a failed check (drift's gate exits 1 on it)
        assert unprobed in row["layers_check"]["error"] and row["worst"] is None
        assert all(unprobed in layer["note"] for layer in row["layers"])
        return
    check = row["layers_check"]
    assert check["error"] is None, check
    assert check["output_sqnr_db"] == pytest.approx(row["sqnr_db"], abs=0.01)  # drift's figure, same images
    assert abs(check["last_sqnr_db"] - check["output_sqnr_db"]) <= 0.5
    sqnr = [layer["sqnr_db"] for layer in row["layers"]]
    cosine = [layer["cosine"] for layer in row["layers"]]
    if precision == "fp32":  # float32 arithmetic in another order: ~120 dB, exact where it is the same
        assert all(value is None or value > 60 for value in sqnr), sqnr
    else:  # 8-bit tensors: 6 dB per bit at best, and never the float tensor itself
        assert all(value is not None and 5 < value < 55 for value in sqnr), sqnr
        assert min(cosine) > 0.9, cosine
    assert row["worst"] == max(row["layers"], key=lambda layer: layer["delta_db"])["layer"]


def _rewrite_manifest_hashes(artifact: Path) -> None:
    """What a user who edited the file by hand would do to make bbdeploy accept it again."""
    manifest_path = artifact.with_name(artifact.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        data = (artifact.parent / entry["path"]).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest_path.write_text(json.dumps(manifest))


BREAKABLE = [name for name in TARGETS if hasattr(target_checks(name), "break_layer")]


def _broken_copy(original: Path, target: str, folder: Path) -> Path:
    """The int8 artifact with BROKEN's scales tripled by hand, its manifest's hashes rewritten."""
    broken = folder / original.name
    for path in original.parent.glob(original.stem + ".*"):
        shutil.copy(path, folder / path.name)
    target_checks(target).break_layer(broken, BROKEN)
    _rewrite_manifest_hashes(broken)
    return broken


def _named_worst(result, images: int) -> tuple[dict, dict]:
    assert result.returncode == 0, result.stderr
    unbroken, edited = json.loads(result.stdout)["results"]
    assert unbroken["worst"] != BROKEN and edited["worst"] == BROKEN, (unbroken["worst"], edited["worst"])
    assert unbroken["layer_samples"] == edited["layer_samples"] == images
    lost = {layer["layer"]: layer["delta_db"] for layer in edited["layers"]}
    assert lost[BROKEN] > 10 and f"the most error enters at {BROKEN}" in result.stderr
    return unbroken, edited


@pytest.mark.parametrize("target", BREAKABLE)
def test_a_layer_broken_by_hand_is_the_worst(target, digits, digits_artifacts, tmp_path):
    original = digits_artifacts[(target, "int8")]
    broken = _broken_copy(original, target, tmp_path)
    result = run_cli("drift", str(original), str(broken), "--data", str(digits / "test"), "--limit", str(IMAGES),
                     "--layers", "--layer-samples", str(IMAGES), "--json")
    _named_worst(result, IMAGES)


@pytest.mark.long(seconds=60)
def test_a_layer_broken_by_hand_is_the_worst_on_the_arm_board(on_board, digits, digits_artifacts, tmp_path):
    """The probed copies run on the emulated Pi 5 (aarch64 runtime kernels), the float side here."""
    target = BREAKABLE[0]
    original = digits_artifacts[(target, "int8")]
    broken = _broken_copy(original, target, tmp_path)
    images = 4
    result = run_cli("drift", str(original), str(broken), "--data", str(digits / "test"), "--limit", str(images),
                     "--layers", "--layer-samples", str(images), "--device", "qemu://pi5", "--json", timeout=600)
    unbroken, edited = _named_worst(result, images)
    for row in (unbroken, edited):
        assert (row["device"]["machine"], row["device"]["emulated"]) == ("aarch64", True), row["device"]
        assert row["layers_check"]["error"] is None, row["layers_check"]
        assert [layer["layer"] for layer in row["layers"]] == MOBILENET_V1_LAYERS
    # the board's values at the host's positions: others would compare unrelated values (~0 dB)
    assert all(layer["sqnr_db"] > 5 for layer in unbroken["layers"]), unbroken["layers"]


def test_sampled_positions_are_distinct_spread_and_the_same_everywhere():
    """The runner and the host pick a tensor's positions apart, from its size alone (integer arithmetic)."""
    assert list(sample_positions(10, 16)) == list(range(10))  # fewer values than positions: all of them
    for size in (4097, 32 * 16 * 16, 1280 * 7 * 7, 2 ** 20):
        positions = sample_positions(size, 4096)
        assert len(set(positions.tolist())) == 4096 and positions.min() >= 0 and positions.max() < size
        quarters = np.histogram(positions, bins=4, range=(0, size))[0]
        assert quarters.min() > 4096 // 4 - 64, quarters  # spread over the whole tensor, not one corner
    assert sample_positions(12345, 100).tolist() == sample_positions(12345, 100).tolist()


def test_the_float_points_follow_batch_norm_and_functional_activations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = F.relu6(self.bn(self.conv(x)))  # batch norm as a module, the activation as a function
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    net.bn.running_mean.uniform_(-1, 1)
    images = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    points, (output,), sources = float_points(net, images, ["conv", "fc"])
    assert sources == {0: ("fc", "output")}  # the logits are the very tensor fc writes
    with torch.no_grad():
        x = torch.from_numpy(images)
        conv_output = F.relu6(net.bn(net.conv(x)))
        np.testing.assert_array_equal(points["conv"][0], images.reshape(2, -1))
        np.testing.assert_array_equal(points["conv"][1], conv_output.reshape(2, -1).numpy())
        np.testing.assert_array_equal(points["fc"][0], conv_output.mean((2, 3)).numpy())
        np.testing.assert_array_equal(output, net(x).numpy())


def test_unnamed_ops_are_matched_by_order_only_when_they_are_exactly_the_layers_left():
    layers = ["a", "b", "c"]
    assert by_order({"a": 1}, [2, 3], layers) == {"a": 1, "b": 2, "c": 3}
    assert by_order({"a": 1}, [2], layers) == {"a": 1}  # one op for two layers: no guess
