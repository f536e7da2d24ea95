"""Small building blocks shared by the backbone families.

Every block is plain Conv2d / BatchNorm2d / activation modules with no in-place ops and no
data-dependent control flow, so that PT2E, NNCF and onnxruntime can fold and quantize them, and
module paths stay stable names that users can pass to `--keep-float`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of `divisor`, never more than 10% down.

    This is the rounding of the reference TF/torchvision/timm code, so scaled widths reproduce the
    published channel counts (and therefore load the published checkpoints).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU6,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> nn.Sequential:
    """Conv -> BN -> activation as an `nn.Sequential` indexed 0, 1, 2.

    The indices give torchvision's `Conv2dNormActivation` parameter names (`features.0.0.weight`,
    `features.0.1.running_mean`), so torchvision checkpoints load unchanged.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """x * gate(fc2(relu(fc1(mean(x))))): channel attention with torchvision's parameter names.
    MobileNetV3 gates with a hard sigmoid, RegNetY with a sigmoid."""

    def __init__(self, channels: int, squeeze_channels: int, gate: type[nn.Module] = nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.scale_activation = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


def tf_same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "SAME" mode for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, for weights ported from TensorFlow.

    TF pads asymmetrically (more at the bottom/right) when the padding total is odd, which happens
    for stride 2 on even input sizes. Stride-1 convolutions with odd kernels never need this: their
    padding is symmetric and lives in the convolution itself (see `same_conv2d`), which keeps the
    exported graphs free of explicit PAD ops there.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad_input(x))

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` padded as TF pads it; what the convolution proper sees (also for weight rounding)."""
        kh, kw = self.kernel_size
        sh, sw = self.stride
        # int(): under TorchScript tracing the pads become constants instead of shape arithmetic
        # (exports have static shapes); in eager mode and torch.export it changes nothing.
        top, bottom = tf_same_padding(int(x.shape[-2]), kh, sh)
        left, right = tf_same_padding(int(x.shape[-1]), kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return x


def same_conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A convolution with TF "SAME" semantics, using a plain symmetric conv wherever that is exact."""
    if stride == 1 and kernel_size % 2 == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2,
                         groups=groups, bias=bias)
    return Conv2dSame(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)


def init_weights(model: nn.Module) -> None:
    """The initialisation of the reference implementations (Kaiming fan-out convs, unit BN).
    Nothing to do for a weightless (meta) model: a shape probe, which torch's meta init made slow."""
    if any(p.is_meta for p in model.parameters()):
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
