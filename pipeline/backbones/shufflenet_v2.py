"""ShuffleNetV2, laid out like torchvision's `shufflenet_v2_x*` so its checkpoints load unchanged."""

from __future__ import annotations

import torch
from torch import nn

from .layers import init_weights
from .registry import ImagenetWeights, Preprocess, register_backbone

STAGE_REPEATS = (4, 8, 4)  # blocks in stage2, stage3, stage4 (Table 5 of the paper)
# Output channels of conv1, stage2, stage3, stage4, conv5 per width (Table 5).
CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleUnit(nn.Module):
    """Stride 1: split channels, transform one half. Stride 2: transform both copies. Then shuffle."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, stride), nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            _depthwise(half, stride), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(transformed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design.

    https://arxiv.org/abs/1807.11164
    """

    def __init__(self, width: float, num_classes: int = 1000):
        super().__init__()
        stem, *stage_channels, head = CHANNELS[width]
        self.conv1 = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = stem
        for index, (repeats, out) in enumerate(zip(STAGE_REPEATS, stage_channels), start=2):
            units = [ShuffleUnit(channels, out, 2)] + [ShuffleUnit(out, out, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{index}", nn.Sequential(*units))
            channels = out
        self.conv5 = nn.Sequential(nn.Conv2d(channels, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU())
        self.num_features = head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(head, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def _register(width: float, suffix: str, filename: str, sha256: str, top1: float, aliases=()):
    """Register `shufflenet_v2_<suffix>`; the four widths differ only in this row of arguments."""

    def shufflenet(*, num_classes: int = 1000) -> nn.Module:
        return ShuffleNetV2(width, num_classes=num_classes)

    shufflenet.__name__ = shufflenet.__qualname__ = f"shufflenet_v2_{suffix}"
    shufflenet.__doc__ = f"ShuffleNetV2 {width}x. https://arxiv.org/abs/1807.11164"
    return register_backbone(
        family="shufflenet_v2",
        paper="https://arxiv.org/abs/1807.11164",
        preprocess=Preprocess(224, 0.875, "bilinear"),
        aliases=(f"shufflenetv2_{suffix}", *aliases),
        imagenet=ImagenetWeights(filename=filename, url=f"https://download.pytorch.org/models/{filename}",
                                 sha256=sha256, top1=top1),
    )(shufflenet)


shufflenet_v2_x0_5 = _register(0.5, "x0_5", "shufflenetv2_x0.5-f707e7126e.pth", "f707e7126e", 60.552)
shufflenet_v2_x1_0 = _register(1.0, "x1_0", "shufflenetv2_x1-5666bf0f80.pth", "5666bf0f80", 69.362,
                               aliases=("shufflenet", "shufflenetv2", "shufflenet_v2"))
shufflenet_v2_x1_5 = _register(1.5, "x1_5", "shufflenetv2_x1_5-3c479a10.pth", "3c479a10", 72.996)
shufflenet_v2_x2_0 = _register(2.0, "x2_0", "shufflenetv2_x2_0-8be3c8ee.pth", "8be3c8ee", 76.23)
