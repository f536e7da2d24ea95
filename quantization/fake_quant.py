"""Fake quantization onto one toolchain's int8 grid, for quantization-aware training.

The grid is the one each toolchain's quantizer re-derives from the weights it is given (see
`rounding.py`): per output channel, symmetric, scale = max|w| / levels, the extreme weight pinned and
every other weight an integer number of steps. Training through this fake quantization (the
straight-through estimator: rounding in the forward pass, identity in the backward pass) and then
snapping the weights onto the grid gives weights the toolchain keeps exactly, as it keeps GPTQ's.

Activations are fake-quantized where the toolchains quantize them, at the input of every conv/linear
layer, per tensor, in the scheme of the target's converter (`int8.activations` in its target record):
  asymmetric        256 levels over [min, max] (onnxruntime QUInt8, litert-torch's int8)
  symmetric         NNCF: 0..255 over [0, max] for inputs that are never negative, else +-127
  symmetric-signed  MNN: +-127 over max|x|, also for non-negative inputs
The ranges are measured once on the training images with the float model and then frozen: every
process of a data-parallel run then has the same ranges, and the toolchain's own calibration later
measures ranges on the same kind of images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .bias_correction import LAYERS
from .rounding import rounded_weight

ACTIVATION_SCHEMES = ("asymmetric", "symmetric", "symmetric-signed")


@dataclass(frozen=True)
class Grid:
    """What one toolchain's int8 model computes with: its weight grid and activation scheme."""

    weight_levels: float  # per-channel symmetric: scale = max|w| / weight_levels
    activations: str  # one of ACTIVATION_SCHEMES

    @property
    def tag(self) -> str:
        return f"w{self.weight_levels:g}-{self.activations}"


def weight_on_grid(weight: torch.Tensor, levels: float) -> torch.Tensor:
    """The weight as the toolchain will store it, with a straight-through gradient."""
    flat = weight.reshape(weight.shape[0], -1)
    extreme = flat.abs().amax(dim=1, keepdim=True)
    scale = (extreme / levels).clamp(min=1e-12)
    limit = math.floor(levels)
    stepped = torch.clamp(torch.round(flat / scale), -limit, limit) * scale
    quantized = torch.where(flat.abs() == extreme, flat, stepped)  # the pinned extreme (on NNCF's
    # grid, max|w| / 63.5, it lies half-way between two levels, as the toolchain has it)
    return (flat + (quantized - flat).detach()).reshape(weight.shape)


class WeightFakeQuant(nn.Module):
    """A parametrization: the layer computes with its weight on the grid, trains the float one."""

    def __init__(self, levels: float):
        super().__init__()
        self.levels = levels

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight_on_grid(weight, self.levels)


def activation_qparams(low: float, high: float, scheme: str) -> tuple[float, int, int, int]:
    """(scale, zero point, quant min, quant max) of a tensor observed in [low, high]."""
    low, high = min(low, 0.0), max(high, 0.0)  # zero must be exact, as every toolchain has it
    if scheme == "asymmetric":
        scale = max(high - low, 1e-8) / 255
        return scale, int(round(-low / scale)), 0, 255
    if scheme == "symmetric" and low >= 0:
        return max(high, 1e-8) / 255, 0, 0, 255
    return max(-low, high, 1e-8) / 127, 0, -127, 127


class ActivationFakeQuant:
    """Forward pre-hooks that fake-quantize each layer's input over its frozen [low, high] range."""

    def __init__(self, ranges: dict[str, tuple[float, float]], scheme: str):
        self.ranges, self.scheme = ranges, scheme
        self._handles: list = []

    def attach(self, model: nn.Module) -> None:
        for name, layer in model.named_modules():
            if name in self.ranges:
                self._handles.append(layer.register_forward_pre_hook(self._hook(*self.ranges[name])))

    def _hook(self, low: float, high: float):
        scale, zero_point, quant_min, quant_max = activation_qparams(low, high, self.scheme)

        def hook(_module, inputs):
            return (torch.fake_quantize_per_tensor_affine(inputs[0], scale, zero_point, quant_min, quant_max),
                    *inputs[1:])
        return hook

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def quantized_layers(model: nn.Module, keep_float: Iterable[str]) -> dict[str, nn.Module]:
    """The conv/linear layers the toolchains quantize: all of them but `keep_float`."""
    skip = set(keep_float)
    return {name: layer for name, layer in model.named_modules() if isinstance(layer, LAYERS) and name not in skip}


@torch.no_grad()
def input_ranges(model: nn.Module, batches: Iterable[torch.Tensor], layers: Iterable[str]) -> dict[str, tuple]:
    """(min, max) of each named layer's input over `batches`."""
    ranges: dict[str, list[float]] = {}
    wanted = set(layers)

    def recorder(name):
        def hook(_module, inputs):
            x = inputs[0]
            low, high = float(x.min()), float(x.max())
            seen = ranges.setdefault(name, [low, high])
            seen[0], seen[1] = min(seen[0], low), max(seen[1], high)
        return hook

    handles = [m.register_forward_pre_hook(recorder(n)) for n, m in model.named_modules() if n in wanted]
    try:
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(value) for name, value in ranges.items()}


def attach_weight_fake_quant(layers: dict[str, nn.Module], levels: float) -> None:
    for layer in layers.values():
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(levels))


def snapped_onto_grid(model: nn.Module, levels: float) -> nn.Module:
    """`model` with its fake-quantized weights made real: each trained weight rounded onto the grid
    the same way the PTQ path rounds to nearest (so the toolchain keeps every integer)."""
    for name, layer in list(model.named_modules()):
        if parametrize.is_parametrized(layer, "weight"):
            latent = layer.parametrizations.weight.original.detach()
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            with torch.no_grad():
                layer.weight.copy_(rounded_weight(latent, None, 0, levels))
    return model
