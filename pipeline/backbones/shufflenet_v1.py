"""ShuffleNet V1 (groups 3 and 8), laid out like Megvii's reference (megvii-model/ShuffleNet-Series,
the authors' published checkpoints), with the stem named `conv1` instead of `first_conv`.

Megvii's checkpoints take BGR pixels in 0..255 with no normalisation. Here the network takes RGB in
0..255 (mean 0, std 1/255), and a checkpoint in Megvii's layout (`first_conv.*`) has its first
convolution's input channels reversed on load (checkpoints.py): the same function, exactly, and a
preprocessing that every runtime here already applies. The renamed stem is how the loader tells a
Megvii file from one saved by bbdeploy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import init_weights
from .registry import ImagenetWeights, Preprocess, register_variant

STAGE_REPEATS = (4, 8, 4)  # units in stage 2, 3, 4 (Table 1 of the paper)
# Output channels of conv1, stage 2, stage 3, stage 4 per width, for each number of groups (Table 1,
# and Megvii's network.py for the other widths).
CHANNELS = {
    3: {0.5: (12, 120, 240, 480), 1.0: (24, 240, 480, 960), 1.5: (24, 360, 720, 1440), 2.0: (48, 480, 960, 1920)},
    8: {0.5: (16, 192, 384, 768), 1.0: (24, 384, 768, 1536), 1.5: (24, 576, 1152, 2304), 2.0: (48, 768, 1536, 3072)},
}
# The network takes RGB 0..255: Megvii's BGR 0..255 with the channel order folded into conv1
RAW_PIXELS = Preprocess(224, 0.875, "bilinear", mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Megvii's shuffle: channel c * groups + g moves to g * (C / groups) + c."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels // groups, groups, height, width).permute(0, 2, 1, 3, 4)
    return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """1x1 group conv -> shuffle -> 3x3 depthwise -> 1x1 group conv; added to the input (stride 1) or
    concatenated with its 3x3 average pool (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, first_group: bool, stride: int):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = out_channels // 4
        outputs = out_channels - in_channels if stride == 2 else out_channels
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, groups=1 if first_group else groups, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(), nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.branch_main_2 = nn.Sequential(nn.Conv2d(mid, outputs, 1, groups=groups, bias=False),
                                           nn.BatchNorm2d(outputs))
        self.branch_proj = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.branch_main_1(x)
        if self.groups > 1:
            main = channel_shuffle(main, self.groups)
        return self.join(x, self.branch_main_2(main))

    def join(self, x: torch.Tensor, main: torch.Tensor) -> torch.Tensor:
        if self.branch_proj is None:
            return self.relu(x + main)
        return torch.cat((self.branch_proj(x), self.relu(main)), dim=1)


class ShuffleNetV1(nn.Module):
    """ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices.

    https://arxiv.org/abs/1707.01083
    """

    def __init__(self, groups: int, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        stem, *stage_channels = CHANNELS[groups][width]
        self.conv1 = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units, channels = [], stem
        for stage, (repeats, out) in enumerate(zip(STAGE_REPEATS, stage_channels)):
            for i in range(repeats):
                units.append(ShuffleUnit(channels, out, groups, first_group=stage == 0 and i == 0,
                                         stride=2 if i == 0 else 1))
                channels = out
        self.features = nn.Sequential(*units)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # Megvii's AvgPool2d(7): the same at 224 px
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Linear(channels, num_classes, bias=False))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(self.maxpool(self.conv1(x))))))

    def deploy_form(self) -> nn.Module:
        """The same network with its channel shuffles folded into weights and slices (for converters)."""
        deployed = copy.deepcopy(self)
        deployed.features = nn.Sequential(*[DeployUnit(unit) for unit in self.features])
        return deployed.eval()


# --- Deploy form: the shuffle as weight permutations and contiguous slices ----------------------
#
# A shuffle between two grouped 1x1 convolutions is a transpose of a groups x groups block matrix:
# each group of the second convolution takes some channels of every group of the first. Channels
# may be reordered freely *within* a group on both sides (permuting conv rows, the depthwise conv and
# BN along, and the next conv's columns), so each group of the first convolution orders its outputs
# by the group that will read them; the second convolution's input is then gathered as contiguous
# slices (at most groups x groups per unit, one when the first convolution is dense) and one concat.
# TFLite then needs no TRANSPOSE, and every op stays int8.


class DeployUnit(nn.Module):
    """A ShuffleUnit with no shuffle op: numerically the same function."""

    def __init__(self, unit: ShuffleUnit):
        super().__init__()
        first, bn1, relu, depthwise, bn2 = copy.deepcopy(unit.branch_main_1)
        second, bn3 = copy.deepcopy(unit.branch_main_2)
        mid, groups = first.out_channels, unit.groups
        source = channel_shuffle(torch.arange(mid, dtype=torch.float32).view(1, mid, 1, 1),
                                 groups).flatten().long().tolist() if groups > 1 else list(range(mid))
        per_reader = mid // groups
        reader = {channel: position // per_reader for position, channel in enumerate(source)}  # 2nd conv group
        per_writer = mid // first.groups
        physical = sorted(range(mid), key=lambda c: (c // per_writer, reader[c], c))  # within-group reorder
        with torch.no_grad():
            for module in (first, depthwise):
                module.weight.copy_(module.weight[physical])
            for bn in (bn1, bn2):
                for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                    tensor.copy_(tensor[physical])
            position_of = {channel: p for p, channel in enumerate(physical)}
            gathered, columns = [], []
            for group in range(groups):
                channels = source[group * per_reader:(group + 1) * per_reader]
                order = sorted(range(per_reader), key=lambda c: position_of[channels[c]])
                gathered += [position_of[channels[c]] for c in order]
                columns += [group * per_reader + c for c in order]
            rows_per_group = second.out_channels // groups
            for group in range(groups):
                rows = slice(group * rows_per_group, (group + 1) * rows_per_group)
                block = second.weight[rows].clone()
                local = [c - group * per_reader for c in columns[group * per_reader:(group + 1) * per_reader]]
                second.weight[rows] = block[:, local]
        self.branch_main_1 = nn.Sequential(first, bn1, relu, depthwise, bn2)
        self.branch_main_2 = nn.Sequential(second, bn3)
        self.branch_proj, self.relu = unit.branch_proj, unit.relu
        self.slices = _runs(gathered)
        self.gathers = self.slices != [(0, mid)]  # a dense first convolution leaves nothing to gather

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.branch_main_1(x)
        if self.gathers:
            main = torch.cat([main[:, start:stop] for start, stop in self.slices], dim=1)
        return ShuffleUnit.join(self, x, self.branch_main_2(main))


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """`positions` as (start, stop) runs of consecutive indices, in order."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    return runs


def _register(groups: int):
    """Register `shufflenet_v1_g<groups>`; the two differ only in the number of groups."""
    return register_variant(
        f"shufflenet_v1_g{groups}", f"ShuffleNet V1, {groups} groups. https://arxiv.org/abs/1707.01083",
        lambda *, width=1.0, num_classes=1000: ShuffleNetV1(groups, width=width, num_classes=num_classes),
        family="shufflenet_v1",
        paper="https://arxiv.org/abs/1707.01083",
        preprocess=RAW_PIXELS,
        aliases=(f"shufflenetv1_g{groups}", *(("shufflenet_v1", "shufflenetv1") if groups == 3 else ())),
        widths=(0.5, 1.0, 1.5, 2.0),
        imagenet=ImagenetWeights(
            filename=f"shufflenet_v1_g{groups}_1.0x.pth.tar",
            note="Megvii publishes its checkpoints (every width, groups 3 and 8) on OneDrive and Baidu Pan from "
                 "github.com/megvii-model/ShuffleNet-Series, without a download address or sha256 that can be "
                 "checked: download one and pass it with --weights PATH"),
    )


shufflenet_v1_g3 = _register(3)
shufflenet_v1_g8 = _register(8)
