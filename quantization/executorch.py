"""Int8 ExecuTorch through PT2E with ExecuTorch's XNNPACK quantizer, lowered to the XNNPACK delegate.

Per-channel symmetric int8 weights (+-127), per-tensor asymmetric int8 activations: the scheme XNNPACK's
QC8 kernels run. The XNNPACK quantizer has the ReLU6 gap litert-torch's has (it quantizes a
convolution's pre-clamp output), closed by the same shared annotation (pt2e.py).

The fp32 rewrite of counted-padding average pools (exporters/executorch.py) is not applied here: in
int8 XNNPACK 1.5 refuses the zero pad at load (ShuffleNet V1: "Failed to create StaticConstantPad node
... xnn_status_invalid_parameter"), so those pools stay on the portable kernels (correct, slower).
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
            return super().annotate(model)

    return BBDeployXNNPACKQuantizer().set_global(config)


def quantize(model: torch.nn.Module, calibration, *, subset_size: int, sample: torch.Tensor, out_path: Path,
             layout: str, method: str, io: str, keep_float: list[str], bias_correction: bool) -> dict:
    """Calibrate `model` on `subset_size` batches of `calibration` and write a static int8 `.pte`
    (float32 input and output, quantized at the first and last XNNPACK node)."""
    from bbdeploy.exporters.executorch import delegation, lower

    quantizer = xnnpack_quantizer(method, keep_float)
    converted = pt2e.calibrated(model, quantizer, calibration, subset_size=subset_size, sample=sample)
    with torch.no_grad():
        program = torch.export.export(converted, (sample,))
    Path(out_path).write_bytes(lower(program))
    return {"tool": "ExecuTorch PT2E", "quantizer": "XNNPACKQuantizer (conv -> ReLU6 and adds annotated)",
            "weights": "int8 per-channel symmetric", "activations": f"int8 per-tensor ({method} ranges)",
            "io": io, "delegation": delegation(out_path)}
