"""TFLite's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py)."""

from __future__ import annotations

from pathlib import Path

from bbdeploy.exporters.tflite import float_ops

from tests.conftest import TINY


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
