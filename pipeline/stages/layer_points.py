"""The float model's tensors at the points a layer probe plan names (exporters/probes.py): for each
conv/linear layer of the deploy form (the form its artifacts were converted from), the tensor it reads
and the tensor it writes after the batch norm and activation that follow it (every converter folds the
batch norm into the layer and fuses the activation into it, or into the requantization after it, so no
runtime has the tensors in between).

What follows a layer is found by what runs on its output: a function of FOLLOWED (module or functional
form alike) whose first argument is that very tensor. The model itself is not changed (batch norms
are not folded here), so its last layer's output is the same logits the drift figure is computed from.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from bbdeploy.quantization.bias_correction import LAYERS

# batch norm, and the activations a target's probes follow through (e.g. exporters/onnx_probes.py)
FOLLOWED = {F.batch_norm, F.relu, F.relu6, F.hardtanh, F.hardswish, F.hardsigmoid, F.leaky_relu, F.sigmoid, torch.relu,
               torch.sigmoid, torch.Tensor.relu, torch.Tensor.sigmoid, torch.clamp, torch.Tensor.clamp}


def probe_model(reference: nn.Module) -> nn.Module:
    """The float model in the form its artifacts were converted from."""
    return reference.deploy_form() if hasattr(reference, "deploy_form") else reference


def layer_names(model: nn.Module) -> list[str]:
    """Conv/linear layers in definition order (module paths, as `--keep-float` takes them)."""
    return [name for name, module in model.named_modules() if isinstance(module, LAYERS)]


class _Followers(TorchFunctionMode):
    def __init__(self, pending: dict):
        super().__init__()
        self.pending = pending  # id(tensor) -> (layer, tensor): a layer's latest output, not yet read on

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in FOLLOWED and args and isinstance(args[0], torch.Tensor) and id(args[0]) in self.pending:
            layer, _ = self.pending.pop(id(args[0]))
            self.pending[id(result)] = (layer, result)
        return result


def float_points(model: nn.Module, images: np.ndarray, layers: list[str]) -> tuple[dict, list, dict]:
    """({layer: (what it reads, what it writes after its batch norm and activation)}, every output of the
    model, {output index: (layer, "output" | "input")} for each output that is the very tensor a layer
    writes or reads: a feature map, checked at that layer) on `images` (float32 NCHW), each flattened to
    one row per image."""
    modules = dict(model.named_modules())
    read, pending = {}, {}
    hooks = []
    for name in layers:
        def record(module, inputs, output, name=name):
            read[name] = inputs[0]
            pending[id(output)] = (name, output)
        hooks.append(modules[name].register_forward_hook(record))
    try:
        with torch.no_grad(), _Followers(pending):
            output = model(torch.from_numpy(images))
    finally:
        for hook in hooks:
            hook.remove()
    written = {layer: tensor for layer, tensor in pending.values()}
    rows = len(images)
    points = {name: (read[name].reshape(rows, -1).numpy(), written[name].reshape(rows, -1).numpy())
              for name in layers if name in read and name in written}
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    index_of = {id(tensor): index for index, tensor in enumerate(outputs)}
    sources: dict[int, tuple[str, str]] = {}
    for role, tensors in (("output", written), ("input", read)):
        for name in layers:
            if name in points and id(tensors[name]) in index_of:
                sources.setdefault(index_of[id(tensors[name])], (name, role))
    return points, [tensor.reshape(rows, -1).numpy() for tensor in outputs], sources
