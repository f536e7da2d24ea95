"""A small network of the user's own, for `bbdeploy export tests.custom_net:build`: not in the zoo, not
laid out like any of it (a residual pair of 3x3 convolutions, an inverted-residual downsampling block,
a head)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
                                  nn.Conv2d(48, 48, 3, 2, 1, groups=48, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
                                  nn.Conv2d(48, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        return self.head(torch.flatten(self.pool(self.down(x)), 1))


def build(num_classes: int = 10) -> nn.Module:
    return TinyNet(num_classes)


def not_a_module():
    return "a string"
