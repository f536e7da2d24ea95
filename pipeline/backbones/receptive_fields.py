"""What each stage of a backbone costs: output stride, feature-map size, channels, receptive field,
parameters and multiply-accumulates, at a given input size.

A stage ends where the output stride doubles: stage k is the run of trunk modules whose output has
stride 2^k (stage 3, 4, 5 are the stride 8, 16, 32 maps that detection necks take). The trunk is the
model's modules in registration order, containers opened, up to its global pooling: the way every
backbone here (and torchvision's and timm's) writes its forward.

The receptive field is the theoretical one, r += (k - 1) * dilation * j and j *= s over every
convolution and pooling window, the maximum over branches, a shortcut leaving it unchanged. It is
propagated through every tensor op of one forward pass (a TorchFunctionMode), so branches, concats,
slices and shuffles need no description. A global pooling (squeeze-excite) gives every later output
the whole image as context; that is reported separately (`global_context`), as the number a detection
head cares about is the convolutional one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from bbdeploy.backbones.complexity import layer_macs
from bbdeploy.errors import BBDeployError


@dataclass(frozen=True)
class Field:
    """Receptive field of a tensor: size r and jump j (input pixels between adjacent outputs)."""

    size: int = 1
    jump: int = 1
    global_context: bool = False


@dataclass
class Stage:
    index: int  # k: output stride 2^k
    end: str  # module path whose output ends the stage
    stride: int
    size: list[int]  # feature map [height, width]
    channels: int
    receptive_field: int
    global_context: bool
    params: int
    macs: int


def trunk(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The main path's modules in order: containers opened, up to the first global pooling."""
    found: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> bool:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, nn.AdaptiveAvgPool2d):
                return False
            if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child):
                if not walk(path + ".", child):
                    return False
            else:
                found.append((path, child))
        return True

    walk("", model)
    return found


def _pair(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


class _FieldTracker(TorchFunctionMode):
    """Carries a Field along every tensor a forward pass computes (kept alive so ids stay unique)."""

    def __init__(self):
        super().__init__()
        self.fields: dict[int, Field] = {}
        self._alive: list[torch.Tensor] = []

    def field(self, tensor: torch.Tensor) -> Field:
        return self.fields.get(id(tensor), Field())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = [t for t in _tensors((args, kwargs)) if id(t) in self.fields or t.dim() == 4]
        if not inputs:
            return result
        base = Field(max(self.field(t).size for t in inputs), max(self.field(t).jump for t in inputs),
                     any(self.field(t).global_context for t in inputs))
        out = _through(getattr(func, "__name__", ""), base, args, kwargs, result)
        for tensor in _tensors(result):
            self.fields[id(tensor)] = out
            self._alive.append(tensor)
        return result


def _through(name: str, field: Field, args, kwargs, result) -> Field:
    """The field after op `name` (by torch's function name) with input field `field`."""
    if name == "conv2d":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        stride = _pair(args[3] if len(args) > 3 else kwargs.get("stride", 1))
        dilation = _pair(args[5] if len(args) > 5 else kwargs.get("dilation", 1))
        kernel = weight.shape[-1]
        return Field(field.size + (kernel - 1) * dilation * field.jump, field.jump * stride, field.global_context)
    if "adaptive" in name or (name in ("mean", "sum", "amax") and isinstance(result, torch.Tensor)
                              and result.dim() == 4 and result.shape[-2:] == (1, 1)):
        return Field(field.size, field.jump, True)  # every output sees the whole image
    if name.endswith(("max_pool2d", "avg_pool2d")):
        kernel = _pair(args[1] if len(args) > 1 else kwargs["kernel_size"])
        stride_arg = args[2] if len(args) > 2 else kwargs.get("stride")
        stride = _pair(stride_arg) if stride_arg not in (None, [], ()) else kernel
        return Field(field.size + (kernel - 1) * field.jump, field.jump * stride, field.global_context)
    return field


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def stage_table(model: nn.Module, input_size: int) -> list[Stage]:
    """The stages of `model` at `input_size` x `input_size` (one forward pass on zeros)."""
    modules = trunk(model)
    outputs: dict[str, tuple[list[int], Field]] = {}
    macs: dict[str, int] = {}
    tracker = _FieldTracker()

    def record(path: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                outputs[path] = (list(output.shape[1:]), tracker.field(output))
        return hook

    def count(path: str):
        def hook(module, _inputs, output):
            macs[path] += layer_macs(module, output)
        return hook

    hooks = []
    for path, module in modules:
        macs[path] = 0
        hooks.append(module.register_forward_hook(record(path)))
        for inner in module.modules():
            if isinstance(inner, (nn.Conv2d, nn.Linear)):
                hooks.append(inner.register_forward_hook(count(path)))
    try:
        with torch.no_grad(), tracker:
            model.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()

    stages: list[Stage] = []
    for path, module in modules:
        if path not in outputs:
            continue
        (channels, height, width), field = outputs[path]
        stride = max(1, round(input_size / height))
        index = round(math.log2(stride))
        params = sum(p.numel() for p in module.parameters())
        if stages and stages[-1].index == index:
            last = stages[-1]
            last.end, last.size, last.channels = path, [height, width], channels
            last.receptive_field, last.global_context = field.size, field.global_context
            last.params += params
            last.macs += macs[path]
        else:
            stages.append(Stage(index, path, stride, [height, width], channels, field.size, field.global_context,
                                params, macs[path]))
    return stages


def describe_stages(model: nn.Module, input_size: int) -> dict:
    """The stage table as JSON-ready data, with the whole network's receptive field against the input."""
    stages = stage_table(model, input_size)
    if not stages:
        raise BBDeployError("found no convolutional stages in this model; --stages needs an image backbone")
    return {
        "input_size": input_size,
        "stages": [asdict(s) for s in stages],
        "receptive_field": stages[-1].receptive_field,
        "stages_seeing_the_whole_input": [s.index for s in stages if s.receptive_field >= input_size],
    }


def stage_by_index(stages: list[Stage], index: int, model_name: str) -> Stage:
    """Stage `index`, or a one-line error listing the indices that exist."""
    for stage in stages:
        if stage.index == index:
            return stage
    raise BBDeployError(f"{model_name} has no stage {index}; pass one of "
                        f"{', '.join(str(s.index) for s in stages)} (stage k has output stride 2^k)")
