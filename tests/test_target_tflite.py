"""TFLite's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py),
and what only TFLite has: full-integer input and output, an NCHW option, and the README's headline
command (`bbdeploy export mobilenetv3 --target tflite --int8`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bbdeploy.exporters.tflite import float_ops
from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.quantization.options import QuantOptions
from tests.conftest import PLUMBING_MIN_COSINE, TINY, calibrated_checkpoint, run_cli

LITE0_INT8 = (0.946, 1.0, 0.9962, 21.5)  # measured as tests/test_int8.py says


def check_fp32_graph(row: dict) -> None:
    # NHWC input (the default layout) with no layout shuffle left inside the graph
    assert row["input"]["shape"] == [1, TINY, TINY, 3] and row["input"]["layout"] == "NHWC"
    assert row["ops"].get("TRANSPOSE", 0) == 0, row["ops"]


def check_int8_graph(row: dict, backbone: str) -> None:
    tflite = row["ops"]
    # one int8 graph inside: no layout shuffles, and float only at the two ends (the float input's
    # QUANTIZE and the float output's DEQUANTIZE); ShuffleNet's concatenations add int8 -> int8
    # QUANTIZE (requantize) ops, as TFLite's int8 CONCATENATION takes one scale for all inputs
    assert tflite["CONV_2D"] > 0 and "TRANSPOSE" not in tflite, tflite
    assert float_ops(Path(row["artifact"])) == ["QUANTIZE", "DEQUANTIZE"], tflite
    assert tflite["DEQUANTIZE"] == 1 and (tflite["QUANTIZE"] == 1 or backbone.startswith("shufflenet")), tflite
    assert row["input"]["dtype"] == "float32" and row["output"]["dtype"] == "float32"


def check_keep_float(row: dict) -> None:
    """test_int8's keep-float export: the float ops are exactly the first convolution (with its pad) and
    the classifier."""
    assert float_ops(Path(row["artifact"])) == ["PAD", "CONV_2D", "QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED"]


def check_real_lite0_fp32(manifest: dict) -> None:
    """test_export's real Lite0 fp32: the ops of the converted graph, as litert-torch 0.x writes them."""
    assert manifest["ops"] == {"CONV_2D": 33, "DEPTHWISE_CONV_2D": 16, "ADD": 9, "MEAN": 1, "FULLY_CONNECTED": 1}


def check_feature_outputs(row: dict) -> None:
    """test_features: NHWC feature maps with no layout shuffle at the end of the float graph."""
    if row["precision"] == "fp32":
        assert "TRANSPOSE" not in row["ops"], row["ops"]


def check_fp16(row: dict) -> None:
    assert row["ops"]["DEQUANTIZE"] > 0  # TFLite fp16: fp16 weights dequantized at load


def exec_precision_reported(requested: str | None) -> None:
    return None  # LiteRT has no execution-precision setting


def check_local_bench_row(row: dict) -> None:
    assert row["exec_precision"] is None
    if row["precision"] == "fp32":
        assert row["xnnpack"] == {"applied": True, "partitions": 1}  # one XNNPACK partition: all of the graph


@pytest.mark.long(seconds=25)
@pytest.mark.parametrize("io, dtype", [("int8", "int8"), ("uint8", "uint8")])
def test_tflite_full_integer_io(io, dtype, photos, tmp_path):
    weights = calibrated_checkpoint("mobilenet_v3_small", photos, tmp_path)
    options = ExportOptions("mobilenet_v3_small", targets="tflite", weights=str(weights), input_size=TINY,
                            output=tmp_path / "out", precision="int8", quant=QuantOptions(calib_size=8, io=io), min_cosine=PLUMBING_MIN_COSINE)
    (row,) = export(options)
    for boundary in (row["input"], row["output"]):
        assert boundary["dtype"] == dtype and boundary["scale"] > 0, boundary
    low, high = (-128, 127) if dtype == "int8" else (0, 255)
    assert low <= row["input"]["zero_point"] <= high and low <= row["output"]["zero_point"] <= high
    assert float_ops(Path(row["artifact"])) == []
    # the runner feeds and reads the integer tensors with the manifest's scale and zero point (measured
    # cosine 0.90 for this random network; a wrong scale or zero point gives noise)
    assert row["parity"]["cosine"] > 0.8, row["parity"]


def test_nchw_tflite_keeps_the_pytorch_layout(tmp_path):
    rows = export(ExportOptions("mobilenet_v3_small", weights="random", targets="tflite", layout="nchw", input_size=TINY,
                                output=tmp_path))
    assert rows[0]["status"] == "exported"
    assert rows[0]["input"]["shape"] == [1, 3, TINY, TINY] and rows[0]["input"]["layout"] == "NCHW"
    assert Path(rows[0]["artifact"]).name == "mobilenet_v3_small_64px_fp32_nchw.tflite"


def test_the_headline_command_without_weights_is_one_line_naming_what_to_pass(tmp_path):
    """`bbdeploy export mobilenetv3 --target tflite --int8` defaults to the ImageNet weights; with
    none on this machine and no download allowed it says what to pass, and writes nothing."""
    result = run_cli("export", "mobilenetv3", "--target", "tflite", "--int8", "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: no ImageNet weights for mobilenet_v3_large on this machine"), result.stderr
    assert "mobilenet_v3_large-8738ca79.pth" in result.stderr and "--weights PATH" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.long(seconds=25)
def test_the_headline_command_with_a_local_checkpoint_reports_figures_that_mean_something(photos, tmp_path):
    weights = calibrated_checkpoint("mobilenet_v3_large", photos, tmp_path)
    result = run_cli("export", "mobilenetv3", "--target", "tflite", "--int8", "--weights", str(weights),
                     "--input-size", str(TINY), "--calib-size", "16", "--min-cosine", "0.5",
                     "--output", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["status"] == "exported" and row["parity"]["passed"] is True
    # logits with a real spread: agreement and cosine far from the 0% / 0.0000 of degenerate weights
    assert row["parity"]["top1_agreement"] >= 0.2 and row["parity"]["cosine"] >= 0.5, row["parity"]
    assert "random weights" not in result.stderr and "os.fork()" not in result.stderr


def break_layer(path: Path, layer: str) -> None:
    """Multiply the filter scales of `layer`'s op by 3 in the flatbuffer (for drift --layers); the op is
    found by the module scope litert-torch names its filter after (exporters/tflite_probes.py)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from bbdeploy.exporters.tflite_probes import _scope_paths

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    graph = model.subgraphs[0]
    (filter_tensor,) = [graph.tensors[op.inputs[1]] for op in graph.operators if len(op.inputs) > 1
                        and layer in _scope_paths(graph.tensors[op.inputs[1]].name)]
    filter_tensor.quantization.scale = [3 * scale for scale in filter_tensor.quantization.scale]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
