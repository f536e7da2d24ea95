"""ONNX Runtime's CPU provider: `.onnx` artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import Runner, TensorSpec


class OnnxRunner(Runner):
    SUFFIX = ".onnx"
    # onnxruntime (1.32, Linux) queues telemetry events (Microsoft's 1DS SDK: device id, OS, CPU, the
    # Python path) in ~/.cache/Microsoft/DeveloperTools/ for upload from C++ on every InferenceSession,
    # unless this is set when onnxruntime is imported (setting it later has no effect: measured, 1.32)
    OFFLINE_ENVIRONMENT = {"ORT_DISABLE_TELEMETRY": "1"}

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None,
                 probes: tuple[str, ...] = ()):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        (inp,) = self.session.get_inputs()
        dtypes = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                  "tensor(uint8)": "uint8"}
        self.input = TensorSpec(inp.name, list(inp.shape), dtypes[inp.type])
        self.probes = list(probes)  # extra graph outputs of a probed copy (exporters/onnx_probes.py)
        self.outputs = [TensorSpec(out.name, list(out.shape), dtypes[out.type]) for out in self.session.get_outputs()
                        if out.name not in probes]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run([spec.name for spec in self.outputs], {self.input.name: batch})

    def _invoke_probes(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.probes, {self.input.name: batch})


RUNNER = OnnxRunner
