"""Post-training int8 quantization per target, over one backend-agnostic calibration source.

ONNX and OpenVINO quantize their own fp32 artifact (exported first into the same staging folder);
TFLite quantizes the PyTorch graph with PT2E and converts it. All three see the same calibration
inputs, regrouped to the artifact's static batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from bbdeploy.errors import BBDeployError

from .bias_correction import LAYERS, correct_biases, fold_batchnorm
from .calibration import CalibrationSet
from .options import QuantOptions
from .rounding import gptq_rounded


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


def quantizer_module(target_name: str) -> ModuleType:
    """The module that quantizes for `target_name` (`bbdeploy.quantization.<target>`)."""
    return import_module(f"bbdeploy.quantization.{target_name}")


def float_layers(model: torch.nn.Module, names: tuple[str, ...]) -> list[str]:
    """The conv/linear layers that `--keep-float` names (a layer, or a block: all layers in it).

    Names are module paths of the converted model, as `bbdeploy drift --layers` reports them.
    """
    layers = [name for name, module in model.named_modules() if isinstance(module, LAYERS)]
    chosen = []
    for name in names:
        inside = [layer for layer in layers if layer == name or layer.startswith(name + ".")]
        if not name or not inside:
            raise BBDeployError(f"--keep-float {name!r} is not a layer or block of this model; pass module names "
                                f"such as {', '.join(layers)}")
        chosen += [layer for layer in inside if layer not in chosen]
    return chosen


def quantize(target_name: str, exporter: ModuleType, model: torch.nn.Module, sample: torch.Tensor,
             out_path: Path, calibration: CalibrationSet, options: QuantOptions, *, layout: str) -> dict:
    """Write the int8 artifact of `target_name` at `out_path`; returns the settings for the manifest.

    `exporter` is the target's fp32 exporter module, used where quantization works on the fp32 file.
    """
    batch = sample.shape[0]
    quantizer = quantizer_module(target_name)
    method, rounding = target_choices(target_name, options)
    keep_float = float_layers(model, options.keep_float)
    # GPTQ's weights already carry no mean output error; correcting biases on top of them measured
    # worse (OpenVINO, Lite0: 0.893 agreement with NNCF's correction, 0.920 without)
    bias_correction = options.bias_correction and rounding == "nearest"
    # batch norm folded here, so that every converter names each layer after its module
    model = fold_batchnorm(model)
    # every toolchain rounds weights to nearest on a per-channel grid of WEIGHT_LEVELS steps; GPTQ
    # puts them on that grid first, minimising each layer's output error instead (the default)
    if rounding == "gptq":
        model = gptq_rounded(model, lambda: calibration.batches(16), levels=quantizer.WEIGHT_LEVELS, skip=keep_float)
    elif bias_correction and not quantizer.OWN_BIAS_CORRECTION:
        model = correct_biases(model, calibration.batches(16), levels=quantizer.WEIGHT_LEVELS, skip=keep_float)
    if target_name == "tflite":
        settings = quantizer.quantize(model, sample, out_path, calibration_inputs(calibration, batch),
                                      layout=layout, method=method, io=options.io, keep_float=keep_float)
    else:
        fp32_path = out_path.with_name(f"float_{out_path.name}")
        exporter.convert(model, sample, fp32_path, precision="fp32", layout=layout)
        if target_name == "onnx":
            settings = quantizer.quantize(fp32_path, out_path, calibration_inputs(calibration, batch),
                                          method=method, keep_float=keep_float)
        else:
            settings = quantizer.quantize(fp32_path, out_path, lambda: calibration_inputs(calibration, batch),
                                          max(1, len(calibration) // batch), method=method,
                                          bias_correction=bias_correction, keep_float=keep_float)
    return {"bias_correction": bias_correction, **settings, "calib_method": method, "weight_rounding": rounding,
            "keep_float": keep_float}


def target_choices(target_name: str, options: QuantOptions) -> tuple[str, str]:
    """(calibration method, weight rounding) for `target_name`: the user's, or the target's defaults."""
    quantizer = quantizer_module(target_name)
    return (_choice("--calib-method", options.calib_method, quantizer.METHODS, target_name),
            _choice("--weight-rounding", options.weight_rounding, quantizer.ROUNDINGS, target_name))


def _choice(flag: str, requested: str | None, available: tuple[str, ...], target_name: str) -> str:
    """`requested`, or the target's default (the first of `available`), if the target has it."""
    chosen = requested or available[0]
    if chosen not in available:
        raise BBDeployError(f"{flag} {chosen} is not available for {target_name}; pass one of {', '.join(available)}")
    return chosen
