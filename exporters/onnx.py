"""PyTorch -> ONNX with `torch.onnx.export` (the torch.export-based exporter), checked by onnx.checker."""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from pathlib import Path

import torch

# The torch.export-based exporter emits opset 18 and cannot down-convert Pad to older opsets;
# onnxruntime >= 1.14 and OpenVINO read it.
OPSET = 18

# The last few exports of this process, by what determines the file: `--target all` exports the same
# float graph for the onnx target and as MNN's converter input (about 6 s each for a MobileNet on 2
# cores, torch.export's decompositions), so the second is a copy of the first.
_RECENT: OrderedDict[str, bytes] = OrderedDict()
_RECENT_KEPT = 2


def _export_key(model: torch.nn.Module, sample: torch.Tensor, precision: str, layout: str, optimize: bool) -> str:
    """sha256 over the module tree and modes, every parameter and buffer, the sample's shape and the
    options."""
    modes = tuple(module.training for module in model.modules())  # batch norm traces differently in training
    digest = hashlib.sha256(repr((type(model).__qualname__, repr(model), modes, tuple(sample.shape), str(sample.dtype),
                                  precision, layout, optimize, OPSET, torch.__version__)).encode())
    for name, tensor in [*model.state_dict(keep_vars=False).items()]:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nchw", optimize: bool = True) -> None:
    """Write `model` traced at `sample`'s static shape to `path` as one self-contained .onnx file.

    fp16 converts weights, activations and the input/output to float16 (runs on onnxruntime CPU).
    `optimize` runs the exporter's own graph optimizer (constant folding, dead code removal).
    """
    import onnx

    key = _export_key(model, sample, precision, layout, optimize)
    if key in _RECENT:
        path.write_bytes(_RECENT[key])
        _RECENT.move_to_end(key)
        return
    if precision == "fp16":
        model, sample = _half_copy(model), sample.half()
    # a feature extractor (export --features) names its outputs; a classifier has one, the logits
    output_names = list(getattr(model, "output_names", ["logits"]))
    torch.onnx.export(model, (sample,), str(path), input_names=["input"], output_names=output_names,
                      opset_version=OPSET, dynamo=True, optimize=optimize, external_data=False,
                      verbose=False)
    onnx.checker.check_model(str(path), full_check=True)
    _RECENT[key] = path.read_bytes()
    while len(_RECENT) > _RECENT_KEPT:
        _RECENT.popitem(last=False)


def _half_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).half()


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(Counter(node.op_type for node in graph.node))
