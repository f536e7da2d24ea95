"""OpenVINO's own checks: its IR as the zoo tests export it (looked up by tests/target_checks.py)."""

from __future__ import annotations


def check_fp32_graph(row: dict) -> None:
    assert "FakeQuantize" not in row["ops"], row["ops"]


def check_int8_graph(row: dict, backbone: str) -> None:
    # NNCF's int8 IR: FakeQuantize ops that the CPU plugin turns into int8 kernels
    assert row["ops"]["FakeQuantize"] > 0, (backbone, row["ops"])
