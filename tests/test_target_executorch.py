"""ExecuTorch's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py),
and delegation read back from the `.pte` against ExecuTorch's own count."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bbdeploy.exporters import executorch as exporter
from bbdeploy.stages.manifest import read_manifest
from tests.conftest import TINY

LITE0_INT8 = (0.911, 1.0, 0.9983, 24.5)  # measured as tests/test_int8.py says (AVX2 CPU, see the README)
# fp16 Lite0: 16.0 MB, not half of fp32's 18.7 MB: ExecuTorch 1.5's XNNPACK lowering stores convolution
# weights and biases in fp32 even in an fp16 program (op_conv2d.py, force_fp32=True; XNNPACK converts them
# when it packs), only fully connected weights in fp16 (measured on MobileNetV3-Small: 1.62 M constants
# fp16, 0.92 M fp32)
FP16_MAX_BYTES = 16.5e6
# drift --layers: no tensor inside XNNPACK's delegate can be fetched (exporters/executorch_probes.py)
LAYERS_UNPROBED = "ExecuTorch's XNNPACK delegate returns only its outputs"


def _delegation(row: dict) -> dict:
    return exporter.delegation(Path(row["artifact"]))


def check_lite0_int8_against(row: dict, others: list[tuple[float, float, float, float]]) -> None:
    """GPTQ weights on XNNPACK's grid: within 0.002 of the best other target's cosine (in one run on the AVX2
    CPU: executorch 0.9983, mnn 0.9972, tflite 0.9962, onnx 0.9956, openvino 0.9915)."""
    assert row["parity"]["cosine"] >= max(cosine for _, _, cosine, _ in others) - 0.002, row["parity"]


def check_fp32_graph(row: dict) -> None:
    # NCHW float input; the whole graph in one XNNPACK delegate, nothing on the portable kernels
    assert row["input"]["shape"] == [1, 3, TINY, TINY] and row["input"]["dtype"] == "float32"
    found = _delegation(row)
    assert found["delegates"] == 1 and found["portable_ops"] == {}, found
    assert row["ops"]["xnnpack:Conv2d"] > 0 and not any(op.startswith("portable:") for op in row["ops"]), row["ops"]


def check_int8_graph(row: dict, backbone: str) -> None:
    # every convolution and fully connected layer in XNNPACK with int8 weights, the whole graph in one
    # delegate (ShuffleNet V1's counted-padding pools included: quantization/executorch.py)
    found = _delegation(row)
    assert found["undelegated_convolutions"] == 0 and found["float_layers"] == 0, (backbone, found)
    assert found["delegates"] == 1 and found["portable_ops"] == {}, (backbone, found)
    assert found["xnnpack_nodes"]["Conv2d"] > 0 and found["xnnpack_nodes"].get("Convert", 0) >= 2, (backbone, found)
    assert read_manifest(Path(row["manifest"]))["quantization"]["delegation"] == found
    assert row["input"]["dtype"] == "float32" and row["output"]["dtype"] == "float32"


def check_fp16(row: dict) -> None:
    # half inside XNNPACK, float32 at the boundary: two portable casts, one delegate
    found = _delegation(row)
    assert row["input"]["dtype"] == "float32" and found["delegates"] == 1, found
    assert found["portable_ops"] == {"dim_order_ops::_to_dim_order_copy": 2}, found


def check_keep_float(row: dict) -> None:
    """test_int8's keep-float export (MobileNetV2, features.0 and classifier.1 in float): exactly those two
    layers keep float weights inside XNNPACK."""
    assert _delegation(row)["float_layers"] == 2


def exec_precision_reported(requested: str | None) -> None:
    return None  # ExecuTorch has no execution-precision setting: XNNPACK computes in the program's own


def check_local_bench_row(row: dict) -> None:
    assert row["exec_precision"] is None and row["runtime"] == "executorch"
    assert row["xnnpack"]["applied"] is True and row["xnnpack"]["partitions"] >= 1, row["xnnpack"]
    if row["precision"] == "fp32":
        assert row["xnnpack"] == {"applied": True, "partitions": 1, "portable_ops": {}, "undelegated_convolutions": 0}


def _program(model: nn.Module, sample: torch.Tensor, partitioned: bool):
    """(the edge program, its .pte bytes), lowered to XNNPACK or left to the portable kernels."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(torch.export.export(model.eval(), (sample,)),
                                       partitioner=[XnnpackPartitioner()] if partitioned else None)
    return edge, edge.to_executorch().buffer


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_delegation_read_from_the_file_matches_executorchs_own_count(tmp_path):
    """The XNNPACK nodes counted in the written program against ExecuTorch's `get_delegation_info` on
    the edge program it came from (an independent reading of the same lowering)."""
    from executorch.devtools.backend_debug import get_delegation_info

    edge, data = _program(_small_net(), torch.randn(1, 3, 12, 12), partitioned=True)
    path = tmp_path / "small.pte"
    path.write_bytes(data)
    info = get_delegation_info(edge.exported_program().graph_module)
    delegated = {row.op_type: row.occurrences_in_delegated_graphs
                 for row in info.get_operator_delegation_dataframe().itertuples()}
    found = exporter.delegation(path)
    assert found["delegates"] == info.num_delegated_subgraphs == 1 and found["portable_ops"] == {}
    nodes = found["xnnpack_nodes"]
    assert nodes["Conv2d"] + nodes.get("DepthwiseConv2d", 0) == delegated["aten_convolution_default"] == 2
    assert nodes["FullyConnected"] == delegated["aten_linear_default"] == 1
    assert found["float_layers"] == 3  # fp32: all three weighted layers float


def test_a_program_left_on_the_portable_kernels_is_reported_and_warned_about(tmp_path):
    """No XNNPACK partitioner: both convolutions run on the portable kernels; the file says so, the
    runner says XNNPACK was not applied, and bench warns that it is slow."""
    from bbdeploy.targets.bench import add_warnings
    from bbdeploy.targets.runner import load

    _, data = _program(_small_net(), torch.randn(1, 3, 12, 12), partitioned=False)
    path = tmp_path / "portable.pte"
    path.write_bytes(data)
    found = exporter.delegation(path)
    assert found["delegates"] == 0 and found["undelegated_convolutions"] == 2, found
    runner = load(path, threads=1)
    assert runner.xnnpack["applied"] is False and runner.xnnpack["undelegated_convolutions"] == 2
    row = {"artifact": str(path), "latency_ms": {"p50": 1.0, "p99": 1.0}, "xnnpack": runner.xnnpack, "warnings": []}
    entry = {"precision": "int8", "backbone": "small", "width": None, "target": "executorch", "input_size": 12,
             "batch": 1, "layout": "nchw"}
    add_warnings([row], [entry])
    assert any("XNNPACK delegate was not applied" in w for w in row["warnings"]), row["warnings"]
    assert any("2 convolutions run outside XNNPACK" in w for w in row["warnings"]), row["warnings"]


class _PaddedPools(nn.Module):
    """ShuffleNet V1's pool (3x3, stride 2, padding 1, the padding counted) beside one that does not count it."""

    def forward(self, x):
        counted = nn.functional.avg_pool2d(x, 3, stride=2, padding=1)
        return counted + nn.functional.avg_pool2d(x, 3, 2, 1, False, False)


def test_padded_average_pools_compute_the_same_and_run_in_xnnpack(tmp_path):
    """The counted-padding pool as zero-pad + unpadded pool: exactly PyTorch's numbers (the padded zeros
    add nothing, the divisor is the window either way), and XNNPACK takes it (it refuses the original)."""
    x = torch.randn(1, 4, 9, 9)
    graph = torch.export.export(_PaddedPools(), (x,)).module()
    exporter.pad_average_pools(graph)
    assert torch.equal(graph(x), _PaddedPools()(x))
    path = tmp_path / "pools.pte"
    exporter.convert(_PaddedPools(), x, path)
    found = exporter.delegation(path)
    assert found["delegates"] == 1 and found["portable_ops"] == {}, found
    assert found["xnnpack_nodes"]["AvgPooling2d"] == 2 and found["xnnpack_nodes"]["StaticConstantPad"] == 1, found


class _SamePadded(nn.Module):
    """EfficientNet-Lite's stride-2 convolution: TF "same" padding as a zero pad before an unpadded conv."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.down = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.act, self.pool, self.head = nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x):
        x = self.act(self.down(nn.functional.pad(self.act(self.stem(x)), (0, 1, 0, 1))))
        return self.head(self.pool(x).flatten(1))


def test_a_zero_pad_stays_int8_inside_xnnpack(tmp_path):
    """The pad quantized on its input's grid and the requantization after it dropped: the same numbers
    (a tensor already on its grid, framed by its zero point) and no float detour inside XNNPACK, so the
    program's only Converts are the input's quantize and the output's dequantize (Lite0 had 10 with its
    5 pads in float; 2 now)."""
    import numpy as np

    from bbdeploy.quantization import executorch as quantizer, pt2e

    x = torch.rand(1, 3, 16, 16)
    calibration = [np.random.default_rng(seed).random((1, 3, 16, 16), dtype=np.float32) for seed in range(4)]
    converted = pt2e.calibrated(_SamePadded().eval(), quantizer.xnnpack_quantizer("minmax"), calibration,
                                subset_size=4, sample=x)
    before = converted(x)
    assert quantizer.drop_requantize_after_zero_pads(converted) == 1
    assert torch.equal(converted(x), before)
    path = tmp_path / "padded.pte"
    quantizer.quantize(_SamePadded(), calibration, subset_size=4, sample=x, out_path=path, layout="nchw",
                       method="minmax", io="float", keep_float=[], bias_correction=False)
    found = exporter.delegation(path)
    assert found["delegates"] == 1 and found["portable_ops"] == {}, found
    assert found["xnnpack_nodes"]["Convert"] == 2 and found["xnnpack_nodes"]["StaticConstantPad"] == 1, found
