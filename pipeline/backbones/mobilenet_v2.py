"""MobileNetV2, laid out like torchvision's `mobilenet_v2` so its checkpoints load unchanged."""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn_act, init_weights, make_divisible
from .registry import ImagenetWeights, Preprocess, register_backbone

# One row per stage: (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
STAGES = [
    (1, 16, 1, 1),  # 112x112
    (6, 24, 2, 2),  # 56x56
    (6, 32, 3, 2),  # 28x28
    (6, 64, 4, 2),  # 14x14
    (6, 96, 3, 1),  # 14x14
    (6, 160, 3, 2),  # 7x7
    (6, 320, 1, 1),  # 7x7
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) -> depthwise 3x3 -> linear 1x1 project, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(in_channels, hidden, 1))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2: Inverted Residuals and Linear Bottlenecks. https://arxiv.org/abs/1801.04381"""

    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        channels = make_divisible(STEM_CHANNELS * width)
        head = make_divisible(HEAD_CHANNELS * max(1.0, width))
        features: list[nn.Module] = [conv_bn_act(3, channels, 3, 2)]
        for t, c, n, s in STAGES:
            out = make_divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        features.append(conv_bn_act(channels, head, 1))
        self.features = nn.Sequential(*features)
        self.num_features = head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register_backbone(
    family="mobilenet_v2",
    paper="https://arxiv.org/abs/1801.04381",
    preprocess=Preprocess(224, 0.875, "bilinear"),
    aliases=("mobilenetv2", "mobilenet-v2"),
    widths=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    imagenet=ImagenetWeights(
        filename="mobilenet_v2-b0353104.pth",
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        sha256="b0353104",
        top1=71.878,
    ),
)
def mobilenet_v2(*, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return MobileNetV2(width=width, num_classes=num_classes)
