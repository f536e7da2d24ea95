"""OpenVINO's CPU plugin: `.xml` + `.bin` IR artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import Runner, TensorSpec


class OpenVINORunner(Runner):
    """OpenVINO's CPU plugin computes the float parts of any IR in bf16 by default on CPUs with native
    bf16 (AVX512_BF16, AMX): `exec_precision` None keeps that default (what an application gets),
    "f32" / "bf16" / "f16" pin it. What really ran is read back from the compiled model."""

    SUFFIX = ".xml"
    # `import openvino` (its model converter) and NNCF start openvino-telemetry, which sends Google
    # Analytics events without asking unless a consent file in the user's home says no, and writes a
    # client id and a usage count into ~/intel. Both fall back to their own no-op telemetry when that
    # optional package cannot be imported (openvino.tools.ovc.telemetry_stub, NNCFTelemetryStub).
    OFFLINE_WITHOUT_MODULES = ("openvino_telemetry",)

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None,
                 probes: tuple[str, ...] = ()):
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY"}
        if exec_precision is not None:
            config["INFERENCE_PRECISION_HINT"] = exec_precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        model = core.read_model(str(path))
        outputs = len(model.outputs)
        if probes:  # `friendly_name:port` of intermediate node outputs (exporters/openvino_probes.py)
            model.add_outputs([(name, int(port)) for name, _, port in (probe.rpartition(":") for probe in probes)])
        self.compiled = core.compile_model(model, "CPU", config)
        self.exec_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.request = self.compiled.create_infer_request()
        self.runtime, self.runtime_version = "openvino", ov.get_version()
        self.input = _ov_spec(self.compiled.input(0), "input")
        self.outputs = [_ov_spec(out, f"output_{i}") for i, out in enumerate(self.compiled.outputs[:outputs])]
        # by node output: a probe that is already a model output (the logits) is not added twice
        sources = [result.input_value(0) for result in model.get_results()]
        ports = [f"{port.get_node().get_friendly_name()}:{port.get_index()}" for port in sources]
        self._probes = [ports.index(probe) for probe in probes]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: batch})
        return [results[i].copy() for i in range(len(self.outputs))]

    def _invoke_probes(self, batch: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: batch})
        return [results[i].copy() for i in self._probes]


def _ov_spec(port, fallback_name: str) -> TensorSpec:
    shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    name = next(iter(sorted(port.get_names())), fallback_name)
    return TensorSpec(name, shape, port.get_element_type().to_dtype().name)


RUNNER = OpenVINORunner
