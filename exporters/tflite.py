"""PyTorch -> TFLite (LiteRT) with litert-torch.

NHWC input by default, as phone and Pi camera pipelines deliver it: `to_channel_last_io` moves the
layout change into the model, so the converter's layout pass leaves no TRANSPOSE inside the graph.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nhwc") -> None:
    """Write `model` traced at `sample` (always NCHW here) to `path`.

    fp16 stores weights as float16 (half the file) with float32 compute and I/O, the standard
    LiteRT fp16 scheme that XNNPACK and GPU delegates consume.
    """
    import litert_torch

    quant_config = None
    if precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()
    if layout == "nhwc":
        model = litert_torch.to_channel_last_io(model, args=[0])
        sample = sample.permute(0, 2, 3, 1).contiguous()
    edge_model = litert_torch.convert(model.eval(), (sample,), quant_config=quant_config)
    edge_model.export(str(path))


def op_histogram(path: Path) -> dict[str, int]:
    """Operator counts read from the flatbuffer itself (no interpreter, so no delegate ops)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # new ops only fill BuiltinCode
        custom = code.CustomCode()
        opcodes.append(custom.decode() if custom else names.get(builtin, str(builtin)))
    histogram: Counter[str] = Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            histogram[opcodes[subgraph.Operators(o).OpcodeIndex()]] += 1
    return dict(histogram)
