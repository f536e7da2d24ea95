"""Bias correction: cancel the mean output shift that int8 weight rounding puts on each channel.

Rounding a 3x3 depthwise kernel to int8 perturbs its nine taps by a fixed amount; as the inputs
after ReLU6 are all positive, that perturbation becomes a per-channel offset which every following
layer inherits. On EfficientNet-Lite0 weight rounding alone takes the logits to 17.5 dB SQNR;
subtracting each channel's expected offset (Nagel et al. 2019, "Data-Free Quantization", here with
input means measured on the calibration images) brings that to 23 dB.

The correction assumes the toolchain quantizes weights the same way afterwards: per output channel,
symmetric, scale = max|w| / levels. Batch norm is folded first so that those weights are the ones
the toolchain sees.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

LAYERS = (nn.Conv2d, nn.Linear)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Conv2d -> BatchNorm2d pair (siblings in one container) fused."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return model.eval()  # the fused convs are new modules, created in training mode


def rounded(weight: torch.Tensor, levels: int) -> torch.Tensor:
    """`weight` as the toolchain will see it: per-output-channel symmetric rounding to +-levels."""
    dims = tuple(range(1, weight.dim()))
    scale = weight.abs().amax(dim=dims, keepdim=True).clamp(min=2**-12) / levels
    return (weight / scale).round().clamp(-levels, levels) * scale


class InputMeans:
    """Per-channel mean of every conv/linear input, summed by forward hooks over whatever passes run
    while they are registered (so another measurement can share the pass)."""

    def __init__(self, model: nn.Module):
        self._sums: dict[str, tuple] = {}
        self.hooks = [m.register_forward_hook(self._recorder(n)) for n, m in model.named_modules()
                      if isinstance(m, LAYERS)]

    def _recorder(self, name: str):
        def hook(_module, inputs, _output):
            x = inputs[0].double()
            dims = (0, 2, 3) if x.dim() == 4 else tuple(range(x.dim() - 1))
            total, count = self._sums.get(name, (0, 0))
            self._sums[name] = (total + x.sum(dims), count + x.numel() // x.shape[1 if x.dim() == 4 else -1])
        return hook

    def result(self) -> dict[str, torch.Tensor]:
        return {name: (total / count).float() for name, (total, count) in self._sums.items()}


def input_means(model: nn.Module, batches: Iterable[np.ndarray]) -> dict[str, torch.Tensor]:
    """Per-channel mean of every conv/linear input over the calibration batches."""
    means = InputMeans(model)
    forward_with_hooks(model, batches, means.hooks)
    return means.result()


def forward_with_hooks(model: nn.Module, batches: Iterable[np.ndarray], hooks: list) -> None:
    """Run `model` on every batch (no gradients) for what its `hooks` record; remove them after,
    also when a batch fails."""
    try:
        with torch.no_grad():
            for batch in batches:
                model(torch.from_numpy(batch))
    finally:
        for hook in hooks:
            hook.remove()


def expected_shift(layer: nn.Module, weight_error: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """E[layer(x) with rounded weights - layer(x)] per output channel, given E[x] per input channel."""
    if isinstance(layer, nn.Linear):
        return weight_error @ mean
    groups, outputs, per_group = layer.groups, weight_error.shape[0], weight_error.shape[1]
    taps = weight_error.sum((2, 3)).view(groups, outputs // groups, per_group)
    return (taps * mean.view(groups, 1, per_group)).sum(-1).reshape(outputs)


def correct_biases(model: nn.Module, batches: Iterable[np.ndarray],
                   levels: int | Callable[[nn.Module], int] = 127, skip: Iterable[str] = (),
                   means: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A BN-folded copy of `model` whose biases absorb the expected int8 weight-rounding shift
    (`means`: the layers' input means, when a pass over `batches` measured them already).

    `levels` may depend on the layer (a function of it), for toolchains that round layers differently.
    The float model changes slightly (by design: it is the rounded one that must match the original).
    Layers named in `skip` stay in float, so they keep their bias.
    """
    skip = set(skip)
    folded = fold_batchnorm(model)
    means = input_means(folded, batches) if means is None else means
    with torch.no_grad():
        for name, layer in folded.named_modules():
            if not isinstance(layer, LAYERS) or name not in means or name in skip:
                continue
            layer_levels = levels(layer) if callable(levels) else levels
            shift = expected_shift(layer, rounded(layer.weight, layer_levels) - layer.weight, means[name])
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros_like(shift))
            layer.bias -= shift
    return folded
