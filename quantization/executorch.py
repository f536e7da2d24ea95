"""Int8 ExecuTorch through PT2E with ExecuTorch's XNNPACK quantizer, lowered to the XNNPACK delegate.

Per-channel symmetric int8 weights (+-127), per-tensor asymmetric int8 activations: the scheme XNNPACK's
QC8 kernels run. The XNNPACK quantizer has the ReLU6 gap litert-torch's has (it quantizes a
convolution's pre-clamp output), closed by the same shared annotation (pt2e.py).

Zero pads (EfficientNet-Lite's TF "same" padding) are quantized on their input's grid
(`annotate_zero_pads`, `drop_requantize_after_zero_pads`): left to the XNNPACK quantizer they ran in
float, a dequantize and a quantize around each (Lite0 int8: 10 Converts inside XNNPACK, 2 now; p50 6.80
-> 5.85 ms in one interleaved bench on a loaded VNNI VM, the same parity figures).

The fp32 lowering's rewrite of counted-padding average pools as zero pad + unpadded pool
(exporters/executorch.py) is applied before annotation too. Before the zero pads were quantized on
their input's grid, XNNPACK 1.5 refused that pad at load ("Failed to create StaticConstantPad node ...
xnn_status_invalid_parameter"), so ShuffleNet V1's three pools ran on the portable kernels in 4
delegates; now it loads: one delegate, the same outputs, p50 1.31 -> 0.47 ms
(ShuffleNet V1 g3, random weights, 64 px, 1 thread, 300 interleaved runs, VNNI VM).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import pt2e


def xnnpack_quantizer(method: str, keep_float: list[str] = ()):
    """ExecuTorch's XNNPACKQuantizer with bbdeploy's conv -> ReLU6 and add annotations first, and the
    layers of `keep_float` left to it unannotated (they stay float inside XNNPACK)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)

    config = pt2e.with_activation_observer(get_symmetric_quantization_config(is_per_channel=True), method)

    class BBDeployXNNPACKQuantizer(XNNPACKQuantizer):
        def annotate(self, model):
            pt2e.keep_float(model, list(keep_float))
            pt2e.annotate_conv_clamp(model, config)
            pt2e.annotate_adds(model, config)
            annotate_zero_pads(model, config)
            return super().annotate(model)

    return BBDeployXNNPACKQuantizer().set_global(config)


ZERO_PADS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)


def _is_zero_pad(node: torch.fx.Node) -> bool:
    """A constant pad with zeros that only grows its input (a negative amount crops)."""
    if node.op != "call_function" or node.target not in ZERO_PADS or not isinstance(node.args[0], torch.fx.Node):
        return False
    if node.target == torch.ops.aten.pad.default:
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
    else:
        mode, value = "constant", node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    return mode == "constant" and not value and all(amount >= 0 for amount in node.args[1])


def annotate_zero_pads(graph_module: torch.fx.GraphModule, config) -> None:
    """A zero pad (TF "same" padding before EfficientNet-Lite's stride-2 convolutions) quantized with its
    input's parameters: the pad of an int8 tensor is then the same int8 tensor framed by its zero point
    (0 is exact on an asymmetric grid), and after `drop_requantize_after_zero_pads` XNNPACK runs it in
    int8 with the convolution it feeds. Unannotated, it ran in float between a dequantize and a quantize."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    for pad in graph_module.graph.nodes:
        if not _is_zero_pad(pad) or pt2e.is_annotated([pad]):
            continue
        source = pad.args[0]
        pad.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={source: config.input_activation}, output_qspec=SharedQuantizationSpec((source, pad)),
            _annotated=True)


def drop_requantize_after_zero_pads(graph_module: torch.fx.GraphModule) -> int:
    """dequantize -> zero pad -> quantize -> dequantize (the same parameters) -> convolution becomes
    dequantize -> zero pad -> convolution: the requantization of a tensor that is already on its grid is
    the identity, and XNNPACK's partitioner takes the pad into the convolution's partition in this form
    (dequantize -> constant_pad_nd -> convolution). Returns how many it dropped."""
    quantize, dequantize = (torch.ops.quantized_decomposed.quantize_per_tensor.default,
                            torch.ops.quantized_decomposed.dequantize_per_tensor.default)
    dropped = 0
    for pad in list(graph_module.graph.nodes):
        if not _is_zero_pad(pad) or pad.args[0].target != dequantize or len(pad.users) != 1:
            continue
        (requantize,) = pad.users
        if requantize.target != quantize or tuple(requantize.args[1:]) != tuple(pad.args[0].args[1:]):
            continue
        if not all(user.target == dequantize and tuple(user.args[1:]) == tuple(requantize.args[1:])
                   and all(reader.target in pt2e.CONVOLUTIONS for reader in user.users)
                   for user in requantize.users):
            continue  # only before a convolution: the pattern XNNPACK folds (another op would read it in float)
        for user in list(requantize.users):
            user.replace_all_uses_with(pad)
            graph_module.graph.erase_node(user)
        graph_module.graph.erase_node(requantize)
        dropped += 1
    graph_module.graph.lint()
    graph_module.recompile()
    return dropped


def quantize(model: torch.nn.Module, calibration, *, subset_size: int, sample: torch.Tensor, out_path: Path,
             layout: str, method: str, io: str, keep_float: list[str], bias_correction: bool) -> dict:
    """Calibrate `model` on `subset_size` batches of `calibration` and write a static int8 `.pte`
    (float32 input and output, quantized at the first and last XNNPACK node)."""
    from bbdeploy.exporters.executorch import delegation, lower, pad_average_pools

    quantizer = xnnpack_quantizer(method, keep_float)
    converted = pt2e.calibrated(model, quantizer, calibration, subset_size=subset_size, sample=sample,
                                rewrites=(pad_average_pools,))
    drop_requantize_after_zero_pads(converted)
    with torch.no_grad():
        program = torch.export.export(converted, (sample,))
    Path(out_path).write_bytes(lower(program))
    return {"tool": "ExecuTorch PT2E", "quantizer": "XNNPACKQuantizer (conv -> ReLU6 and adds annotated)",
            "weights": "int8 per-channel symmetric", "activations": f"int8 per-tensor ({method} ranges)",
            "io": io, "delegation": delegation(out_path)}
