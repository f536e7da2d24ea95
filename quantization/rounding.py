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

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bias_correction import fold_batchnorm

DAMPING = 0.01  # fraction of the mean diagonal added to H, as in GPTQ
# A layer seen in fewer input columns than this many times its inputs per output (e.g. a classifier
# on a few hundred images) has a rank-deficient H: GPTQ would fit the calibration images and
# drift elsewhere (MobileNetV3-Small on 8 images: cosine 0.16), so it is rounded to nearest.
MIN_COLUMNS_PER_INPUT = 4


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def _patches(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (N, k, L) columns (k: inputs per output, L: positions)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T.unsqueeze(0)
    if hasattr(layer, "pad_input"):  # convolutions that pad in their forward (TF "same")
        x = layer.pad_input(x)
    return F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)


def input_correlations(model: nn.Module, batches: Iterable[np.ndarray], layers: dict[str, nn.Module]
                       ) -> dict[str, tuple[torch.Tensor, int]]:
    """(H, columns): H = sum of x x^T over every input column of each layer, (k, k) or (C, kk, kk)
    for depthwise; columns = how many input columns (samples x positions) it saw."""
    sums: dict[str, tuple[torch.Tensor, int]] = {}

    def recorder(name, layer):
        def hook(_module, inputs, _output):
            cols = _patches(layer, inputs[0].double())
            if _is_depthwise(layer):
                n, _, positions = cols.shape
                cols = cols.view(n, layer.in_channels, -1, positions)
                h = torch.einsum("ncil,ncjl->cij", cols, cols)
            else:
                h = torch.einsum("nil,njl->ij", cols, cols)
            total, columns = sums.get(name, (0, 0))
            sums[name] = (total + h, columns + cols.shape[0] * cols.shape[-1])
        return hook

    hooks = [layer.register_forward_hook(recorder(name, layer)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(torch.from_numpy(batch))
    finally:
        for hook in hooks:
            hook.remove()
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

    h = hessian.double().clone()
    h = h if h.dim() == 3 else h.unsqueeze(0)
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    diag[diag == 0] = 1.0  # inputs that are always zero: rounded to nearest (their error costs nothing)
    diag += DAMPING * diag.mean(dim=-1, keepdim=True)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for column in range(w.shape[1]):
        values = w[:, column]
        q = torch.where(pinned[:, column], pinned_value[:, column],
                        torch.clamp(torch.round(values / scale[:, 0]), -limit, limit) * scale[:, 0])
        pivot = upper[:, column, column]
        error = (values - q) / pivot
        w[:, column] = q
        w[:, column + 1:] -= error.unsqueeze(1) * upper[:, column, column + 1:]
    return w.to(weight.dtype)


def gptq_rounded(model: nn.Module, batches: Iterable[np.ndarray], levels: float, skip: Iterable[str] = ()
                 ) -> nn.Module:
    """A BN-folded copy of `model` whose conv/linear weights sit on the `levels` grid, GPTQ-rounded
    (layers in `skip` stay as they are, e.g. those kept in float)."""
    folded = fold_batchnorm(model)
    skip = set(skip)
    layers = {name: layer for name, layer in folded.named_modules()
              if isinstance(layer, (nn.Conv2d, nn.Linear)) and name not in skip
              and (not isinstance(layer, nn.Conv2d) or layer.groups == 1 or _is_depthwise(layer))}
    hessians = input_correlations(folded, batches, layers)
    with torch.no_grad():
        for name, layer in layers.items():
            if name not in hessians:
                continue
            hessian, columns = hessians[name]
            shape = layer.weight.shape
            flat = layer.weight.reshape(shape[0], -1)
            if columns >= MIN_COLUMNS_PER_INPUT * flat.shape[1]:
                flat = gptq_round(flat, hessian, levels)
            else:
                flat = gptq_round(flat, torch.eye(flat.shape[1]), levels)  # identity H: nearest, same grid
            layer.weight.copy_(flat.reshape(shape))
    return folded
