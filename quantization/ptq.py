"""Post-training int8 quantization for any target, over one backend-agnostic calibration source.

bbdeploy's own steps come first and are the same for every target: batch norm folded, weights put on
the target's grid by GPTQ (or rounded to nearest with bias correction). Then the target's quantizer
(the module its record names) calibrates activations and writes the artifact. Every quantizer has one
signature, shaped like `nncf.quantize`:

    quantize(model, calibration, *, subset_size, sample, out_path, layout, method, io, keep_float,
             bias_correction) -> dict of settings for the manifest

with `calibration` a re-iterable of float32 NCHW arrays of the artifact's batch size (`CalibrationData`).
A quantizer that works on its own float file (ONNX, OpenVINO) exports it first, next to `out_path`.

The targets of one export share `SharedWork`: the calibration images decoded once, the float model's
measurements, and one rounded model per grid (ONNX's 7-bit grid, NNCF's, the 8-bit one of MNN).
With QAT (`qat.py`) each target's model is that PTQ model fine-tuned through the target's fake
quantization, once per grid (activation scheme included) and start; the quantizer then gets it as it gets GPTQ's.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from bbdeploy.errors import BBDeployError
from bbdeploy.exporters.registry import Target, quantizer as quantizer_module
from bbdeploy.progress import Progress, Step

from .bias_correction import LAYERS, correct_biases, fold_batchnorm
from .calibration import CalibrationSet
from .fake_quant import Grid
from .options import QuantOptions
from .rounding import FloatMeasurements, measure_float, round_onto_grid

BATCH = 16  # images per forward pass of bbdeploy's own calibration passes


class CalibrationData:
    """The calibration inputs a quantizer gets: iterable more than once (NNCF and MNN walk them
    several times), `len()` batches, each a float32 NCHW array of the artifact's batch size."""

    def __init__(self, batches: Callable[[], Iterator[np.ndarray]], count: int, step: Step = Step()):
        self._batches, self._count, self._step = batches, count, step

    def __iter__(self) -> Iterator[np.ndarray]:
        self._step.restart()
        for batch in self._batches():
            yield batch
            self._step.advance()

    def __len__(self) -> int:
        return self._count


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


class SharedWork:
    """The int8 work that the targets of one export share, each piece done when a target first
    needs it: the calibration images decoded (and kept, see `CalibrationSet.load`), the float
    model's GPTQ measurements, and the model on each grid, rounded once per grid and setting."""

    def __init__(self, model: torch.nn.Module, calibration: CalibrationSet, keep_float: tuple[str, ...],
                 progress: Progress = Progress(), qat=None):
        self.model, self.calibration, self.progress = model, calibration, progress
        self.keep_float = float_layers(model, keep_float)
        self.qat = qat  # a qat.QATRun, or None for post-training quantization alone
        self._measured: FloatMeasurements | None = None
        self._models: dict[tuple, torch.nn.Module] = {}
        self._trained: dict[tuple, tuple[torch.nn.Module, dict]] = {}
        self.seconds = 0.0  # spent on the shared work so far

    def batches(self) -> Iterator[np.ndarray]:
        """The calibration images, BATCH at a time (decoded on the first call)."""
        if not self.calibration.in_memory:
            with self._timed(), self.progress.step(f"decoding {len(self.calibration)} calibration images",
                                                   len(self.calibration)) as step:
                self.calibration.load(step.advance)
        return self.calibration.batches(BATCH)

    def model_for(self, rounding: str, levels: float, correct_biases_here: bool) -> torch.nn.Module:
        """A private copy of the BN-folded model with weights ready for a toolchain that rounds to
        nearest on a `levels` grid: GPTQ-rounded onto it, or bias-corrected for it, or as they are."""
        key = (rounding, levels if rounding == "gptq" or correct_biases_here else None, correct_biases_here)
        if key not in self._models:
            self.batches()  # decoded before any timed step below
            with self._timed():
                self._models[key] = self._prepare(rounding, levels, correct_biases_here)
        return copy.deepcopy(self._models[key])

    def trained_model_for(self, rounding: str, grid: Grid, correct_biases_here: bool) -> tuple[torch.nn.Module, dict]:
        """A private copy of the model QAT trained for `grid`, starting from the PTQ model of the same
        grid and setting, and the record of that training (trained once per grid and start: TFLite and
        ExecuTorch share a grid, but start from nearest and from GPTQ weights)."""
        key = (grid, rounding, correct_biases_here)
        if key not in self._trained:
            start = self.model_for(rounding, grid.weight_levels, correct_biases_here)
            start_from = rounding + (" + bias correction" if correct_biases_here else "")
            with self._timed():
                self._trained[key] = self.qat.train(fold_batchnorm(self.model), grid, start=start, start_from=start_from)
        model, record = self._trained[key]
        return copy.deepcopy(model), record

    @contextlib.contextmanager
    def _timed(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    def _prepare(self, rounding: str, levels: float, correct_biases_here: bool) -> torch.nn.Module:
        # every toolchain rounds weights to nearest on a per-channel grid of `levels` steps (its record's
        # int8.weight_levels); GPTQ puts them on that grid first, minimising each layer's output error instead (the default)
        if rounding == "gptq":
            measured = self._float_measurements()
            with self.progress.step(f"GPTQ rounding onto the {levels:g}-level grid", len(measured.layers)) as step:
                return round_onto_grid(measured, levels, on_layer=lambda _name: step.advance())
        if correct_biases_here:
            return correct_biases(self.model, (), levels=levels, skip=self.keep_float,
                                  means=self._float_measurements().input_means)
        return fold_batchnorm(self.model)  # batch norm folded here, so that every converter names each layer after its module

    def _float_measurements(self) -> FloatMeasurements:
        if self._measured is None:
            with self.progress.step("measuring the float model's layer inputs", None) as step:
                self._measured = measure_float(self.model, lambda: _counted(self.batches(), step), self.keep_float)
        return self._measured


def _counted(batches: Iterator[np.ndarray], step: Step) -> Iterator[np.ndarray]:
    for batch in batches:
        yield batch
        step.advance()


def quantize(target: Target, work: SharedWork, sample: torch.Tensor, out_path: Path, options: QuantOptions,
             *, layout: str) -> dict:
    """Write the int8 artifact of `target` at `out_path`; returns the settings for the manifest."""
    quantizer = quantizer_module(target)
    method, rounding, io = target_choices(target, options)
    bias_correction, correct_here = _bias_correction(target, options, rounding)
    training = None
    if work.qat is not None:  # the trained weights sit on the grid already: no correction on top
        model, training = work.trained_model_for(rounding, target_grid(target), correct_here)
        bias_correction = False
    else:
        model = work.model_for(rounding, target.int8.weight_levels, correct_here)
    batch = sample.shape[0]
    with work.progress.step(f"{target.name}: calibrating activations and converting",
                            max(1, len(work.calibration) // batch)) as step:
        data = CalibrationData(lambda: calibration_inputs(work.calibration, batch),
                               max(1, len(work.calibration) // batch), step)
        settings = quantizer.quantize(model, data, subset_size=len(data), sample=sample, out_path=out_path,
                                      layout=layout, method=method, io=io, keep_float=work.keep_float,
                                      bias_correction=bias_correction)
    return {"bias_correction": bias_correction, **settings, "calib_method": method,
            "weight_rounding": f"qat (from {rounding})" if training else rounding, "keep_float": work.keep_float,
            "qat": training}


def train_ahead(target: Target, work: SharedWork, options: QuantOptions) -> None:
    """Run `target`'s QAT now (under torchrun every process trains; only the first one goes on to
    quantize and convert)."""
    _, rounding, _ = target_choices(target, options)
    work.trained_model_for(rounding, target_grid(target), _bias_correction(target, options, rounding)[1])


def _bias_correction(target: Target, options: QuantOptions, rounding: str) -> tuple[bool, bool]:
    """(bias correction on, done by bbdeploy rather than the toolchain) for `rounding` on `target`."""
    # GPTQ's weights already carry no mean output error; correcting biases on top of them measured
    # worse (OpenVINO, Lite0: 0.893 agreement with NNCF's correction, 0.920 without)
    corrected = options.bias_correction and rounding == "nearest"
    return corrected, corrected and not target.int8.own_bias_correction


def target_grid(target: Target) -> Grid:
    """The weight grid and activation scheme of `target`'s int8 model, which QAT trains through."""
    return Grid(target.int8.weight_levels, target.int8.activations)


def target_choices(target: Target, options: QuantOptions) -> tuple[str, str, str]:
    """(calibration method, weight rounding, I/O type) for `target`: the user's, or the target's defaults
    (with --keep-float, the first method whose quantizer can leave layers in float)."""
    methods = target.calib_methods
    if options.keep_float and target.keep_float_methods is not None:
        methods = target.keep_float_methods
        if options.calib_method and options.calib_method not in methods:
            raise BBDeployError(f"--keep-float needs --calib-method {' or '.join(methods)} on {target.name} (its "
                                f"{options.calib_method} quantizer quantizes every layer); pass one of them")
    return (_choice("--calib-method", options.calib_method, methods, target.name),
            _choice("--weight-rounding", options.weight_rounding, target.weight_roundings, target.name),
            _choice("--io", options.io, target.io_types, target.name))


def _choice(flag: str, requested: str | None, available: tuple[str, ...], target_name: str) -> str:
    """`requested`, or the target's default (the first of `available`), if the target has it."""
    chosen = requested or available[0]
    if chosen not in available:
        raise BBDeployError(f"{flag} {chosen} is not available for {target_name}; pass one of {', '.join(available)}")
    return chosen
