"""Layer probes of an ONNX artifact (see exporters/probes.py).

A layer is found by its weight initializer, which carries the module path (`blocks.3.1.conv_pw.weight`,
or `..._quantized` behind a DequantizeLinear in a QDQ int8 graph). The tensor it reads is its input
before dequantization (the int8 tensor with its QuantizeLinear's scale and zero point) and the tensor it
writes is found by following its output through activations and requantization. The probed copy lists
those tensors as extra graph outputs; onnxruntime then computes the same kernels (its QDQ fusions keep
the quantized tensors they produce: Lite0 int8's logits are bitwise those of the unprobed file,
measured with onnxruntime 1.23).
"""

from __future__ import annotations

from pathlib import Path

from bbdeploy.exporters.probes import Probe, ProbePlan, gated_product, matched_layer

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# what runs on a layer's output before the next layer reads it (the same activations as the float side's,
# stages/layer_points.py ACTIVATIONS)
ACTIVATION_OPS = ("Relu", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "Sigmoid")
# what a hardswish's gate is made of, as converters write it out (exporters/probes.py gated_product)
GATE_OPS = ("HardSigmoid", "Sigmoid", "Add", "Mul", "Div", "Clip", "Relu", "QuantizeLinear", "DequantizeLinear")
PASS_BACK_OPS = ("Pad",)  # a layer's padding belongs to the layer: its input is the unpadded tensor


def layer_probes(artifact: Path, layers: list[str], folder: Path) -> ProbePlan:
    import onnx

    model = onnx.load(str(artifact))
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in graph.initializer}
    plan = ProbePlan(folder / f"probed-{artifact.name}")
    found = {}
    for node in graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1:
            layer = matched_layer(_weight_paths(node.input[1], producer), layers)
            if layer is not None and layer not in found:
                found[layer] = node
    plan.add_layers(layers, found, lambda node: (_read_tensor(node.input[0], producer, initializers),
                                                 _written_tensor(node.output[0], producer, consumers, initializers)),
                    "no ONNX node has this layer's weights (folded into another, or renamed)")
    _write_probed(model, plan, initializers)
    return plan


def _weight_paths(name: str, producer: dict) -> list[str]:
    """Module paths a weight input may name: itself, or what its DequantizeLinear dequantizes."""
    names = [name]
    node = producer.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        names.append(node.input[0])
    paths = []
    for weight in names:
        for suffix in ("_quantized", ""):
            stem = weight.removesuffix(suffix)
            if stem.endswith(".weight"):
                paths.append(stem.removesuffix(".weight"))
    return paths


def _quantized(name: str, scale: str, zero_point: str, initializers: dict) -> Probe:
    from onnx import numpy_helper

    zero = int(numpy_helper.to_array(initializers[zero_point]).reshape(-1)[0]) if zero_point in initializers else 0
    return Probe(name, scale=float(numpy_helper.to_array(initializers[scale]).reshape(-1)[0]), zero_point=zero)


def _read_tensor(name: str, producer: dict, initializers: dict) -> Probe:
    node = producer.get(name)
    while node is not None and node.op_type in PASS_BACK_OPS:
        name = node.input[0]
        node = producer.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        return _quantized(node.input[0], node.input[1], node.input[2] if len(node.input) > 2 else "", initializers)
    return Probe(name)


def _written_tensor(name: str, producer: dict, consumers: dict, initializers: dict) -> Probe:
    """The last tensor of the chain layer -> activations -> QuantizeLinear (-> DequantizeLinear ->
    activation -> QuantizeLinear ...), which is what the next layer reads."""
    probe = Probe(name)
    while True:
        product = gated_product(name, consumers.get(name, []), producer, lambda n: list(n.input),
                                lambda n: n.output[0], lambda n: n.op_type == "Mul", lambda n: n.op_type in GATE_OPS)
        if product is not None:  # hardswish, written as x * HardSigmoid(x)
            name = product
            probe = Probe(name)
            continue
        if len(consumers.get(name, [])) != 1:
            break
        (node,) = consumers[name]
        if node.op_type in ACTIVATION_OPS:
            name = node.output[0]
            probe = Probe(name)
        elif node.op_type == "QuantizeLinear":
            name = node.output[0]
            probe = _quantized(name, node.input[1], node.input[2] if len(node.input) > 2 else "", initializers)
        elif node.op_type == "DequantizeLinear":
            name = node.output[0]  # the probe stays the quantized tensor unless an activation follows
        else:
            break
    return probe


def _write_probed(model, plan: ProbePlan, initializers: dict) -> None:
    """The artifact with every probe as a graph output (a graph input through an Identity node)."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {info.name: info.type.tensor_type.elem_type
             for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    inputs = {tensor.name for tensor in graph.input}
    outputs = {tensor.name for tensor in graph.output}
    renamed = {}
    for probe in plan.probes:
        name = probe.name
        if name in inputs:
            name = f"{probe.name}_probe"
            graph.node.append(helper.make_node("Identity", [probe.name], [name]))
        renamed[probe.name] = name
        if name not in outputs:
            graph.output.append(helper.make_tensor_value_info(name, types.get(probe.name, TensorProto.FLOAT), None))
            outputs.add(name)
    plan.probes[:] = [Probe(renamed[p.name], p.layout, p.scale, p.zero_point) for p in plan.probes]
    onnx.save(model, str(plan.file))
