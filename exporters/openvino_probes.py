"""Layer probes of an OpenVINO IR (see exporters/probes.py).

OpenVINO's PyTorch frontend names each node after the module that made it
(`__module.blocks.3.1.conv_pw/aten::_convolution/Convolution`), which gives the layer. A layer's input
is the Convolution/MatMul's input (NNCF's FakeQuantize output in an int8 IR: already in the float
domain), its output the node's output followed through the bias add, activations and FakeQuantize. The
runner adds those node outputs as model outputs before compiling (targets/runner/runtimes/openvino.py),
so no copy of the IR is written; a probe is `friendly_name:port`.
"""

from __future__ import annotations

import re
from pathlib import Path

from bbdeploy.exporters.probes import Probe, ProbePlan, by_order, matched_layer

LAYER_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")
# bias and batch-norm arithmetic with a constant, activations, fake quantization
FOLLOWED_OPS = ("Clamp", "Relu", "HSwish", "HSigmoid", "Sigmoid", "PRelu", "FakeQuantize")
CONSTANT_OPERAND_OPS = ("Add", "Multiply", "Subtract")
PASS_BACK_OPS = ("Pad",)
MODULE = re.compile(r"^__module\.([^/]+)/")


def layer_probes(artifact: Path, layers: list[str], folder: Path) -> ProbePlan:
    import openvino as ov

    model = ov.Core().read_model(str(artifact))
    found, unnamed = {}, []
    for node in model.get_ordered_ops():
        if node.get_type_name() in LAYER_OPS and not _is_constant(node.input(1).get_source_output().get_node()):
            continue  # a MatMul of two activations is no layer
        if node.get_type_name() in LAYER_OPS:
            match = MODULE.match(node.get_friendly_name())
            layer = matched_layer([match.group(1)], layers) if match else None
            if layer is None or layer in found:
                unnamed.append(node)
            else:
                found[layer] = node
    found = by_order(found, unnamed, layers)
    plan = ProbePlan(artifact)
    plan.add_layers(layers, found, lambda node: (_probe(_walk_back(node.input(0).get_source_output())),
                                                 _probe(_walk_on(node.output(0)))),
                    "no OpenVINO node was made by this layer")
    return plan


def _is_constant(node) -> bool:
    """A weight: a Constant, possibly behind its decompression (Convert, Multiply by a scale, ...)."""
    while node.get_type_name() != "Constant":
        if node.get_type_name() not in ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "FakeQuantize"):
            return False
        node = node.input(0).get_source_output().get_node()
    return True


def _walk_back(output):
    while output.get_node().get_type_name() in PASS_BACK_OPS:
        output = output.get_node().input(0).get_source_output()
    return output


def _walk_on(output):
    while len(output.get_target_inputs()) == 1:
        (target,) = output.get_target_inputs()
        node = target.get_node()
        kind = node.get_type_name()
        if kind in CONSTANT_OPERAND_OPS:
            others = [node.input(i).get_source_output().get_node() for i in range(node.get_input_size())
                      if i != target.get_index()]
            if not all(_is_constant(other) for other in others):
                break  # a residual add: another layer's tensor joins here
        elif kind not in FOLLOWED_OPS:
            break
        output = node.output(0)
    return output


def _probe(output) -> Probe:
    return Probe(f"{output.get_node().get_friendly_name()}:{output.get_index()}")
