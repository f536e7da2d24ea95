"""Run one deployed artifact with its own runtime: onnxruntime, LiteRT or OpenVINO.

This file is deliberately self-contained (standard library + numpy + the runtime it needs) so that
the very same code can be copied to a Raspberry Pi or any board and run there: parity checks here
and latency benchmarks on devices then exercise one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TensorSpec:
    """What the artifact expects or returns; scale/zero_point are set for quantized tensors."""

    name: str
    shape: list[int]
    dtype: str  # numpy dtype name: float32, float16, int8, uint8
    scale: float | None = None
    zero_point: int | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


class Runner:
    """Feed float32 NCHW or NHWC batches as the artifact's layout says; get float32 logits back.

    Quantized inputs and outputs are converted with the artifact's own scale and zero point, so
    callers always deal in the float domain.
    """

    input: TensorSpec
    output: TensorSpec
    runtime: str
    runtime_version: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raw = self._invoke(self._to_input(batch))
        return self._from_output(raw)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - per runtime
        raise NotImplementedError

    def _to_input(self, batch: np.ndarray) -> np.ndarray:
        spec = self.input
        if spec.scale:
            info = np.iinfo(spec.dtype)
            q = np.round(batch / spec.scale) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return batch.astype(spec.dtype, copy=False)

    def _from_output(self, raw: np.ndarray) -> np.ndarray:
        spec = self.output
        if spec.scale:
            return (raw.astype(np.float32) - spec.zero_point) * spec.scale
        return raw.astype(np.float32, copy=False)


class OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        (inp,), (out,) = self.session.get_inputs(), self.session.get_outputs()
        dtypes = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
                  "tensor(uint8)": "uint8"}
        self.input = TensorSpec(inp.name, list(inp.shape), dtypes[inp.type])
        self.output = TensorSpec(out.name, list(out.shape), dtypes[out.type])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: batch})[0]


class LiteRTRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        try:
            from ai_edge_litert.interpreter import Interpreter
            import ai_edge_litert as package
            self.runtime = "ai_edge_litert"
        except ImportError:  # older boards ship only tflite_runtime
            from tflite_runtime.interpreter import Interpreter
            import tflite_runtime as package
            self.runtime = "tflite_runtime"
        self.runtime_version = getattr(package, "__version__", "unknown")
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
        self.interpreter.allocate_tensors()
        (inp,), (out,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self._in, self._out = inp["index"], out["index"]
        self.input = _litert_spec(inp)
        self.output = _litert_spec(out)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out).copy()


def _litert_spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = bool(scale) and np.dtype(detail["dtype"]).kind in "iu"
    return TensorSpec(detail["name"], [int(d) for d in detail["shape"]], np.dtype(detail["dtype"]).name,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


class OpenVINORunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.runtime, self.runtime_version = "openvino", ov.get_version()
        inp, out = self.compiled.input(0), self.compiled.output(0)
        self.input = _ov_spec(inp, "input")
        self.output = _ov_spec(out, "output")

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        return self.request.infer({0: batch})[0].copy()


def _ov_spec(port, fallback_name: str) -> TensorSpec:
    shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    name = next(iter(sorted(port.get_names())), fallback_name)
    return TensorSpec(name, shape, port.get_element_type().to_dtype().name)


RUNNERS = {".onnx": OnnxRunner, ".tflite": LiteRTRunner, ".xml": OpenVINORunner}


def load(path: str | Path, threads: int | None = None) -> Runner:
    """A runner for the artifact at `path`, chosen by its suffix (.onnx, .tflite, .xml)."""
    path = Path(path)
    if path.suffix not in RUNNERS:
        raise ValueError(f"no runtime for {path.name}; artifacts end in {', '.join(RUNNERS)}")
    return RUNNERS[path.suffix](path, threads)
