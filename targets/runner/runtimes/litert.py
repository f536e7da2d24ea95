"""LiteRT (TFLite) interpreter: `.tflite` artifacts, with XNNPACK as its default CPU delegate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import Runner, TensorSpec


class LiteRTRunner(Runner):
    SUFFIX = ".tflite"

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None,
                 probes: tuple[str, ...] = ()):
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
        try:  # a DELEGATE node is where XNNPACK took over part of the graph
            ops = [op["op_name"] for op in self.interpreter._get_ops_details()]
            self.xnnpack = {"applied": "DELEGATE" in ops, "partitions": ops.count("DELEGATE")}
        except Exception:  # private API: older runtimes may lack it
            self.xnnpack = None
        (inp,) = self.interpreter.get_input_details()
        # probes: tensor indices that a probed copy (exporters/tflite_probes.py) lists as extra outputs
        self._probes = [int(index) for index in probes]
        outputs = _signature_order(self.interpreter, [detail for detail in self.interpreter.get_output_details()
                                                      if detail["index"] not in self._probes])
        self._in, self._out = inp["index"], [out["index"] for out in outputs]
        self.input = _litert_spec(inp)
        self.outputs = [_litert_spec(out) for out in outputs]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self._in, batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index).copy() for index in self._out]

    def _invoke_probes(self, batch: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self._in, batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index).copy() for index in self._probes]


def _signature_order(interpreter, details: list[dict]) -> list[dict]:
    """Output details in the order of the model's signature (`output_0`, `output_1`, ...: the order the
    PyTorch module returned them), which tensor indices need not follow."""
    try:
        (signature,) = interpreter._get_full_signature_list().values()
        order = sorted(signature["outputs"].items(), key=lambda item: int(item[0].rpartition("_")[2]))
    except Exception:  # no single signature, other names, or an older runtime: tensor order
        return details
    by_index = {detail["index"]: detail for detail in details}
    return [by_index[index] for _, index in order] if all(i in by_index for _, i in order) else details


def _litert_spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = bool(scale) and np.dtype(detail["dtype"]).kind in "iu"
    return TensorSpec(detail["name"], [int(d) for d in detail["shape"]], np.dtype(detail["dtype"]).name,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


RUNNER = LiteRTRunner
