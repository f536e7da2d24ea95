"""Layer probes of a TFLite artifact (see exporters/probes.py).

litert-torch names a layer's weight tensor after the module scope it came from
(`.../torch.nn.modules.container.Sequential_blocks/.../torch.nn.modules.conv.Conv2d_conv_dw;1`: each
scope is `<class>_<attribute>`), which gives the module path; the few weights it names after its own
internals (the int8 classifier) are matched by graph order. A layer's output is the op's output (its
activation is fused into the op) followed through activations and requantizations; tensors are NHWC,
quantized with their own scale and zero point.

The probed copy lists the probes as extra subgraph outputs (the flatbuffer rewritten with the schema
ai-edge-litert ships), so XNNPACK, which keeps a delegated graph's intermediate tensors to itself,
writes them out: the same kernels compute them as in the unprobed file.
"""

from __future__ import annotations

from pathlib import Path

from bbdeploy.exporters.probes import Probe, ProbePlan, by_order, gated_product, matched_layer

LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
FOLLOWED_OPS = ("RELU", "RELU6", "RELU_N1_TO_1", "HARD_SWISH", "LOGISTIC", "LEAKY_RELU", "QUANTIZE")
GATE_OPS = ("ADD", "MUL", "RELU6", "RELU", "LOGISTIC", "HARD_SWISH", "QUANTIZE", "DEQUANTIZE")  # a hardswish's gate
PASS_BACK_OPS = ("PAD", "PADV2")
QUANTIZED_TYPES = (3, 7, 9)  # TensorType UINT8, INT16, INT8


def layer_probes(artifact: Path, layers: list[str], folder: Path) -> ProbePlan:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(artifact.read_bytes(), 0))
    graph = model.subgraphs[0]
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    kinds = [names[max(code.builtinCode, code.deprecatedBuiltinCode)] for code in model.operatorCodes]
    producer, consumers = {}, {}
    for op in graph.operators:
        for index in op.outputs:
            producer[index] = op
        for index in op.inputs:
            if index >= 0:
                consumers.setdefault(index, []).append(op)
    found, unnamed = {}, []
    for op in graph.operators:
        if kinds[op.opcodeIndex] in LAYER_OPS:
            layer = matched_layer(_scope_paths(graph.tensors[op.inputs[1]].name), layers)
            if layer is None or layer in found:
                unnamed.append(op)
            else:
                found[layer] = op
    found = by_order(found, unnamed, layers)
    plan = ProbePlan(folder / f"probed-{artifact.name}")
    plan.add_layers(layers, found, lambda op: (_probe(graph, _walk_back(op.inputs[0], producer, kinds)),
                                               _probe(graph, _walk_on(op.outputs[0], consumers, producer, kinds))),
                    "no TFLite op has this layer's weights")
    graph.outputs = list(graph.outputs) + [int(p.name) for p in plan.probes if int(p.name) not in graph.outputs]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    plan.file.write_bytes(builder.Output())
    return plan


def _scope_paths(name: bytes) -> list[str]:
    """Candidate module paths in a litert-torch tensor name: every tail of its scopes' attributes."""
    scopes = name.decode(errors="replace").split(";")[0].split("/")
    attributes = []
    for scope in scopes:
        _, _, attribute = scope.rpartition(".")[2].partition("_")
        if attribute:
            attributes.append(attribute)
    return [".".join(attributes[start:]) for start in range(len(attributes))]


def _walk_back(index: int, producer: dict, kinds: list[str]) -> int:
    op = producer.get(index)
    while op is not None and kinds[op.opcodeIndex] in PASS_BACK_OPS:
        index = op.inputs[0]
        op = producer.get(index)
    return index


def _walk_on(index: int, consumers: dict, producer: dict, kinds: list[str]) -> int:
    """What the next layer reads: the layer's output through activations (hardswish written out as
    x * relu6(x + 3) / 6 too) and requantizations (and through a DEQUANTIZE only where an activation
    follows it)."""
    while True:
        product = gated_product(index, consumers.get(index, []), producer, lambda op: [int(i) for i in op.inputs],
                                lambda op: int(op.outputs[0]), lambda op: kinds[op.opcodeIndex] == "MUL",
                                lambda op: kinds[op.opcodeIndex] in GATE_OPS)
        if product is not None:
            index = product
            continue
        if len(consumers.get(index, [])) != 1:
            break
        (op,) = consumers[index]
        kind = kinds[op.opcodeIndex]
        if kind in FOLLOWED_OPS:
            index = op.outputs[0]
        elif kind == "DEQUANTIZE" and len(consumers.get(op.outputs[0], [])) == 1 and \
                kinds[consumers[op.outputs[0]][0].opcodeIndex] in FOLLOWED_OPS:
            index = op.outputs[0]
        else:
            break
    return index


def _probe(graph, index: int) -> Probe:
    tensor = graph.tensors[index]
    quantization = tensor.quantization
    scales = [] if quantization is None or quantization.scale is None else list(quantization.scale)
    layout = "nhwc" if tensor.shape is not None and len(tensor.shape) == 4 else "nchw"
    if tensor.type in QUANTIZED_TYPES and len(scales) == 1:
        return Probe(str(index), layout, float(scales[0]), int(quantization.zeroPoint[0]))
    return Probe(str(index), layout)
