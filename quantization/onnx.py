"""Int8 ONNX with onnxruntime's static quantization (QDQ, per-channel weights).

Measured on EfficientNet-Lite0 (ImageNet weights, 300 photo crops, AVX2 CPU without VNNI): the stock
U8S8 kernels saturate 16-bit pair sums (VPMADDUBSW), which alone costs ~25 points of top-1
agreement; 7-bit weights (`reduce_range`) avoid it and keep int8 faster than fp32. The model is
first put through `quant_pre_process` (shape inference + optimisation): without it the same
quantization ran slower than fp32.
"""

from __future__ import annotations

from pathlib import Path

# onnxruntime rounds 7-bit (reduce_range) per-channel symmetric weights to nearest; given weights
# already on that grid (GPTQ) it keeps them. Lite0: nearest 0.714 agreement / cosine 0.960,
# nearest + bias correction 0.848 / 0.9886, error-aware GPTQ 0.911 / 0.9960.


def nodes_of_layers(model_path: Path, layers: list[str]) -> list[str]:
    """The ONNX nodes that compute `layers` (found by their weight initializer, named after the module)."""
    import onnx

    weights = {f"{layer}.weight" for layer in layers}
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if len(node.input) > 1 and node.input[1] in weights]


def quantize(model, calibration, *, subset_size: int, sample, out_path: Path, layout: str, method: str,
             io: str, keep_float: list[str], bias_correction: bool) -> dict:
    """Export `model` to float ONNX next to `out_path`, calibrate it on `subset_size` batches of
    `calibration` and write the int8 QDQ model; returns the settings used, for the manifest.
    (`bias_correction` was applied to `model` already: onnxruntime has none of its own.)"""
    from itertools import islice

    from bbdeploy.exporters.onnx import convert

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path = out_path.with_name(f"float_{out_path.name}")
    convert(model, sample, fp32_path, precision="fp32", layout=layout)
    prepared = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    excluded = nodes_of_layers(prepared, list(keep_float))
    if len(excluded) != len(keep_float):
        raise RuntimeError(f"found {len(excluded)} ONNX nodes for the {len(keep_float)} --keep-float layers")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = ({"input": array} for array in islice(calibration, subset_size))

        def get_next(self):
            return next(self.samples, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    settings = {"quant_format": "QDQ", "per_channel": True, "activation_type": "QUInt8",
                "weight_type": "QInt8", "reduce_range": True, "calibrate_method": method}
    quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                    calibrate_method=methods[method], nodes_to_exclude=excluded)
    prepared.unlink(missing_ok=True)
    return settings

