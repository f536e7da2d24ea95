"""The PT2E flow that the TFLite and ExecuTorch quantizers share (torchao's `prepare_pt2e`/`convert_pt2e`):
export, annotate with the target's quantizer, observe the calibration batches, fold the observed ranges
into quantize/dequantize pairs. What each target adds (its own annotations, its converter) stays in its
own module."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from itertools import islice

import torch

CONVOLUTIONS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
LINEARS = (torch.ops.aten.linear.default,)
ADDS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)
CLAMPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)


def calibrated(model: torch.nn.Module, quantizer, calibration, *, subset_size: int, sample: torch.Tensor,
               to_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
               fold_quantize: bool = True,
               rewrites: Sequence[Callable[[torch.fx.GraphModule], None]] = ()) -> torch.fx.GraphModule:
    """`model` exported at `sample`, observed on `subset_size` batches of `calibration` (float32 NCHW
    arrays, fed through `to_input`), with its quantize/dequantize pairs in place (`fold_quantize`: the
    weights stored quantized; litert-torch wants them float and folds them itself). `rewrites` change the
    exported graph in place before it is annotated (the forms a target's converter takes)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(model.eval(), (sample,)).module()
    for rewrite in rewrites:
        rewrite(graph)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for array in islice(calibration, subset_size):
            prepared(to_input(torch.from_numpy(array)))
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def with_activation_observer(config, method: str):
    """A PT2E quantization config whose activations are observed as `method` says: `mse` a
    HistogramObserver (the range that minimises the L2 quantization error), `minmax` the plain range."""
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    observer = {"mse": HistogramObserver, "minmax": MinMaxObserver}[method]
    spec = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=spec, output_activation=spec)


def keep_float(graph_module: torch.fx.GraphModule, layers: list[str]) -> None:
    """Mark the conv/linear nodes of `layers` annotated-without-qspecs, so no annotator quantizes them
    (a node's module path may sit under a wrapper, e.g. litert-torch's NHWC one: `wrapped.<path>`)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in graph_module.graph.nodes:
        stack = list(node.meta.get("nn_module_stack", {}).values())
        if node.op != "call_function" or not stack or node.target not in (*CONVOLUTIONS, *LINEARS):
            continue
        path = stack[-1][0]
        if any(path == layer or path.endswith("." + layer) for layer in layers):
            node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)


def annotate_conv_clamp(graph_module: torch.fx.GraphModule, config) -> None:
    """conv -> hardtanh(0, 6) (ReLU6): quantize the clamp's output, not the convolution's.

    Both litert-torch's quantizer and ExecuTorch's XNNPACK one treat ReLU6 as an op that shares its
    input's quantization: the convolution's output is then quantized over its whole pre-clamp range and
    ReLU6 inherits that scale, leaving few of the 256 levels for [0, 6]. Annotated as conv -> ReLU is
    (nothing on the convolution's output, a fresh observer after the clamp), the converter fuses the
    clamp into the convolution with a tight output range.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for clamp in graph_module.graph.nodes:
        if clamp.op != "call_function" or clamp.target not in CLAMPS:
            continue
        conv = clamp.args[0]
        if not isinstance(conv, torch.fx.Node) or conv.target not in CONVOLUTIONS or len(conv.users) != 1:
            continue
        inputs = {conv.args[0]: config.input_activation, conv.args[1]: config.weight}
        partition = [clamp, conv, conv.args[1]]
        bias = conv.args[2] if len(conv.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            inputs[bias] = config.bias
            partition.append(bias)
        if is_annotated(partition):
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clamp.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=config.output_activation,
                                                                       _annotated=True)
        mark_annotated(partition)


def annotate_adds(graph_module: torch.fx.GraphModule, config) -> None:
    """Every tensor + tensor: both inputs and the sum quantized, so the runtime runs an int8 add.

    litert-torch's own add annotator misses adds whose input is another add (chained residuals in
    EfficientNet stages), leaving DEQUANTIZE -> float ADD -> QUANTIZE in the graph.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for add in graph_module.graph.nodes:
        if add.op != "call_function" or add.target not in ADDS or is_annotated([add]):
            continue
        inputs = [a for a in add.args[:2] if isinstance(a, torch.fx.Node)]
        if len(inputs) != 2:
            continue
        add.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={a: config.input_activation for a in inputs}, output_qspec=config.output_activation,
            _annotated=True)


def is_annotated(nodes: list[torch.fx.Node]) -> bool:
    """Whether an annotator claimed any of `nodes` already (PT2E's `_annotated` flag)."""
    return any(getattr(node.meta.get("quantization_annotation"), "_annotated", False) for node in nodes)


def mark_annotated(nodes: list[torch.fx.Node]) -> None:
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in nodes:
        node.meta.setdefault("quantization_annotation", QuantizationAnnotation())._annotated = True
