"""The Python API over the backbone zoo: list, describe and build backbones with their weights."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from bbdeploy.backbones import all_specs, resolve
from bbdeploy.backbones.complexity import measure
from bbdeploy.backbones.registry import BackboneSpec
from bbdeploy.backbones.checkpoints import head_classes, load_into, read_state_dict
from bbdeploy.errors import BBDeployError
from bbdeploy.backbones.random_weights import with_photo_statistics
from bbdeploy.backbones.weights import find_offline, resolve_imagenet

SPECIAL_WEIGHTS = ("random", "imagenet")


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, optionally filtered (`"mobilenet*"`, `"lite"`)."""
    return [spec.name for spec in all_specs(pattern)]


@lru_cache(maxsize=None)
def _complexity(name: str, width: float | None) -> tuple[int, int]:
    spec = resolve(name)
    kwargs = {"width": width} if width is not None else {}
    return measure(lambda: spec.constructor(**kwargs), spec.preprocess.input_size)


def backbone_info(name: str, *, width: float | None = None) -> dict:
    """Metadata of a backbone: family, paper, params, MACs, preprocessing, weights availability."""
    spec = resolve(name)
    width = _check_width(spec, width)
    params, macs = _complexity(spec.name, width)
    offline = find_offline(spec) if width in (None, 1.0) else None
    info = spec.imagenet
    return {
        "name": spec.name,
        "family": spec.family,
        "aliases": list(spec.aliases),
        "paper": spec.paper,
        "width": width,
        "widths": list(spec.widths),
        "params": params,
        "macs": macs,
        "num_classes": spec.num_classes,
        "input_size": spec.preprocess.input_size,
        "min_input_size": spec.min_input_size,
        "preprocess": spec.preprocess.as_dict(),
        "imagenet": None if info is None else {
            "offline": offline is not None,
            "source": offline.source if offline else None,
            "url": info.url,
            "sha256": info.sha256,
            "package": info.package,
            "top1": info.top1,
        },
    }


def _check_width(spec: BackboneSpec, width: float | None) -> float | None:
    if width is None:
        return None
    if not spec.widths:
        raise BBDeployError(f"{spec.name} has a fixed width; leave out --width "
                            f"(or pick a sibling: {', '.join(list_backbones(spec.family))})")
    if float(width) not in spec.widths:
        raise BBDeployError(f"width {width} is not available for {spec.name}; pass one of "
                            f"{', '.join(str(w) for w in spec.widths)}")
    return float(width)


def create_backbone(name: str, *, weights: str = "random", num_classes: int | None = None,
                    width: float | None = None) -> nn.Module:
    """Build a backbone in eval mode with `weights` = "random" | "imagenet" | PATH to a checkpoint.

    "random" is seeded by the caller and given batch-norm statistics from the built-in photos (see
    `random_weights`), so its logits are not vanishingly small.

    `num_classes=None` keeps the checkpoint's classifier (1000 for ImageNet); another number keeps the
    pretrained features and gives a freshly initialised classifier, for fine-tuning. The model gets
    `backbone_name` and `weights_source` attributes that later stages record in their manifests.
    """
    spec = resolve(name)
    width = _check_width(spec, width)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise BBDeployError(f"num_classes must be a positive integer, got {num_classes!r}")
    kwargs = {"width": width} if width is not None else {}

    if weights == "random":
        model = with_photo_statistics(spec.constructor(num_classes=num_classes or spec.num_classes, **kwargs),
                                      spec.preprocess)
        source = "random"
    else:
        if weights == "imagenet":
            if width not in (None, 1.0):
                raise BBDeployError(f"ImageNet weights of {spec.name} exist for width 1.0 only; "
                                    f"drop --width {width} or use --weights random")
            found = resolve_imagenet(spec)
            path, source = found.path, f"imagenet ({found.source}: {found.path.name})"
        else:
            path, source = weights, f"path {weights}"
        state_dict = read_state_dict(path)
        with torch.device("meta"):  # a weightless copy, only to locate the classifier's key
            probe = spec.constructor(num_classes=1, **kwargs)
        trained_classes = head_classes(state_dict, probe) or spec.num_classes
        wanted = num_classes or trained_classes
        model = spec.constructor(num_classes=wanted, **kwargs)
        load_into(model, state_dict, repr(str(path)), skip_head=wanted != trained_classes)
    model.eval()
    model.backbone_name = spec.name
    model.weights_source = source
    return model
