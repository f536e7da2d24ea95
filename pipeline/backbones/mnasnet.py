"""MnasNet (the B1 network, no squeeze-excite), laid out like torchvision's `mnasnet*` so its
checkpoints load unchanged."""

from __future__ import annotations

import torch
from torch import nn

from .layers import init_weights, make_divisible
from .registry import ImagenetWeights, Preprocess, register_variant

BN_MOMENTUM = 1 - 0.9997  # TensorFlow's decay 0.9997, as torchvision sets it
# Channels of: stem conv, separable conv, then the six stacks below, at depth multiplier 1.0.
DEPTHS = (32, 16, 24, 40, 80, 96, 192, 320)
# One row per stack of inverted residuals: (kernel k, first stride s, expansion t, repeats n), Figure 7
# of the paper (MnasNet-B1: the searched network without squeeze-excite).
STACKS = [
    (3, 2, 3, 3),  # 56x56
    (5, 2, 3, 3),  # 28x28
    (5, 2, 6, 3),  # 14x14
    (3, 1, 6, 2),  # 14x14
    (5, 2, 6, 4),  # 7x7
    (3, 1, 6, 1),  # 7x7
]
HEAD_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise k x k -> linear 1x1 project, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int):
        super().__init__()
        mid = in_channels * expansion
        self.apply_residual = in_channels == out_channels and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size, stride, kernel_size // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(),
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.apply_residual else self.layers(x)


class MNASNet(nn.Module):
    """MnasNet: Platform-Aware Neural Architecture Search for Mobile. https://arxiv.org/abs/1807.11626

    `fixed_stem`: the stem and separable conv keep 32 and 16 channels whatever `alpha` is, as in
    torchvision's first version, which is the one its published mnasnet0_5 checkpoint was saved with.
    """

    def __init__(self, alpha: float, num_classes: int = 1000, dropout: float = 0.2, fixed_stem: bool = False):
        super().__init__()
        depths = [make_divisible(d * alpha, 8) for d in DEPTHS]
        if fixed_stem:
            depths[:2] = DEPTHS[:2]
        layers: list[nn.Module] = [
            nn.Conv2d(3, depths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(depths[0], momentum=BN_MOMENTUM), nn.ReLU(),
            nn.Conv2d(depths[0], depths[0], 3, 1, 1, groups=depths[0], bias=False),
            nn.BatchNorm2d(depths[0], momentum=BN_MOMENTUM), nn.ReLU(),
            nn.Conv2d(depths[0], depths[1], 1, bias=False), nn.BatchNorm2d(depths[1], momentum=BN_MOMENTUM),
        ]
        channels = depths[1]
        for (kernel, stride, expansion, repeats), out in zip(STACKS, depths[2:]):
            layers.append(nn.Sequential(*[InvertedResidual(channels if i == 0 else out, out, kernel,
                                                           stride if i == 0 else 1, expansion)
                                          for i in range(repeats)]))
            channels = out
        layers += [nn.Conv2d(channels, HEAD_CHANNELS, 1, bias=False),
                   nn.BatchNorm2d(HEAD_CHANNELS, momentum=BN_MOMENTUM), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.num_features = HEAD_CHANNELS
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_CHANNELS, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.layers(x))))


def _register(alpha: float, suffix: str, filename: str, sha256: str, top1: float, resize: int = 256,
              fixed_stem: bool = False, aliases=()):
    """Register `mnasnet<suffix>`; the four depth multipliers differ only in this row of arguments."""
    return register_variant(
        f"mnasnet{suffix}", f"MnasNet-B1 depth multiplier {alpha}. https://arxiv.org/abs/1807.11626",
        lambda *, num_classes=1000: MNASNet(alpha, num_classes=num_classes, fixed_stem=fixed_stem),
        family="mnasnet",
        paper="https://arxiv.org/abs/1807.11626",
        preprocess=Preprocess(224, 224 / resize, "bilinear"),
        aliases=(f"mnasnet_{suffix}", *aliases),
        imagenet=ImagenetWeights(filename=filename, url=f"https://download.pytorch.org/models/{filename}",
                                 sha256=sha256, top1=top1),
    )


# torchvision's weights; 0.75 and 1.3 were trained later, with torchvision's resize to 232 px
mnasnet0_5 = _register(0.5, "0_5", "mnasnet0.5_top1_67.823-3ffadce67e.pth", "3ffadce67e", 67.734, fixed_stem=True)
mnasnet0_75 = _register(0.75, "0_75", "mnasnet0_75-7090bc5f.pth", "7090bc5f", 71.18, resize=232)
mnasnet1_0 = _register(1.0, "1_0", "mnasnet1.0_top1_73.512-f206786ef8.pth", "f206786ef8", 73.456,
                       aliases=("mnasnet",))
mnasnet1_3 = _register(1.3, "1_3", "mnasnet1_3-a4c69d6f.pth", "a4c69d6f", 76.506, resize=232)
