"""Parameter and multiply-accumulate counts, computed on the `meta` device (no memory, no compute)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one forward pass at `input_size` x `input_size` (convs and linears)."""
    total = 0

    def on_layer(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, output)

    hooks = [module.register_forward_hook(on_layer) for module in model.modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through a Conv2d or Linear that produced `output` (0 otherwise)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def measure(constructor: Callable[[], nn.Module], input_size: int) -> tuple[int, int]:
    """(params, MACs) of the model that `constructor` builds, without allocating its weights."""
    with torch.device("meta"):
        model = constructor().eval()
    params = count_params(model)
    _drop_batchnorm(model)  # shape-preserving, and its meta decomposition is most of the time
    return params, count_macs(model, input_size)


def _drop_batchnorm(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
