"""Int8 TFLite through PT2E quantization with litert-torch's quantizer, then litert-torch conversion."""

from __future__ import annotations

from pathlib import Path

import torch


def quantize(model: torch.nn.Module, sample: torch.Tensor, out_path: Path, inputs, *, layout: str = "nhwc",
             method: str = "minmax") -> dict:
    """Calibrate `model` on `inputs` (float32 NCHW arrays) and write a static int8 .tflite.

    Weights are per-channel symmetric int8, activations per-tensor int8; input and output stay
    float (QUANTIZE/DEQUANTIZE at the boundary).
    """
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if method != "minmax":
        from bbdeploy.errors import BBDeployError

        raise BBDeployError(f"--calib-method {method} is not available for tflite; pass minmax")
    to_layout = (lambda x: x.permute(0, 2, 3, 1).contiguous()) if layout == "nhwc" else (lambda x: x)
    if layout == "nhwc":
        model = litert_torch.to_channel_last_io(model, args=[0])
    sample = to_layout(sample)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model.eval(), (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for array in inputs:
            prepared(to_layout(torch.from_numpy(array)))
    converted = convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out_path))
    return {"tool": "litert-torch PT2E", "weights": "int8 per-channel symmetric",
            "activations": "int8 per-tensor", "io": "float"}
