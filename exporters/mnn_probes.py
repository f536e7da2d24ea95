"""Layer probes of an MNN artifact (see exporters/probes.py).

MNN names its ops after ONNX tensors or its quantizer's counters (`ConvInt811`), never after modules,
and turns linear layers into convolutions; its convolutions keep the order of the model's conv/linear
layers, so they are matched by order (the counts must agree, as for --keep-float in
quantization/mnn.py). A convolution's output already holds its fused activation; its input is found
by walking back through layout conversions and reshapes. The runner asks the Module API for these
tensors by name (targets/runner/runtimes/mnn.py): no copy of the file is written.

An int8 MNN model is not probed: the Module API hands back its int8 feature maps as raw bytes read as
float32 (measured, MNN 3.6.1: a ConvInt8 output reads -2.9e16 and 3e-41), and no scale is exposed.
"""

from __future__ import annotations

from pathlib import Path

from bbdeploy.exporters.probes import LayerProbe, Probe, ProbePlan

LAYER_OPS = ("Convolution", "ConvolutionDepthwise", "Deconvolution")
FOLLOWED_OPS = ("ReLU", "ReLU6", "Sigmoid", "PReLU", "HARDSWISH")
PASS_BACK_OPS = ("ConvertTensor", "Reshape")
INT8_OP_NAME = "ConvInt8"  # what MNN's quantizer names the convolutions it quantized (ConvInt811, DepthwiseConvInt85)


def layer_probes(artifact: Path, layers: list[str], folder: Path) -> ProbePlan:
    from bbdeploy.targets.runner.runtimes.mnn import quiet_import_mnn

    variables = quiet_import_mnn().expr.load_as_list(str(artifact))
    consumers: dict[str, list] = {}
    for var in variables:
        for source in var.inputs:
            consumers.setdefault(source.name, []).append(var)
    convolutions = [var for var in variables if var.op_type in LAYER_OPS]
    plan = ProbePlan(artifact)
    if any(INT8_OP_NAME in var.name for var in convolutions):
        for layer in layers:
            plan.unmatched(layer, "MNN's Python API returns an int8 model's int8 feature maps without their scales "
                                  "(raw bytes read as float32): they cannot be compared")
        return plan
    if len(convolutions) != len(layers):
        for layer in layers:
            plan.unmatched(layer, f"MNN has {len(convolutions)} convolutions for {len(layers)} conv/linear layers: "
                                  "they cannot be matched by order")
        return plan
    for layer, var in zip(layers, convolutions):
        read = _walk_back(var.inputs[0])
        written = _walk_on(var, consumers)
        plan.layers.append(LayerProbe(layer, plan.probe_index(Probe(read.name)), plan.probe_index(Probe(written.name))))
    return plan


def _walk_back(var):
    """Through layout conversions and reshapes, short of the model's input (which MNN cannot return)."""
    while var.op_type in PASS_BACK_OPS and var.inputs and var.inputs[0].op_type != "Input":
        var = var.inputs[0]
    return var


def _walk_on(var, consumers: dict):
    while len(consumers.get(var.name, [])) == 1 and consumers[var.name][0].op_type in FOLLOWED_OPS:
        var = consumers[var.name][0]
    return var
