"""PyTorch -> OpenVINO IR (.xml graph + .bin weights) with `ov.convert_model` and `ov.save_model`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

SKIPPED_OPS = {"Parameter", "Result", "Constant"}


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nchw") -> None:
    """Write the IR with a static input shape and named input/output tensors.

    `ov.save_model` compresses weights to fp16 unless told not to, which moves EfficientNet-Lite0's
    logits by up to ~0.1: fp32 therefore saves with `compress_to_fp16=False`.
    """
    import openvino as ov

    ir = ov.convert_model(model.eval(), example_input=sample, input=[tuple(sample.shape)])
    ir.inputs[0].get_tensor().set_names({"input"})
    for port, name in zip(ir.outputs, getattr(model, "output_names", ["logits"])):
        port.get_tensor().set_names({name})
    ov.save_model(ir, str(path), compress_to_fp16=precision == "fp16")


def op_histogram(path: Path) -> dict[str, int]:
    import openvino as ov

    ops = ov.Core().read_model(str(path)).get_ordered_ops()
    return dict(Counter(op.get_type_name() for op in ops if op.get_type_name() not in SKIPPED_OPS))
