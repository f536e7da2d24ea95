"""ONNX's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py),
and its quantizer's premise (GPTQ weights kept exactly)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.quantization import onnx as onnx_quantizer
from bbdeploy.quantization.bias_correction import rounded
from bbdeploy.quantization.rounding import gptq_rounded

ONNX_LEVELS = TARGETS["onnx"].int8.weight_levels
LITE0_INT8 = (0.920, 1.0, 0.9955, 20.4)  # measured as tests/test_int8.py says


def check_fp32_graph(row: dict) -> None:
    assert row["ops"].get("Conv", 0) > 0 and "QuantizeLinear" not in row["ops"], row["ops"]


def check_int8_graph(row: dict, backbone: str) -> None:
    # QDQ: every quantized tensor behind a QuantizeLinear, read through a DequantizeLinear
    assert row["ops"]["QuantizeLinear"] > 0 and row["ops"]["DequantizeLinear"] > 0, (backbone, row["ops"])


def check_fp16(row: dict) -> None:
    assert row["input"]["dtype"] == "float16"  # ONNX fp16 takes half-precision input


def check_keep_float(row: dict) -> None:
    """test_int8's keep-float export (MobileNetV2, features.0 and classifier.1 in float): those two layers
    keep their float32 weight initializers, the next conv reads a dequantized one."""
    import onnx

    graph = onnx.load(row["artifact"]).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    layers = [n.input[1] for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert layers[0] == "features.0.0.weight" and layers[-1] == "classifier.1.weight"
    assert {layers[0], layers[-1]} <= float_weights and layers[1] not in float_weights


def exec_precision_reported(requested: str | None) -> None:
    return None  # onnxruntime has no execution-precision setting: it computes in the file's own


def check_local_bench_row(row: dict) -> None:
    assert row["exec_precision"] is None


def check_unloadable_file_error(error: str) -> None:
    """test_bench's broken file: onnxruntime's words for it."""
    assert error.startswith("InvalidProtobuf") or "protobuf" in error.lower(), error


def test_onnxruntime_keeps_gptq_weights_exactly(tmp_path):
    """The premise of handing onnxruntime pre-rounded float weights: its 7-bit per-channel
    quantization (reduce_range) maps them back to the same integers."""
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU6(),
                          nn.Conv2d(8, 4, 1)).eval()
    batches = [np.random.default_rng(i).random((2, 3, 12, 12), dtype=np.float32) for i in range(3)]
    prepared = gptq_rounded(model, lambda: batches, levels=ONNX_LEVELS)
    assert not torch.allclose(prepared[4].weight, rounded(model[4].weight, ONNX_LEVELS))
    int8 = tmp_path / "m_int8.onnx"
    onnx_quantizer.quantize(prepared, [b[:1] for b in batches], subset_size=len(batches),
                            sample=torch.from_numpy(batches[0][:1]), out_path=int8, layout="nchw", method="minmax",
                            io="float", keep_float=[], bias_correction=False)
    initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(int8)).graph.initializer}
    for index in (0, 2, 4):
        name = f"{index}.weight"
        q, scale = initializers[f"{name}_quantized"], initializers[f"{name}_scale"]
        dequantized = q.astype(np.float32) * scale.reshape(-1, *[1] * (q.ndim - 1))
        np.testing.assert_allclose(dequantized, prepared[index].weight.detach().numpy(), rtol=1e-6, atol=1e-7)
