"""ONNX's own checks: its graphs as the zoo tests export them (looked up by tests/target_checks.py)."""

from __future__ import annotations


def check_fp32_graph(row: dict) -> None:
    assert row["ops"].get("Conv", 0) > 0 and "QuantizeLinear" not in row["ops"], row["ops"]


def check_int8_graph(row: dict, backbone: str) -> None:
    # QDQ: every quantized tensor behind a QuantizeLinear, read through a DequantizeLinear
    assert row["ops"]["QuantizeLinear"] > 0 and row["ops"]["DequantizeLinear"] > 0, (backbone, row["ops"])
