"""PyTorch -> ONNX with `torch.onnx.export` (the torch.export-based exporter), checked by onnx.checker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

# The torch.export-based exporter emits opset 18 and cannot down-convert Pad to older opsets;
# onnxruntime >= 1.14 and OpenVINO read it.
OPSET = 18


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nchw", optimize: bool = True) -> None:
    """Write `model` traced at `sample`'s static shape to `path` as one self-contained .onnx file.

    fp16 converts weights, activations and the input/output to float16 (runs on onnxruntime CPU).
    `optimize` runs the exporter's own graph optimizer (constant folding, dead code removal).
    """
    import onnx

    if precision == "fp16":
        model, sample = _half_copy(model), sample.half()
    torch.onnx.export(model, (sample,), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=OPSET, dynamo=True, optimize=optimize, external_data=False,
                      verbose=False)
    onnx.checker.check_model(str(path), full_check=True)


def _half_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).half()


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(Counter(node.op_type for node in graph.node))
