"""ShuffleNetV2, laid out like torchvision's `shufflenet_v2_x*` so its checkpoints load unchanged."""

from __future__ import annotations

import torch
from torch import nn

from .layers import init_weights
from .registry import ImagenetWeights, Preprocess, register_variant

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
    return register_variant(
        f"shufflenet_v2_{suffix}", f"ShuffleNetV2 {width}x. https://arxiv.org/abs/1807.11164",
        lambda *, num_classes=1000: ShuffleNetV2(width, num_classes=num_classes),
        family="shufflenet_v2",
        paper="https://arxiv.org/abs/1807.11164",
        preprocess=Preprocess(224, 0.875, "bilinear"),
        aliases=(f"shufflenetv2_{suffix}", *aliases),
        imagenet=ImagenetWeights(filename=filename, url=f"https://download.pytorch.org/models/{filename}",
                                 sha256=sha256, top1=top1),
    )


shufflenet_v2_x0_5 = _register(0.5, "x0_5", "shufflenetv2_x0.5-f707e7126e.pth", "f707e7126e", 60.552)
shufflenet_v2_x1_0 = _register(1.0, "x1_0", "shufflenetv2_x1-5666bf0f80.pth", "5666bf0f80", 69.362,
                               aliases=("shufflenet", "shufflenetv2", "shufflenet_v2"))
shufflenet_v2_x1_5 = _register(1.5, "x1_5", "shufflenetv2_x1_5-3c479a10.pth", "3c479a10", 72.996)
shufflenet_v2_x2_0 = _register(2.0, "x2_0", "shufflenetv2_x2_0-8be3c8ee.pth", "8be3c8ee", 76.23)


# --- Deploy form: the channel shuffle folded into weights --------------------------------------
#
# ShuffleNetV2's shuffle is a 5-D reshape/transpose that TFLite's NHWC layout pass turns into three
# TRANSPOSE ops per unit. But every consumer of a shuffled tensor is indifferent to channel order:
# 1x1 convolutions take any order of input channels (permute their weight columns), and a depthwise
# conv + BN is permuted along with its input. Only *which set* of channels each split takes matters.
#
# So activations are kept as a list of physical blocks, each holding its channels in ascending
# *logical* order (the order of the reference network). A stride-1 unit hands logical channels
# >= C/2 to its branch; a channel that stays has its logical index doubled by the shuffle, so the
# leaving channels of every block are always a suffix of what remains of it: one SLICE per block,
# no transpose, exact same numbers.


def _permuted(module: nn.Module, columns=None, rows=None) -> nn.Module:
    """A copy of a conv or BN with input channels reordered (`columns`) or channels reordered (`rows`)."""
    import copy

    module = copy.deepcopy(module)
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean, module.running_var):
                tensor.copy_(tensor[rows])
        elif columns is not None:
            module.weight.copy_(module.weight[:, columns])
        else:
            module.weight.copy_(module.weight[rows])
    return module


class _DownUnit(nn.Module):
    """Stride-2 unit on the concatenation of the live blocks, weights permuted to their order."""

    def __init__(self, unit: ShuffleUnit, order: list[int]):
        super().__init__()
        b1, b2 = unit.branch1, unit.branch2
        self.branch1 = nn.Sequential(_permuted(b1[0], rows=order), _permuted(b1[1], rows=order),
                                     _permuted(b1[2], columns=order), b1[3], b1[4])
        self.branch2 = nn.Sequential(_permuted(b2[0], columns=order), *list(b2)[1:])


class _BranchUnit(nn.Module):
    """Stride-1 unit's transformed half, its first 1x1 conv permuted to the gathered order."""

    def __init__(self, unit: ShuffleUnit, order: list[int]):
        super().__init__()
        b2 = unit.branch2
        self.branch2 = nn.Sequential(_permuted(b2[0], columns=order), *list(b2)[1:])


class ShuffleNetV2Deploy(nn.Module):
    """Numerically identical to a ShuffleNetV2, without any channel shuffle op in the graph."""

    def __init__(self, model: ShuffleNetV2):
        super().__init__()
        self.conv1, self.maxpool = model.conv1, model.maxpool
        self.avgpool, self.flatten, self.fc = model.avgpool, model.flatten, model.fc
        # live blocks: [block id, ascending logical indices]; block 0 is the stem output
        live = [[0, list(range(model.conv1[0].out_channels))]]
        next_id = 1
        self.plan: list[tuple] = []  # ("down"|"unit"|"head", [(block, start, stop), ...])
        self.block_channels = [model.conv1[0].out_channels]  # physical width of each block, by id
        units = nn.ModuleList()
        for stage in (model.stage2, model.stage3, model.stage4):
            for unit in stage:
                if unit.stride > 1:
                    pieces, order = self._gather_all(live)
                    units.append(_DownUnit(unit, order))
                    half = unit.branch2[-3].out_channels
                    self.plan.append(("down", pieces))
                    live = [[next_id, [2 * i for i in range(half)]], [next_id + 1, [2 * i + 1 for i in range(half)]]]
                    self.block_channels += [half, half]
                    next_id += 2
                else:
                    half = unit.branch2[0].in_channels
                    pieces, order, live = self._split(live, half)
                    units.append(_BranchUnit(unit, order))
                    self.plan.append(("unit", pieces))
                    live.append([next_id, [2 * i + 1 for i in range(half)]])
                    self.block_channels.append(half)
                    next_id += 1
        pieces, order = self._gather_all(live)
        self.plan.append(("head", pieces))
        self.units = units
        self.conv5 = nn.Sequential(_permuted(model.conv5[0], columns=order), *list(model.conv5)[1:])

    @staticmethod
    def _gather_all(live):
        pieces = [(block, 0, len(logical)) for block, logical in live if logical]
        order = [index for _, logical in live for index in logical]
        return pieces, order

    @staticmethod
    def _split(live, half):
        """Slices of the channels leaving for the branch (logical >= half); stayers are re-indexed."""
        pieces, order, staying = [], [], []
        for block, logical in live:
            keep = sum(1 for index in logical if index < half)  # ascending: leavers are a suffix
            if keep < len(logical):
                pieces.append((block, keep, len(logical)))
                order += [index - half for index in logical[keep:]]
            if keep:
                staying.append([block, [2 * index for index in logical[:keep]]])
        return pieces, order, staying

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = [self.maxpool(self.conv1(x))]
        for (kind, pieces), unit in zip(self.plan, self.units):
            gathered = self._concat(blocks, pieces)
            if kind == "down":
                blocks += [unit.branch1(gathered), unit.branch2(gathered)]
            else:
                blocks.append(unit.branch2(gathered))
        x = self.conv5(self._concat(blocks, self.plan[-1][1]))
        return self.fc(self.flatten(self.avgpool(x)))

    def _concat(self, blocks: list[torch.Tensor], pieces: list[tuple[int, int, int]]) -> torch.Tensor:
        """The listed channel ranges of the blocks, side by side (whole blocks are not sliced)."""
        parts = [blocks[b] if start == 0 and stop == self.block_channels[b] else blocks[b][:, start:stop]
                 for b, start, stop in pieces]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _deploy_form(self: ShuffleNetV2) -> nn.Module:
    """The same network with its channel shuffles folded into weights (for converters)."""
    return ShuffleNetV2Deploy(self).eval()


ShuffleNetV2.deploy_form = _deploy_form
