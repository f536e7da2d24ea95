"""OpenVINO's own checks: its IR as the zoo tests export it (looked up by tests/target_checks.py), what its
runtime reports on a bench, and its execution-precision setting."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli

FAILS_ON_PI4 = "RuntimeError: object is not initialized"  # int8 IRs under qemu's Cortex-A72 (OpenVINO 2026.4)
EXEC_PRECISION_ON_PI5 = "f16"  # an fp32 IR on a Cortex-A76 (measured on the emulated board; a real Pi 5 alike)
LITE0_INT8 = (0.857, 0.962, 0.9915, 17.4)  # measured as tests/test_int8.py says; NNCF lags onnxruntime on the same GPTQ weights


def check_fp32_graph(row: dict) -> None:
    assert "FakeQuantize" not in row["ops"], row["ops"]


def check_int8_graph(row: dict, backbone: str) -> None:
    # NNCF's int8 IR: FakeQuantize ops that the CPU plugin turns into int8 kernels
    assert row["ops"]["FakeQuantize"] > 0, (backbone, row["ops"])


def check_keep_float(row: dict) -> None:
    """test_int8's keep-float export: float constant weights on the two kept layers, dequantized int8
    weights elsewhere."""
    import openvino as ov

    weight_source = {op.get_friendly_name().split("/")[0]: op.input_value(1).get_node().get_type_name()
                     for op in ov.Core().read_model(row["artifact"]).get_ordered_ops()
                     if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")}
    assert weight_source["__module.features.0.0"] == "Constant" and weight_source["__module.classifier.1"] == "Constant"
    assert weight_source["__module.features.1.conv.0.0"] != "Constant"


def check_local_bench_row(row: dict) -> None:
    # OpenVINO reports what it computed float parts in (bf16 by default on CPUs with native bf16)
    assert row["exec_precision"] == exec_precision_reported(None)


def exec_precision_reported(requested: str | None) -> str:
    """What was asked for, or by default what OpenVINO's CPU plugin picks on this machine, asked of
    OpenVINO directly."""
    import openvino as ov

    return requested or ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def test_exec_precision_pins_what_openvino_computes_in(small_artifacts):
    result = run_cli("bench", str(small_artifacts[("openvino", "fp32")]), "--runs", "2", "--warmup", "0", "--min-time", "0",
                     "--exec-precision", "f32", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["exec_precision"] == "f32"


def break_layer(path: Path, layer: str) -> None:
    """Multiply the weight scales of `layer` by 3 in the int8 IR (the constant its weights' decompression
    multiplies by), saved again as a hand edit would (for drift --layers)."""
    import numpy as np
    import openvino as ov

    model = ov.Core().read_model(str(path))
    (node,) = [n for n in model.get_ordered_ops() if n.get_type_name() in ("Convolution", "GroupConvolution")
               and n.get_friendly_name().startswith(f"__module.{layer}/")]
    weights = node.input(1).get_source_output().get_node()
    while weights.get_type_name() != "Multiply":  # int8 weights -> Convert -> (Subtract) -> Multiply by scales
        weights = weights.input(0).get_source_output().get_node()
    scale_input = next(weights.input(i) for i in range(2)
                       if weights.input(i).get_source_output().get_node().get_type_name() == "Constant")
    scales = scale_input.get_source_output().get_node().get_data()
    scale_input.replace_source_output(ov.op.Constant(np.ascontiguousarray(scales * 3)).output(0))
    edited = path.with_name(f"edited-{path.name}")  # the read model maps the .bin: written beside it first
    ov.save_model(model, str(edited), compress_to_fp16=False)
    del model, node, weights, scale_input
    edited.replace(path)
    edited.with_suffix(".bin").replace(path.with_suffix(".bin"))
