"""Error-compensating weight rounding (GPTQ, Frantar et al. 2022) onto each toolchain's int8 grid.

Rounding each weight to its nearest grid point ignores that the errors of one output channel add
up over correlated inputs. GPTQ rounds the inputs of a layer one at a time and pushes each
rounding error onto the weights not yet rounded, weighted by the input correlations measured on the
calibration images (H = X X^T), which minimises the layer's output error rather than its weights'.

The result is a float model whose weights already lie on the grid the toolchain will use
(per output channel, symmetric, scale = max|w| / levels): the toolchain re-derives the same scale
from the pinned extreme weight of each channel and reproduces these integers exactly (onnxruntime,
PT2E; NNCF's grid puts the extreme weight itself half-way between two levels).
"""

from __future__ import annotations

import copy
import math
import queue
import threading
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bias_correction import fold_batchnorm, forward_with_hooks

DAMPING = 0.01  # fraction of the mean diagonal added to H, as in GPTQ
# A layer seen in fewer input columns than this many times its inputs per output (e.g. a classifier
# on a few hundred images) has a rank-deficient H: GPTQ would fit the calibration images and
# drift elsewhere (MobileNetV3-Small on 8 images: cosine 0.16), so it is rounded to nearest.
MIN_COLUMNS_PER_INPUT = 4
GPTQ_BLOCK = 64  # columns rounded per block
IMAGES_PER_CHUNK = 4  # images unfolded at a time: bounds the memory of 3x3 windows at 112 px
# Images the error-aware pass runs through (one batch, once per model): Lite0 at 224 px,
# weights only, logit SQNR 21.6 dB plain GPTQ -> 28.1 dB with 32 images, 29.4 dB with 100.
ERROR_AWARE_IMAGES = 32


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as float32 columns: (k, M) with k inputs per output, or (C, kk, M) per
    channel for depthwise; M = samples x positions."""
    x = x.float()
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T
    if hasattr(layer, "pad_input"):  # convolutions that pad in their forward (TF "same")
        x = layer.pad_input(x)
    if layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.padding in ((0, 0), "valid"):
        cols = x.flatten(2)
    else:
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    n, k, positions = cols.shape
    if _is_depthwise(layer):
        return cols.view(n, layer.in_channels, -1, positions).permute(1, 2, 0, 3).reshape(
            layer.in_channels, k // layer.in_channels, n * positions)
    return cols.transpose(0, 1).reshape(k, n * positions)


def _correlate(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of a b^T over the layer's input columns, in float64; how many columns), where `a` and
    `b` are two inputs of the layer for the same images. Computed a few images at a time, so that
    3x3 windows at high resolution do not take gigabytes."""
    total, columns = 0, 0
    for start in range(0, a.shape[0], IMAGES_PER_CHUNK):
        left = _columns(layer, a[start:start + IMAGES_PER_CHUNK])
        right = left if b is a else _columns(layer, b[start:start + IMAGES_PER_CHUNK])
        total = total + (left @ right.transpose(-1, -2)).double()
        columns += left.shape[-1]
    return total, columns


def input_correlations(model: nn.Module, batches: Iterable[np.ndarray], layers: dict[str, nn.Module]
                       ) -> dict[str, tuple[torch.Tensor, int]]:
    """(H, columns): H = sum of x x^T over every input column of each layer, (k, k) or (C, kk, kk)
    for depthwise; columns = how many input columns (samples x positions) it saw. Layers come in
    the order they run."""
    sums: dict[str, tuple[torch.Tensor, int]] = {}

    def recorder(name, layer):
        def hook(_module, inputs, _output):
            h, columns = _correlate(layer, inputs[0], inputs[0])
            total, seen = sums.get(name, (0, 0))
            sums[name] = (total + h, seen + columns)
        return hook

    forward_with_hooks(model, batches, [layer.register_forward_hook(recorder(name, layer))
                                        for name, layer in layers.items()])
    return sums


def gptq_round(weight: torch.Tensor, hessian: torch.Tensor, levels: float) -> torch.Tensor:
    """`weight` (outputs, k) rounded column by column with error feedback; `hessian` (k, k) shared
    by all outputs or (outputs, k, k) one per output. Each output's extreme weight is pinned to
    +-levels so that its scale stays max|w| / levels; the others take integer steps within it."""
    limit = math.floor(levels)
    w = weight.double().clone()
    scale = (w.abs().amax(dim=1, keepdim=True) / levels).clamp(min=1e-12)
    pinned = torch.zeros_like(w, dtype=torch.bool)
    pinned[torch.arange(w.shape[0]), w.abs().argmax(dim=1)] = True
    pinned_value = torch.sign(w) * levels * scale

    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(_damped(hessian))), upper=True)
    # columns are rounded in blocks: within a block the error feedback goes column by column, to the
    # columns after the block in one product (GPTQ's lazy batch update; same result, far fewer passes)
    for start in range(0, w.shape[1], GPTQ_BLOCK):
        end = min(start + GPTQ_BLOCK, w.shape[1])
        block, errors = w[:, start:end].clone(), torch.zeros_like(w[:, start:end])
        for offset, column in enumerate(range(start, end)):
            values = block[:, offset]
            q = torch.where(pinned[:, column], pinned_value[:, column],
                            torch.clamp(torch.round(values / scale[:, 0]), -limit, limit) * scale[:, 0])
            errors[:, offset] = (values - q) / upper[:, column, column]
            block[:, offset] = q
            block[:, offset + 1:] -= errors[:, offset].unsqueeze(1) * upper[:, column, column + 1:end]
        w[:, start:end] = block
        if end < w.shape[1]:
            if upper.shape[0] == 1:
                w[:, end:] -= errors @ upper[0, start:end, end:]
            else:
                w[:, end:] -= torch.einsum("ob,obr->or", errors, upper[:, start:end, end:])
    return w.to(weight.dtype)


def _damped(hessian: torch.Tensor) -> torch.Tensor:
    h = hessian.double().clone()
    h = h if h.dim() == 3 else h.unsqueeze(0)
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    diag[diag == 0] = 1.0  # inputs that are always zero: rounded to nearest (their error costs nothing)
    diag += DAMPING * diag.mean(dim=-1, keepdim=True)
    return h


def roundable_layers(model: nn.Module, skip: Iterable[str] = ()) -> dict[str, nn.Module]:
    """The conv (plain or depthwise) and linear layers GPTQ rounds, by module name."""
    skip = set(skip)
    return {name: layer for name, layer in model.named_modules()
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and name not in skip
            and (not isinstance(layer, nn.Conv2d) or layer.groups == 1 or _is_depthwise(layer))}


class _Lockstep:
    """`model` run on `batch` in a thread of its own that pauses before each layer of `names` (in
    execution order) and hands that layer's input over: a forward pass that another loop can step
    through layer by layer, changing the weights of a layer before the pass goes through it.

    This keeps the error-aware pass linear in depth: one forward pass of each model in all, where
    stopping each pass at the layer and starting again from the input was quadratic."""

    _DONE = object()

    def __init__(self, model: nn.Module, batch: torch.Tensor, names: list[str]):
        self.handed: queue.Queue = queue.Queue(maxsize=1)
        self.resume = threading.Semaphore(0)
        self.aborted = False
        self.hooks = [model.get_submodule(name).register_forward_pre_hook(self._pause(name)) for name in names]
        self.thread = threading.Thread(target=self._run, args=(model, batch), daemon=True)
        self.thread.start()

    def _pause(self, name: str):
        def hook(_module, inputs):
            self.handed.put((name, inputs[0]))
            self.resume.acquire()
            if self.aborted:
                raise _Aborted
        return hook

    def _run(self, model: nn.Module, batch: torch.Tensor) -> None:
        try:
            with torch.no_grad():  # grad mode is per thread
                model(batch)
            self.handed.put((self._DONE, None))
        except _Aborted:
            pass
        except BaseException as exc:  # handed over, raised in the stepping thread
            self.handed.put((self._DONE, exc))

    def input_of(self, name: str) -> torch.Tensor:
        """The input of layer `name`, once the pass has reached it."""
        reached, value = self.handed.get()
        if reached is self._DONE:
            raise RuntimeError(f"the forward pass ended before layer {name}") from value
        if reached != name:
            raise RuntimeError(f"the forward pass reached layer {reached} where {name} was expected")
        return value

    def advance(self) -> None:
        """Let the pass go through the layer it waits at, up to the next one."""
        self.resume.release()

    def close(self) -> None:
        self.aborted = True
        self.resume.release()
        self.thread.join()
        for hook in self.hooks:
            hook.remove()


class _Aborted(Exception):
    """Ends a stepped forward pass early."""


def gptq_rounded(model: nn.Module, batches: Callable[[], Iterable[np.ndarray]], levels: float,
                 skip: Iterable[str] = (), error_aware: bool = True) -> nn.Module:
    """A BN-folded copy of `model` whose conv/linear weights sit on the `levels` grid, GPTQ-rounded
    (layers in `skip` stay as they are, e.g. those kept in float). `batches()` yields the
    calibration inputs, once per pass.

    With `error_aware`, layers are rounded one after the other in execution order, each for the
    inputs x~ it really gets once the layers before it are rounded: it minimises |W x - Q x~|
    instead of |W x - Q x|, so each layer also absorbs its predecessors' error (the asymmetric
    calibration of GPTAQ, Li et al. 2025): the target W + W (C - H~) H~^-1 rounded with H~.
    Rounding several layers on one measurement of x~ double-counts: a later layer corrects an
    error that an earlier one has corrected already (Lite0 cosine 0.80 that way). The float and the
    rounding model each run once over the first ERROR_AWARE_IMAGES images, stepped layer by layer.
    """
    folded = fold_batchnorm(model)
    layers = roundable_layers(folded, skip)
    result = copy.deepcopy(folded)
    result_layers = roundable_layers(result, skip)
    hessians = input_correlations(folded, batches(), layers)  # dict order: execution order
    steps: list[_Lockstep] = []
    try:
        if error_aware:
            batch = torch.from_numpy(np.concatenate(list(_first_images(batches(), ERROR_AWARE_IMAGES))))
            steps = [_Lockstep(m, batch, list(hessians)) for m in (folded, result)]
        with torch.no_grad():
            for name, (hessian, columns) in hessians.items():
                weight = layers[name].weight
                flat = weight.reshape(weight.shape[0], -1).double()
                if steps:
                    exact, shifted_input = (step.input_of(name) for step in steps)
                    if columns >= MIN_COLUMNS_PER_INPUT * flat.shape[1]:
                        shifted, seen = _correlate(layers[name], shifted_input, shifted_input)
                        cross, _ = _correlate(layers[name], exact, shifted_input)
                        if seen >= MIN_COLUMNS_PER_INPUT * flat.shape[1]:
                            flat = flat + _error_correction(flat, shifted, cross)
                            hessian, columns = shifted, seen
                target = flat.reshape(weight.shape).to(weight.dtype)
                result_layers[name].weight.copy_(rounded_weight(target, hessian, columns, levels))
                for step in steps:  # the rounding model goes on through the rounded layer
                    step.advance()
    finally:
        for step in steps:
            step.close()
    return result


def _error_correction(weight: torch.Tensor, shifted: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """W (C - H~) H~^-1: what to add to `weight` (outputs, k) so that it maps the inputs it gets
    (correlations H~) to what the float layer computes (cross-correlations C). One system per
    output channel for depthwise layers, one shared otherwise."""
    solved = torch.linalg.solve(_damped(shifted), (cross - shifted).double().transpose(-1, -2))
    if solved.shape[0] == 1:
        return weight @ solved[0].T
    return torch.einsum("ci,cji->cj", weight, solved)


def _first_images(batches: Iterable[np.ndarray], count: int) -> Iterable[np.ndarray]:
    """The first `count` images of `batches` (the last batch cut short)."""
    for batch in batches:
        if count <= 0:
            return
        yield batch[:count]
        count -= len(batch)


def rounded_weight(weight: torch.Tensor, hessian: torch.Tensor | None, columns: int, levels: float) -> torch.Tensor:
    """`weight` on the `levels` grid: GPTQ-rounded with `hessian` when the layer was seen in enough
    input columns, to nearest otherwise (identity H: same grid, same pinned extremes)."""
    flat = weight.reshape(weight.shape[0], -1)
    if hessian is None or columns < MIN_COLUMNS_PER_INPUT * flat.shape[1]:
        hessian = torch.eye(flat.shape[1])
    return gptq_round(flat, hessian, levels).reshape(weight.shape)
