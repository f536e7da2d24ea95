"""TFLite's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py),
and what only TFLite has: full-integer input and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbdeploy.exporters.tflite import float_ops
from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.quantization.options import QuantOptions
from tests.conftest import PLUMBING_MIN_COSINE, TINY, calibrated_checkpoint

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
