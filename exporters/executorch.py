"""PyTorch -> ExecuTorch (`.pte`) with the graph lowered to the XNNPACK delegate.

`torch.export` captures the model, `to_edge_transform_and_lower` hands every node XNNPACK takes to
`XnnpackPartitioner`; what it leaves runs on ExecuTorch's portable kernels, one node at a time.
Delegation is read back from the written program (`delegation`), not assumed: the XNNPACK nodes inside
each delegate blob and the operators the program calls outside them.

fp16 holds weights and activations in half inside XNNPACK (its f16 kernels; on x86 they convert to f32
lanes with F16C), with float32 input and output: the two casts at the ends are portable-kernel copies,
so callers feed the same float32 as for fp32.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from functools import cache
from pathlib import Path

import torch

from bbdeploy.targets.runner.runtimes.executorch import (XNNPACK, program_summary, root, scalar, table_at,
                                                        tables, union)


class HalfCompute(torch.nn.Module):
    """fp16 inside, float32 at the boundary (the outputs as the model returns them, one or a tuple)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half()  # the caller's model stays float32

    def forward(self, x):
        out = self.model(x.half())
        return tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()


def lower(program: torch.export.ExportedProgram) -> bytes:
    """The `.pte` bytes of an exported program, lowered to XNNPACK where it can run."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return edge.to_executorch().buffer


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nchw") -> None:
    """Write `model` traced at `sample` (NCHW) to `path`, with the rewrites below that let XNNPACK take
    the whole graph."""
    model = model.eval()
    if precision == "fp16":
        model = HalfCompute(model)
    with torch.no_grad():
        graph = torch.export.export(model, (sample,)).module()
        hardsigmoid_with_scalars(graph)
        pad_average_pools(graph)
        program = torch.export.export(graph, (sample,))
    Path(path).write_bytes(lower(program))


HARDSIGMOID = (torch.ops.aten.hardsigmoid.default, torch.ops.aten.hardsigmoid_.default)


def hardsigmoid_with_scalars(graph_module: torch.fx.GraphModule) -> None:
    """hardsigmoid(x) -> relu6(x + 3) * (1/6) with Python scalars.

    XNNPACK's own lowering of hardsigmoid lifts its 3 and 6 as tensor constants, each cast by a
    portable-kernel copy that splits an fp16 graph: MobileNetV3-Small fp16 ran as 19 delegates (one per
    squeeze-excite block), one with this rewrite.
    """
    graph = graph_module.graph
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in HARDSIGMOID]:
        with graph.inserting_before(node):
            shifted = graph.call_function(torch.ops.aten.add.Tensor, (node.args[0], 3.0))
            clamped = graph.call_function(torch.ops.aten.hardtanh.default, (shifted, 0.0, 6.0))
            scaled = graph.call_function(torch.ops.aten.mul.Tensor, (clamped, 1 / 6))
        for new in (shifted, clamped, scaled):
            new.meta = dict(node.meta)
        node.replace_all_uses_with(scaled)
        graph.erase_node(node)
    graph_module.recompile()


AVERAGE_POOLS = (torch.ops.aten.avg_pool2d.default,)


def pad_average_pools(graph_module: torch.fx.GraphModule) -> None:
    """avg_pool2d(x, padding=p) counting the padding -> avg_pool2d(zero-pad(x, p), padding=0): the same
    numbers, and a form XNNPACK runs (it refuses count_include_pad with padding: ShuffleNet V1's
    stride-2 pools ran on the portable kernels and split its graph into 4 delegates)."""
    graph = graph_module.graph
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in AVERAGE_POOLS]:
        x, kernel, stride, padding, ceil_mode, count_include_pad, divisor = (
            *node.args, *[None, [], 0, False, True, None][len(node.args) - 1:])
        padding = [padding] * 2 if isinstance(padding, int) else list(padding)
        if ceil_mode or not count_include_pad or divisor is not None or not any(padding):
            continue
        if len(padding) == 1:
            padding = padding * 2
        with graph.inserting_before(node):
            padded = graph.call_function(torch.ops.aten.constant_pad_nd.default,
                                         (x, [padding[1], padding[1], padding[0], padding[0]], 0.0))
            pooled = graph.call_function(torch.ops.aten.avg_pool2d.default, (padded, kernel, stride, [0, 0]))
        for new in (padded, pooled):
            new.meta = dict(node.meta)
        node.replace_all_uses_with(pooled)
        graph.erase_node(node)
    graph_module.recompile()


def op_histogram(path: Path) -> dict[str, int]:
    """XNNPACK's nodes by type (`xnnpack:Conv2d`), and each operator the program calls outside a delegate
    by its name (`portable:aten::add`)."""
    found = delegation(path)
    return {**{f"xnnpack:{node}": n for node, n in found["xnnpack_nodes"].items()},
            **{f"portable:{op}": n for op, n in found["portable_ops"].items()}}


def delegation(path: Path) -> dict:
    """What ran where in the program at `path`: {"delegates": n, "xnnpack_nodes": {type: count},
    "float_layers": XNNPACK convolutions and fully connected layers with float weights,
    "portable_ops": {operator: calls}, "undelegated_convolutions": n}."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DataLocation

    data = Path(path).read_bytes()
    summary = program_summary(data)  # the runner's own reading: delegates and the calls outside them
    program = deserialize_pte_binary(data).program  # exir's, for the XNNPACK blobs inside the delegates
    nodes: Counter = Counter()
    float_layers = 0
    for delegate in program.execution_plan[0].delegates:
        if delegate.id == XNNPACK and delegate.processed.location == DataLocation.INLINE:
            found, floats = xnnpack_graph(program.backend_delegate_data[delegate.processed.index].data)
            nodes.update(found)
            float_layers += floats
    return {"delegates": summary["partitions"], "xnnpack_nodes": dict(sorted(nodes.items())),
            "float_layers": float_layers, "portable_ops": summary["portable_ops"],
            "undelegated_convolutions": summary["undelegated_convolutions"]}


# where the filter's value id sits in the tables of the nodes that carry weights (schema.fbs field numbers)
FILTER_FIELD = {"Conv2d": 16, "DepthwiseConv2d": 16, "ConvTranspose2d": 16, "FullyConnected": 1}


def xnnpack_graph(blob: bytes) -> tuple[Counter, int]:
    """(node types, weighted layers whose filter is float) of one XNNPACK delegate blob: its header (`XH00`)
    points at an `XNNGraph` flatbuffer, whose `xnodes[i].xnode_union` type indexes the `XNodeUnion` of
    ExecuTorch's own schema file, and whose `xvalues` say which tensors are quantized."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader

    header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
    graph = root(blob[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size])
    quantized = {}  # value id -> whether it is an XNNQuantizedTensorValue
    for value in tables(graph, 2):  # XNNGraph.xvalues
        kind, body = union(value, 0)
        tensor = table_at(body, 0) if kind == 2 else body  # XNNQuantizedTensorValue.tensor_value
        quantized[scalar(tensor, 6, "Uint32Flags")] = kind == 2  # XNNTensorValue.id_out
    names = _node_union_names()
    found: Counter = Counter()
    float_layers = 0
    for node in tables(graph, 1):  # XNNGraph.xnodes
        kind, body = union(node, 0)
        name = names[kind - 1].removeprefix("XNN") if 0 < kind <= len(names) else f"type {kind}"
        found[name] += 1
        if name in FILTER_FIELD and not quantized.get(scalar(body, FILTER_FIELD[name], "Uint32Flags"), False):
            float_layers += 1
    return found, float_layers


@cache
def _node_union_names() -> list[str]:
    """The member names of `union XNodeUnion` in the schema that ships with executorch (its order is
    the union's type numbering, 1-based)."""
    from executorch.backends.xnnpack.serialization import xnnpack_graph_serialize

    schema = (Path(xnnpack_graph_serialize.__file__).parent / "schema.fbs").read_text()
    body = re.search(r"union\s+XNodeUnion\s*\{(.*?)\}", schema, re.S).group(1)
    body = re.sub(r"//[^\n]*", "", body)
    return [member.split(":")[0].strip() for member in body.split(",") if member.strip()]
