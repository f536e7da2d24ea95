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
        model = channel_last(model)
        sample = sample.permute(0, 2, 3, 1).contiguous()
    edge_model = litert_torch.convert(model.eval(), (sample,), quant_config=quant_config)
    edge_model.export(str(path))


def channel_last(model: torch.nn.Module) -> torch.nn.Module:
    """NHWC input, and NHWC feature-map outputs (export --features): left NCHW, every output map would
    cost a TRANSPOSE at the end of the graph."""
    import litert_torch

    names = getattr(model, "output_names", None)
    return litert_torch.to_channel_last_io(model, args=[0], outputs=list(range(len(names))) if names else None)


def _operators(path: Path):
    """(op name, operator, subgraph) for every operator in the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # new ops only fill BuiltinCode
        custom = code.CustomCode()
        opcodes.append(custom.decode() if custom else names.get(builtin, str(builtin)))
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o)
            yield opcodes[operator.OpcodeIndex()], operator, subgraph


def op_histogram(path: Path) -> dict[str, int]:
    """Operator counts read from the flatbuffer itself (no interpreter, so no delegate ops)."""
    return dict(Counter(name for name, _, _ in _operators(path)))


def float_ops(path: Path) -> list[str]:
    """The operators, in graph order, that read or write a float32 tensor.

    In an int8 model with float I/O this is exactly [QUANTIZE, DEQUANTIZE] at the two ends; any
    other entry is a place where the graph leaves int8.
    """
    from ai_edge_litert import schema_py_generated as schema

    found = []
    for name, operator, subgraph in _operators(path):
        tensors = [*operator.InputsAsNumpy(), *operator.OutputsAsNumpy()]
        if any(t >= 0 and subgraph.Tensors(t).Type() == schema.TensorType.FLOAT32 for t in tensors):
            found.append(name)
    return found
