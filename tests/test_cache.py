"""The cache never answers with stale work: each thing that shapes an artifact changes its id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bbdeploy import manifest as manifest_module
from bbdeploy.export import ExportOptions, export
from bbdeploy.quantization.options import QuantOptions
from tests.conftest import PLUMBING_MIN_COSINE, TINY, calibrated_checkpoint

MODEL = "mobilenet_v3_small"


def _change_weights(options: ExportOptions, tmp_path: Path, monkeypatch) -> ExportOptions:
    state = torch.load(options.weights, weights_only=True)
    state["classifier.3.bias"] += 0.5  # same file name, other contents
    torch.save(state, options.weights)
    return options


def _change_input_size(options: ExportOptions, tmp_path: Path, monkeypatch) -> ExportOptions:
    options.input_size = TINY + 8
    return options


def _change_calibration_images(options: ExportOptions, tmp_path: Path, monkeypatch) -> ExportOptions:
    first = sorted(Path(options.quant.calib_data).iterdir())[0]
    pixels = np.asarray(Image.open(first)).copy()
    pixels[:8] = 255 - pixels[:8]  # same file name, other pixels
    Image.fromarray(pixels).save(first)
    return options


def _change_code(options: ExportOptions, tmp_path: Path, monkeypatch) -> ExportOptions:
    """An edited backbone module (e.g. after an upgrade): a copy of bbdeploy's code with one edit."""
    roots = {}
    for package, root in manifest_module.code_roots().items():
        roots[package] = shutil.copytree(root, tmp_path / "code" / package, ignore=shutil.ignore_patterns("__pycache__"))
    edited = roots["bbdeploy"] / "backbones" / "mobilenet_v3.py"
    edited.write_text(edited.read_text() + "\n# a changed deploy form\n")
    monkeypatch.setattr(manifest_module, "code_roots", lambda: roots)
    return options


def _damage_the_artifact(options: ExportOptions, tmp_path: Path, monkeypatch) -> ExportOptions:
    (artifact,) = Path(options.output).glob("*.onnx")
    with open(artifact, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\xff")
    return options


@pytest.mark.parametrize("change", [_change_weights, _change_input_size, _change_calibration_images, _change_code,
                                    _damage_the_artifact], ids=lambda change: change.__name__.strip("_"))
def test_a_change_gives_a_fresh_export(change, photos, tmp_path, monkeypatch):
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in list(photos)[:4]:
        Image.fromarray(photos[name]).save(calib / f"{name}.png")
    int8 = change is _change_calibration_images
    options = ExportOptions(MODEL, targets="onnx", weights=str(calibrated_checkpoint(MODEL, photos, tmp_path)),
                            input_size=TINY, output=tmp_path / "out", precision="int8" if int8 else "fp32",
                            quant=QuantOptions(calib_data=str(calib), calib_size=4), min_cosine=PLUMBING_MIN_COSINE)
    first = export(options)[0]
    assert first["status"] == "exported", first["error"]
    assert export(options)[0]["status"] == "cached"
    again = export(change(options, tmp_path, monkeypatch))[0]
    assert again["status"] == "exported", again["error"]
    assert export(options)[0]["status"] == "cached"  # and the fresh one is cached in turn
