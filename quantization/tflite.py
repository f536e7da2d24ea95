"""Int8 TFLite through PT2E quantization with litert-torch's quantizer, then litert-torch conversion.

litert-torch's quantizer treats ReLU6 (`hardtanh`) as an op that shares its input's quantization:
a convolution's output is then quantized over its whole pre-clamp range and ReLU6 inherits that
scale, leaving few of the 256 levels for [0, 6]. `EdgeQuantizer` annotates conv -> ReLU6 the way
litert-torch annotates conv -> ReLU: nothing on the convolution's output, a fresh observer after
the clamp, so TFLite fuses the activation into the convolution with a tight output range.
"""

from __future__ import annotations

from pathlib import Path

import torch

CONVOLUTIONS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
CLAMPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)


def _annotate_conv_clamp(graph_module, config) -> None:
    """conv -> hardtanh(0, 6): quantize the clamp's output, not the convolution's."""
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for clamp in graph_module.graph.nodes:
        if clamp.op != "call_function" or clamp.target not in CLAMPS:
            continue
        conv = clamp.args[0]
        if not isinstance(conv, torch.fx.Node) or conv.target not in CONVOLUTIONS or len(conv.users) != 1:
            continue
        inputs = {conv.args[0]: utils.get_input_act_qspec(config), conv.args[1]: utils.get_weight_qspec(config)}
        partition = [clamp, conv, conv.args[1]]
        bias = conv.args[2] if len(conv.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            inputs[bias] = utils.get_bias_qspec(config)
            partition.append(bias)
        if utils._is_annotated(partition):
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clamp.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=utils.get_output_act_qspec(config), _annotated=True)
        utils._mark_nodes_as_annotated(partition)


def edge_quantizer():
    """litert-torch's PT2E quantizer (per-channel symmetric weights) with the conv -> ReLU6 fix."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class EdgeQuantizer(PT2EQuantizer):
        def annotate(self, model):
            _annotate_conv_clamp(model, self.global_config)
            return super().annotate(model)

    return EdgeQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def quantize(model: torch.nn.Module, sample: torch.Tensor, out_path: Path, inputs, *, layout: str = "nhwc",
             method: str = "minmax") -> dict:
    """Calibrate `model` on `inputs` (float32 NCHW arrays) and write a static int8 .tflite.

    Weights are per-channel symmetric int8, activations per-tensor int8. litert-torch folds the
    input's quantization into the model, so the input (and for fully-integer graphs the output) is
    int8; the manifest records its scale and zero point. Float I/O by default is still to do.
    """
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if method != "minmax":
        from bbdeploy.errors import BBDeployError

        raise BBDeployError(f"--calib-method {method} is not available for tflite; pass minmax")
    to_layout = (lambda x: x.permute(0, 2, 3, 1).contiguous()) if layout == "nhwc" else (lambda x: x)
    if layout == "nhwc":
        model = litert_torch.to_channel_last_io(model, args=[0])
    sample = to_layout(sample)
    quantizer = edge_quantizer()
    graph = torch.export.export(model.eval(), (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for array in inputs:
            prepared(to_layout(torch.from_numpy(array)))
    converted = convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out_path))
    return {"tool": "litert-torch PT2E", "quantizer": "EdgeQuantizer (conv -> ReLU6 annotated as one)",
            "weights": "int8 per-channel symmetric", "activations": "int8 per-tensor"}
