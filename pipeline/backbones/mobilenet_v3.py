"""MobileNetV3 Large and Small, laid out like torchvision's so its checkpoints load unchanged."""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn

from .layers import SqueezeExcite, conv_bn_act, init_weights, make_divisible
from .registry import ImagenetWeights, Preprocess, register_backbone

RE, HS = nn.ReLU, nn.Hardswish
# One row per block: (kernel, expanded channels, output channels, squeeze-excite, activation, stride),
# Tables 1 and 2 of the paper; channel counts at width 1.0.
LARGE = [
    (3, 16, 16, False, RE, 1),  # 112x112
    (3, 64, 24, False, RE, 2),  # 56x56
    (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2),  # 28x28
    (5, 120, 40, True, RE, 1),
    (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2),  # 14x14
    (3, 200, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 480, 112, True, HS, 1),
    (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2),  # 7x7
    (5, 960, 160, True, HS, 1),
    (5, 960, 160, True, HS, 1),
]
SMALL = [
    (3, 16, 16, True, RE, 2),  # 56x56
    (3, 72, 24, False, RE, 2),  # 28x28
    (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2),  # 14x14
    (5, 240, 40, True, HS, 1),
    (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1),
    (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2),  # 7x7
    (5, 576, 96, True, HS, 1),
    (5, 576, 96, True, HS, 1),
]
STEM_CHANNELS = 16

_conv = partial(conv_bn_act, bn_eps=0.001, bn_momentum=0.01)


class InvertedResidual(nn.Module):
    """1x1 expand (when widened) -> depthwise k x k -> optional SE -> linear 1x1 project."""

    def __init__(self, in_channels: int, kernel: int, expanded: int, out_channels: int,
                 use_se: bool, activation: type[nn.Module], stride: int):
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(_conv(in_channels, expanded, 1, activation=activation))
        layers.append(_conv(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
        if use_se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4)))
        layers.append(_conv(expanded, out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class MobileNetV3(nn.Module):
    """Searching for MobileNetV3. https://arxiv.org/abs/1905.02244"""

    def __init__(self, table: list[tuple], last_channels: int, width: float = 1.0,
                 num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        channels = make_divisible(STEM_CHANNELS * width)
        features: list[nn.Module] = [_conv(3, channels, 3, 2, activation=HS)]
        for kernel, expanded, out, use_se, act, stride in table:
            out = make_divisible(out * width)
            features.append(InvertedResidual(channels, kernel, make_divisible(expanded * width),
                                             out, use_se, act, stride))
            channels = out
        features.append(_conv(channels, 6 * channels, 1, activation=HS))
        self.features = nn.Sequential(*features)
        last = make_divisible(last_channels * width)
        self.num_features = 6 * channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Linear(6 * channels, last), nn.Hardswish(),
                                        nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


_PREPROCESS = Preprocess(224, 0.875, "bilinear")


@register_backbone(
    family="mobilenet_v3",
    paper="https://arxiv.org/abs/1905.02244",
    preprocess=_PREPROCESS,
    aliases=("mobilenetv3", "mobilenetv3_large", "mobilenet-v3-large", "mobilenet_v3"),
    widths=(0.75, 1.0),
    imagenet=ImagenetWeights(
        filename="mobilenet_v3_large-8738ca79.pth",
        url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
        sha256="8738ca79",
        top1=74.042,
    ),
)
def mobilenet_v3_large(*, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return MobileNetV3(LARGE, 1280, width=width, num_classes=num_classes)


@register_backbone(
    family="mobilenet_v3",
    paper="https://arxiv.org/abs/1905.02244",
    preprocess=_PREPROCESS,
    aliases=("mobilenetv3_small", "mobilenet-v3-small"),
    widths=(0.75, 1.0),
    imagenet=ImagenetWeights(
        filename="mobilenet_v3_small-047dcff4.pth",
        url="https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
        sha256="047dcff4",
        top1=67.668,
    ),
)
def mobilenet_v3_small(*, width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return MobileNetV3(SMALL, 1024, width=width, num_classes=num_classes)


# --- Deploy form: the hard-sigmoid gate folded into weights --------------------------------------
#
# hardsigmoid(z) = relu6(z + 3) / 6 has no TFLite op: converters spell it as float ADD and MUL
# between a DEQUANTIZE and a QUANTIZE, in every squeeze-excite block of an int8 model. The "+ 3"
# folds into the bias of the gate's convolution and the "/ 6" into the weights of the linear 1x1
# projection that follows the gate, which leaves conv -> ReLU6 and a product: all int8 ops.


class SqueezeExciteDeploy(nn.Module):
    """x * relu6(fc2(...) + 3): six times the paper's gate (the next projection divides by six)."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.avgpool, self.fc1, self.activation = se.avgpool, se.fc1, se.activation
        self.fc2 = copy.deepcopy(se.fc2)
        with torch.no_grad():
            self.fc2.bias += 3.0
        self.scale_activation = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


def _deploy_form(self: MobileNetV3) -> nn.Module:
    """The same network with every squeeze-excite gate in conv -> ReLU6 form (for converters)."""
    model = copy.deepcopy(self).eval()
    for block in model.modules():
        if not isinstance(block, InvertedResidual):
            continue
        layers = block.block
        for index, layer in enumerate(layers):
            if isinstance(layer, SqueezeExcite):
                layers[index] = SqueezeExciteDeploy(layer)
                projection = layers[index + 1][0]  # the linear 1x1 conv (no bias) before its batch norm
                with torch.no_grad():
                    projection.weight /= 6.0
    return model


MobileNetV3.deploy_form = _deploy_form
