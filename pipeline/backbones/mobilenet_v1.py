"""MobileNetV1, laid out like timm's `mobilenetv1_100` so its checkpoints load unchanged."""

from __future__ import annotations

import torch
from torch import nn

from .layers import init_weights, make_divisible
from .registry import INCEPTION_MEAN, INCEPTION_STD, ImagenetWeights, Preprocess, register_backbone

# One row per stage: (repeats, stride of the first block, output channels at width 1.0).
# Every block is a depthwise 3x3 + pointwise 1x1, both followed by BN and ReLU6; no residuals.
STAGES = [
    (1, 1, 64),  # 112x112
    (2, 2, 128),  # 56x56
    (2, 2, 256),  # 28x28
    (6, 2, 512),  # 14x14
    (2, 2, 1024),  # 7x7
]
STEM_CHANNELS = 32


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN -> ReLU6 (timm's "dsa" block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = nn.ReLU6()
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x))))))


class MobileNetV1(nn.Module):
    """MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications.

    https://arxiv.org/abs/1704.04861
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.0):
        super().__init__()
        channels = make_divisible(STEM_CHANNELS * width)
        self.conv_stem = nn.Conv2d(3, channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU6()
        stages = []
        for repeats, stride, out in STAGES:
            out = make_divisible(out * width)
            blocks = []
            for i in range(repeats):
                blocks.append(DepthwiseSeparable(channels, out, stride if i == 0 else 1))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.classifier(self.dropout(self.flatten(self.global_pool(x))))


@register_backbone(
    family="mobilenet_v1",
    paper="https://arxiv.org/abs/1704.04861",
    preprocess=Preprocess(224, 0.875, "bicubic", INCEPTION_MEAN, INCEPTION_STD),
    aliases=("mobilenetv1", "mobilenet-v1"),
    widths=(0.25, 0.5, 0.75, 1.0),
    imagenet=ImagenetWeights(
        filename="mobilenetv1_100.ra4_e3600_r224_in1k.safetensors",
        top1=76.1,
        note="timm publishes this checkpoint only on the Hugging Face hub, without a sha256 that "
             "can be checked offline: download 'timm/mobilenetv1_100.ra4_e3600_r224_in1k' "
             "model.safetensors and pass it with --weights PATH",
    ),
)
def mobilenet_v1(*, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return MobileNetV1(width=width, num_classes=num_classes)
