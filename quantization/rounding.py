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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bias_correction import InputMeans, fold_batchnorm, forward_with_hooks

DAMPING = 0.01  # fraction of the mean diagonal added to H, as in GPTQ
# A layer seen in fewer input columns than this many times its inputs per output (e.g. a classifier
# on a few hundred images) has a rank-deficient H: GPTQ would fit the calibration images and
# drift elsewhere (MobileNetV3-Small on 8 images: cosine 0.16), so it is rounded to nearest.
MIN_COLUMNS_PER_INPUT = 4
GPTQ_BLOCK = 64  # columns rounded per block
IMAGES_PER_CHUNK = 4  # images windowed at a time: bounds the memory of 3x3 windows at 112 px
# Images the error-aware pass runs through (one batch, once per model): Lite0 at 224 px,
# weights only, logit SQNR 21.6 dB plain GPTQ -> 28.1 dB with 32 images, 29.4 dB with 100.
ERROR_AWARE_IMAGES = 32


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def _columns(layer: nn.Module, x: torch.Tensor, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's input as float32 columns: (k, M) with k inputs per output, or (C, kk, M) per
    channel for depthwise; M = samples x positions.

    Where the columns are a copy, it goes into `buffer` when that has the right size (the caller
    keeps it across chunks): a fresh buffer of this size costs more in page faults than the copy
    itself (Lite0, depthwise correlations on 32 images: 6.3 s with F.unfold and a permuted copy,
    1.5 s this way). The layout, and so every float32 sum, is the one F.unfold gave."""
    x = x.float()
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T
    if hasattr(layer, "pad_input"):  # convolutions that pad in their forward (TF "same")
        x = layer.pad_input(x)
    if _is_depthwise(layer):
        return _depthwise_windows(layer, x, buffer)
    if layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.padding in ((0, 0), "valid"):
        n, channels = x.shape[:2]
        return _reused(buffer, (channels, n, x[0, 0].numel())).copy_(x.flatten(2).transpose(0, 1)).view(channels, -1)
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return cols.transpose(0, 1).reshape(cols.shape[1], -1)


def _reused(buffer: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    return buffer.view(shape) if buffer is not None and buffer.numel() == math.prod(shape) else torch.empty(shape)


def _depthwise_windows(layer: nn.Conv2d, x: torch.Tensor, buffer: torch.Tensor | None) -> torch.Tensor:
    """(C, kh*kw, n * P): each channel's kh x kw windows, one strided copy per kernel tap."""
    (pad_h, pad_w), (kh, kw), (sh, sw), (dh, dw) = layer.padding, layer.kernel_size, layer.stride, layer.dilation
    if pad_h or pad_w:
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    n, channels, height, width = x.shape
    out_h, out_w = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
    windows = _reused(buffer, (channels, kh * kw, n, out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            windows[:, i * kw + j].copy_(x[:, :, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
                                           j * dw:j * dw + sw * (out_w - 1) + 1:sw].transpose(0, 1))
    return windows.view(channels, kh * kw, n * out_h * out_w)


def _correlate(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of a b^T over the layer's input columns, in float64; how many columns), where `a` and
    `b` are two inputs of the layer for the same images: (k, k), or (C, kk, kk) for depthwise."""
    (total,), columns = _correlations(layer, b, [a])
    return total, columns


def _correlations(layer: nn.Module, right: torch.Tensor, lefts: list[torch.Tensor]
                  ) -> tuple[list[torch.Tensor], int]:
    """[sum of l r^T for each l in `lefts`] over the layer's input columns, and how many columns.

    Summed in float32 a few images at a time (3x3 windows at high resolution would take gigabytes
    at once), accumulated in float64. A left that is `right` itself is not windowed twice."""
    totals: list = [0] * len(lefts)
    buffers: dict[int, torch.Tensor] = {}
    columns = 0
    for start in range(0, right.shape[0], IMAGES_PER_CHUNK):
        chunk = slice(start, start + IMAGES_PER_CHUNK)
        r = buffers[-1] = _columns(layer, right[chunk], buffers.get(-1))
        for index, left in enumerate(lefts):
            l = r if left is right else _columns(layer, left[chunk], buffers.get(index))
            buffers[index] = l
            totals[index] = totals[index] + (l @ r.transpose(-1, -2)).double()
        columns += r.shape[-1]
    return totals, columns


def input_correlations(model: nn.Module, batches: Iterable[np.ndarray], layers: dict[str, nn.Module],
                       other_hooks: list = ()) -> dict[str, tuple[torch.Tensor, int]]:
    """(H, columns): H = sum of x x^T over every input column of each layer, (k, k) or (C, kk, kk)
    for depthwise; columns = how many input columns (samples x positions) it saw. Layers come in
    the order they run. `other_hooks` record something else in the same pass (removed after it)."""
    sums: dict[str, tuple[torch.Tensor, int]] = {}

    def recorder(name, layer):
        def hook(_module, inputs, _output):
            h, columns = _correlate(layer, inputs[0], inputs[0])
            total, seen = sums.get(name, (0, 0))
            sums[name] = (total + h, seen + columns)
        return hook

    forward_with_hooks(model, batches, [layer.register_forward_hook(recorder(name, layer))
                                        for name, layer in layers.items()] + list(other_hooks))
    return sums


def columns_per_image(model: nn.Module, image: np.ndarray, layers: dict[str, nn.Module]) -> dict[str, int]:
    """How many input columns one image gives each layer, in the order the layers run (one pass on
    one image)."""
    counts: dict[str, int] = {}

    def recorder(name, layer):
        def hook(_module, inputs, _output):
            counts.setdefault(name, _columns(layer, inputs[0][:1]).shape[-1])
        return hook

    forward_with_hooks(model, [image[None]], [layer.register_forward_hook(recorder(name, layer))
                                               for name, layer in layers.items()])
    return counts


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


@dataclass
class FloatMeasurements:
    """What GPTQ measures on the float model, the same for every grid: made once per export and
    shared by the targets whose grids differ (see `round_onto_grid`)."""

    folded: nn.Module  # batch norm folded
    layers: dict[str, nn.Module]  # the layers to round, of `folded`
    columns_per_image: dict[str, int]  # in execution order
    images: np.ndarray  # what the error-aware pass runs on
    remeasured: set[str]  # layers the error-aware pass measures again on `images`
    hessians: dict[str, tuple[torch.Tensor, int]]  # (H, columns) on all images, for the other layers
    skip: tuple[str, ...]
    input_means: dict[str, torch.Tensor]  # of every conv/linear layer, on all images (for bias correction)


def measure_float(model: nn.Module, batches: Callable[[], Iterable[np.ndarray]], skip: Iterable[str] = (),
                  error_aware: bool = True) -> FloatMeasurements:
    """Fold batch norm, find the execution order, and measure H on all calibration images for the
    layers that need it (all of them without `error_aware`), and every layer's input means in the
    same pass (bias correction needs them, and the forward pass is most of the cost). `batches()`
    yields the calibration inputs, once per pass."""
    skip = tuple(skip)
    folded = fold_batchnorm(model)
    layers = roundable_layers(folded, skip)
    images = np.concatenate(list(_first_images(batches(), ERROR_AWARE_IMAGES if error_aware else 1)))
    per_image = columns_per_image(folded, images[0], layers)
    remeasured = {name for name, count in per_image.items()
                  if error_aware and len(images) * count >= MIN_COLUMNS_PER_INPUT * _inputs_per_output(layers[name])}
    means = InputMeans(folded)
    hessians = input_correlations(folded, batches(), {name: layers[name] for name in per_image if name not in remeasured},
                                  other_hooks=means.hooks)
    return FloatMeasurements(folded, layers, per_image, images if error_aware else images[:0], remeasured, hessians,
                             skip, means.result())


def gptq_rounded(model: nn.Module, batches: Callable[[], Iterable[np.ndarray]], levels: float,
                 skip: Iterable[str] = (), error_aware: bool = True) -> nn.Module:
    """A BN-folded copy of `model` whose conv/linear weights sit on the `levels` grid, GPTQ-rounded
    (layers in `skip` stay as they are, e.g. those kept in float); see `round_onto_grid`."""
    return round_onto_grid(measure_float(model, batches, skip, error_aware), levels)


def round_onto_grid(measured: FloatMeasurements, levels: float,
                    on_layer: Callable[[str], None] = lambda _name: None) -> nn.Module:
    """A copy of the measured (folded) model with its layers GPTQ-rounded onto the `levels` grid;
    `on_layer(name)` is called as each layer is done.

    With error-aware measurements (`measured.images` not empty), layers are rounded one after the
    other in execution order, each for the inputs x~ it really gets once the layers before it are
    rounded: it minimises |W x - Q x~| instead of |W x - Q x|, so each layer also absorbs its
    predecessors' error (the asymmetric calibration of GPTAQ, Li et al. 2025): the target
    W + W (C - H~) H~^-1 rounded with H~. Rounding several layers on one measurement of x~
    double-counts: a later layer corrects an error that an earlier one has corrected already (Lite0
    cosine 0.80 that way). The float and the rounding model each run once over the first
    ERROR_AWARE_IMAGES images, stepped layer by layer. Only the layers those images show too few
    times (late, low-resolution ones) take H from the float model on all calibration images.
    """
    folded, layers = measured.folded, measured.layers
    result = copy.deepcopy(folded)
    result_layers = roundable_layers(result, measured.skip)
    order = list(measured.columns_per_image)
    steps: list[_Lockstep] = []
    try:
        if len(measured.images):
            steps = [_Lockstep(m, torch.from_numpy(measured.images), order) for m in (folded, result)]
        with torch.no_grad():
            for name in order:
                layer = layers[name]
                flat = layer.weight.reshape(layer.weight.shape[0], -1).double()
                inputs = [step.input_of(name) for step in steps]  # float model's, rounding model's
                if name in measured.remeasured:
                    exact, shifted_input = inputs
                    (shifted, cross), columns = _correlations(layer, shifted_input, [shifted_input, exact])
                    flat, hessian = flat + _error_correction(flat, shifted, cross), shifted
                else:
                    hessian, columns = measured.hessians[name]
                target = flat.reshape(layer.weight.shape).to(layer.weight.dtype)
                result_layers[name].weight.copy_(rounded_weight(target, hessian, columns, levels))
                for step in steps:  # the rounding model goes on through the rounded layer
                    step.advance()
                on_layer(name)
    finally:
        for step in steps:
            step.close()
    return result


def _inputs_per_output(layer: nn.Module) -> int:
    return layer.weight[0].numel()


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
