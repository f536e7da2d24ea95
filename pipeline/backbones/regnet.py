"""RegNetX and RegNetY (200MF-800MF), laid out like torchvision's `regnet_*` so its checkpoints load
unchanged; timm's `regnetx_00N` / `regnety_00N` checkpoints are renamed on load (checkpoints.py).

A RegNet is not a table of stages but a point of the design space: the widths of its blocks grow
linearly (w0 + wa * i), are snapped to powers of wm, and consecutive blocks of equal width form a
stage. `stages()` computes that, as the paper and both reference libraries do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .layers import SqueezeExcite, init_weights, make_divisible
from .registry import ImagenetWeights, Preprocess, register_variant

STEM_CHANNELS = 32


@dataclass(frozen=True)
class DesignPoint:
    """(depth, w0, wa, wm, group width, squeeze-excite ratio), Appendix C of the paper."""

    depth: int  # blocks in all
    w0: int  # initial width
    wa: float  # width slope
    wm: float  # width quantization step, in log space
    group_width: int  # channels per group of the 3x3 convolutions
    se_ratio: float | None = None  # RegNetY: squeeze-excite, relative to the block's input width


def stages(point: DesignPoint) -> list[tuple[int, int, int]]:
    """(output width, blocks, group width) per stage, from the design point (bottleneck ratio 1)."""
    widths = []
    for i in range(point.depth):
        continuous = point.w0 + point.wa * i
        exponent = round(math.log(continuous / point.w0) / math.log(point.wm))
        widths.append(int(round(point.w0 * point.wm ** exponent / 8) * 8))
    counts: list[list[int]] = []  # [width, blocks] of runs of equal width
    for width in widths:
        if counts and counts[-1][0] == width:
            counts[-1][1] += 1
        else:
            counts.append([width, 1])
    result = []
    for width, blocks in counts:
        group = min(point.group_width, width)
        result.append((make_divisible(width, group), blocks, group))  # a whole number of groups
    return result


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """relu(shortcut(x) + c(se(b(a(x))))): 1x1, grouped 3x3 (the stride), [SE], linear 1x1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, group_width: int, se_ratio: float | None):
        super().__init__()
        self.proj = (_conv_bn(in_channels, out_channels, 1, stride, relu=False)
                     if in_channels != out_channels or stride != 1 else None)
        parts = {"a": _conv_bn(in_channels, out_channels, 1),
                 "b": _conv_bn(out_channels, out_channels, 3, stride, groups=out_channels // group_width)}
        if se_ratio:
            parts["se"] = SqueezeExcite(out_channels, int(round(se_ratio * in_channels)), gate=nn.Sigmoid)
        parts["c"] = _conv_bn(out_channels, out_channels, 1, relu=False)
        self.f = nn.Sequential()
        for name, part in parts.items():
            self.f.add_module(name, part)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.proj(x) if self.proj is not None else x
        return self.activation(shortcut + self.f(x))


class RegNet(nn.Module):
    """Designing Network Design Spaces. https://arxiv.org/abs/2003.13678"""

    def __init__(self, point: DesignPoint, num_classes: int = 1000):
        super().__init__()
        self.stem = _conv_bn(3, STEM_CHANNELS, 3, 2)
        channels = STEM_CHANNELS
        self.trunk_output = nn.Sequential()
        for index, (width, blocks, group_width) in enumerate(stages(point), start=1):
            stage = nn.Sequential()
            for i in range(blocks):
                stage.add_module(f"block{index}-{i}", Bottleneck(channels, width, 2 if i == 0 else 1,
                                                                 group_width, point.se_ratio))
                channels = width
            self.trunk_output.add_module(f"block{index}", stage)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.avgpool(self.trunk_output(self.stem(x)))))


TORCHVISION = Preprocess(224, 0.875, "bilinear")
TIMM_PYCLS = Preprocess(224, 0.875, "bicubic")  # timm's pretrained_cfg of the pycls checkpoints


def _timm_weights(name: str) -> ImagenetWeights:
    return ImagenetWeights(
        filename=f"{name}.pycls_in1k.safetensors",
        note=f"timm publishes this checkpoint only on the Hugging Face hub, without a sha256 that can be checked "
             f"offline: download 'timm/{name}.pycls_in1k' model.safetensors and pass it with --weights PATH")


def _torchvision_weights(filename: str, sha256: str, top1: float) -> ImagenetWeights:
    return ImagenetWeights(filename=filename, url=f"https://download.pytorch.org/models/{filename}",
                           sha256=sha256, top1=top1)


def _register(name: str, point: DesignPoint, preprocess: Preprocess, weights: ImagenetWeights, aliases=()):
    """Register `name`; every RegNet differs only in this row of arguments."""
    return register_variant(
        name, f"{name}: RegNet design point {point}. https://arxiv.org/abs/2003.13678",
        lambda *, num_classes=1000: RegNet(point, num_classes=num_classes),
        family=name[:len("regnet_x")], paper="https://arxiv.org/abs/2003.13678", preprocess=preprocess,
        aliases=aliases, imagenet=weights)


# Design points of the paper (Appendix C), as pycls, timm and torchvision define them.
regnet_x_200mf = _register("regnet_x_200mf", DesignPoint(13, 24, 36.44, 2.49, 8), TIMM_PYCLS,
                           _timm_weights("regnetx_002"), aliases=("regnetx_002",))
regnet_x_400mf = _register("regnet_x_400mf", DesignPoint(22, 24, 24.48, 2.54, 16), TORCHVISION,
                           _torchvision_weights("regnet_x_400mf-adf1edd5.pth", "adf1edd5", 72.834),
                           aliases=("regnetx_004",))
regnet_x_600mf = _register("regnet_x_600mf", DesignPoint(16, 48, 36.97, 2.24, 24), TIMM_PYCLS,
                           _timm_weights("regnetx_006"), aliases=("regnetx_006",))
regnet_x_800mf = _register("regnet_x_800mf", DesignPoint(16, 56, 35.73, 2.28, 16), TORCHVISION,
                           _torchvision_weights("regnet_x_800mf-ad17e45c.pth", "ad17e45c", 75.212),
                           aliases=("regnetx_008",))
regnet_y_200mf = _register("regnet_y_200mf", DesignPoint(13, 24, 36.44, 2.49, 8, 0.25), TIMM_PYCLS,
                           _timm_weights("regnety_002"), aliases=("regnety_002",))
regnet_y_400mf = _register("regnet_y_400mf", DesignPoint(16, 48, 27.89, 2.09, 8, 0.25), TORCHVISION,
                           _torchvision_weights("regnet_y_400mf-c65dace8.pth", "c65dace8", 74.046),
                           aliases=("regnety_004",))
regnet_y_600mf = _register("regnet_y_600mf", DesignPoint(15, 48, 32.54, 2.32, 16, 0.25), TIMM_PYCLS,
                           _timm_weights("regnety_006"), aliases=("regnety_006",))
regnet_y_800mf = _register("regnet_y_800mf", DesignPoint(14, 56, 38.84, 2.4, 16, 0.25), TORCHVISION,
                           _torchvision_weights("regnet_y_800mf-1b27b58c.pth", "1b27b58c", 76.42),
                           aliases=("regnety_008",))
