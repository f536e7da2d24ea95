"""Post-training int8 quantization per target, over one backend-agnostic calibration source.

ONNX and OpenVINO quantize their own fp32 artifact (exported first into the same staging folder);
TFLite quantizes the PyTorch graph with PT2E and converts it. All three see the same calibration
inputs, regrouped to the artifact's static batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from .calibration import CalibrationSet
from .options import QuantOptions


def calibration_inputs(calibration: CalibrationSet, batch: int) -> Iterator[np.ndarray]:
    """float32 NCHW arrays of exactly `batch` samples (a final partial group is dropped, unless it is
    the only one, then it is padded by repeating its last sample)."""
    pending: list[np.ndarray] = []
    produced = False
    for chunk in calibration.batches(16):
        pending.extend(chunk)
        while len(pending) >= batch:
            yield np.stack(pending[:batch])
            pending, produced = pending[batch:], True
    if pending and not produced:
        yield np.stack(pending + [pending[-1]] * (batch - len(pending)))


def quantize(target_name: str, model: torch.nn.Module, sample: torch.Tensor, out_path: Path,
             calibration: CalibrationSet, options: QuantOptions, *, layout: str) -> dict:
    """Write the int8 artifact of `target_name` at `out_path`; returns the settings for the manifest."""
    batch = sample.shape[0]
    count = max(1, len(calibration) // batch)
    if target_name == "tflite":
        from . import tflite

        return tflite.quantize(model, sample, out_path, calibration_inputs(calibration, batch), layout=layout,
                               method=options.calib_method)
    exporter = import_module(f"bbdeploy.exporters.{target_name}")
    fp32_path = out_path.with_name(f"float_{out_path.name}")
    exporter.convert(model, sample, fp32_path, precision="fp32", layout=layout)
    if target_name == "onnx":
        from . import onnx

        return onnx.quantize(fp32_path, out_path, calibration_inputs(calibration, batch),
                             method=options.calib_method)
    from . import openvino

    return openvino.quantize(fp32_path, out_path, lambda: calibration_inputs(calibration, batch), count,
                             method=options.calib_method)
