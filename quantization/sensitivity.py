"""Per-layer quantization sensitivity: which layers cost the most when they are quantized.

Each conv/linear layer is quantized alone in the float PyTorch model, the way the artifact's
toolchain quantizes it (weights per output channel on its grid, rounded as the artifact's were;
the layer's input on an 8-bit per-tensor grid over the range seen on the images), and the logits
are compared with the float ones. The layers whose error is largest are the ones worth leaving in
float (`--keep-float`), named as that option takes them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbdeploy.data.photos import load_image, preprocess_image, recorded_preprocess
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.parity import compare_logits

from .bias_correction import LAYERS, fold_batchnorm, forward_with_hooks
from .rounding import input_correlations, roundable_layers, rounded_weight

SUGGESTED = 3  # layers named in the --keep-float suggestion
ACTIVATION_LEVELS = 255  # 8-bit activations, asymmetric per tensor, in every toolchain here


def layer_sensitivity(model: nn.Module, manifest: dict, data, samples: int = 64) -> dict:
    """{"ranked": [{"layer", "sqnr_db", "cosine", "agreement_top1"}, ...] worst first, "suggest": "..."}"""
    deploy = model.deploy_form() if hasattr(model, "deploy_form") else model
    folded = fold_batchnorm(deploy)
    images = torch.from_numpy(_images(data, manifest["preprocess"], samples))
    quantization = manifest.get("quantization") or {}
    levels = TARGETS[manifest["target"]].int8.weight_levels
    layers = {name: layer for name, layer in folded.named_modules() if isinstance(layer, LAYERS)}
    ranges = _input_ranges(folded, images, layers)
    hessians = (input_correlations(folded, [images.numpy()], roundable_layers(folded))
                if quantization.get("weight_rounding") == "gptq" else {})
    with torch.no_grad():
        reference = folded(images).numpy()
    ranked = []
    for name, layer in layers.items():
        if name not in ranges:
            continue
        original = layer.weight.detach().clone()
        hook = layer.register_forward_pre_hook(_fake_quantize_input(*ranges[name]))
        try:
            with torch.no_grad():
                layer.weight.copy_(rounded_weight(original, *hessians.get(name, (None, 0)), levels))
                logits = folded(images).numpy()
        finally:
            hook.remove()
            with torch.no_grad():
                layer.weight.copy_(original)
        drift = compare_logits(reference, logits)
        ranked.append({"layer": name, "sqnr_db": drift["sqnr_db"], "cosine": drift["cosine"],
                       "agreement_top1": drift["top1_agreement"]})
    ranked.sort(key=lambda row: float("inf") if row["sqnr_db"] is None else row["sqnr_db"])
    worst = [row["layer"] for row in ranked[:SUGGESTED]]
    return {"samples": int(images.shape[0]), "weight_levels": levels,
            "weight_rounding": quantization.get("weight_rounding", "nearest"), "ranked": ranked,
            "suggest": f"--keep-float {','.join(worst)}" if worst else None}


def _images(data, recorded: dict, samples: int) -> np.ndarray:
    preprocess = recorded_preprocess(recorded)
    return np.stack([preprocess_image(load_image(path), preprocess) for path in data.paths[:samples]])


def _input_ranges(model: nn.Module, images: torch.Tensor, layers: dict) -> dict[str, tuple[float, float]]:
    """(min, max) of each layer's input over `images`, widened to include 0 as 8-bit grids do."""
    ranges = {}

    def recorder(name):
        def hook(_module, inputs):
            x = inputs[0]
            ranges[name] = (min(0.0, float(x.min())), max(0.0, float(x.max())))
        return hook

    forward_with_hooks(model, [images.numpy()], [layer.register_forward_pre_hook(recorder(name))
                                                 for name, layer in layers.items()])
    return ranges


def _fake_quantize_input(low: float, high: float):
    scale = max(high - low, 1e-12) / ACTIVATION_LEVELS
    zero_point = round(-low / scale)

    def hook(_module, inputs):
        x = inputs[0]
        q = torch.clamp(torch.round(x / scale) + zero_point, 0, ACTIVATION_LEVELS)
        return ((q - zero_point) * scale,)
    return hook
