"""ONNX's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py),
and its quantizer's premise (GPTQ weights kept exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


@pytest.mark.long(seconds=20)
@pytest.mark.parametrize("name", ["shufflenet_v1_g3", "efficientnet_lite0"])  # slices of one tensor; TF-same pads
def test_the_export_equals_torch_optimized_export_without_the_skipped_rule(name, tmp_path):
    """exporters/onnx.py runs onnxscript's optimizer less SlicesSplit (quadratic on ShuffleNet V1's
    slices); torch.onnx.export(optimize=True) runs all of it. The two files have the same nodes, in the
    same order, and compute the same (benchmarks/onnx_export.py compares the whole zoo)."""
    import onnx

    import bbdeploy
    from bbdeploy.exporters import onnx as onnx_exporter
    from bbdeploy.quantization.bias_correction import fold_batchnorm

    model = bbdeploy.create_backbone(name).eval()
    model = fold_batchnorm(model.deploy_form() if hasattr(model, "deploy_form") else model)
    sample = torch.zeros(1, 3, 64, 64)
    torch.onnx.export(model, (sample,), str(tmp_path / "torch.onnx"), input_names=["input"], output_names=["logits"],
                      opset_version=onnx_exporter.OPSET, dynamo=True, optimize=True, external_data=False)
    onnx_exporter._RECENT.clear()
    onnx_exporter.convert(model, sample, tmp_path / "ours.onnx")
    graphs = [onnx.load(str(tmp_path / f)).graph for f in ("torch.onnx", "ours.onnx")]
    nodes = [[(n.op_type, list(n.input), list(n.output)) for n in graph.node] for graph in graphs]
    assert nodes[0] == nodes[1]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    import onnxruntime as ort

    outputs = [ort.InferenceSession(str(tmp_path / f)).run(None, {"input": x})[0] for f in ("torch.onnx", "ours.onnx")]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def break_layer(path: Path, layer: str) -> None:
    """Multiply the weight scales of `layer` by 3 in the QDQ file, as a hand edit would (for drift --layers)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    (scale,) = [init for init in model.graph.initializer if init.name == f"{layer}.weight_scale"]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 3, scale.name))
    onnx.save(model, str(path))
