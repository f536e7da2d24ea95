"""Run one deployed artifact with its own runtime (one Runner class per target).

This file is deliberately self-contained (standard library + numpy + the runtime it needs) so that
the very same code can be copied to a Raspberry Pi or any board and run there: parity checks here
and latency benchmarks on devices then exercise one implementation.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
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

    SUFFIX: str  # of the artifacts it runs
    input: TensorSpec
    outputs: list[TensorSpec]  # logits; or the feature maps of an artifact exported with --features, in order
    runtime: str
    runtime_version: str
    # the precision the runtime computes float parts in, read back from it; None where the runtime
    # has no such setting (it computes in the artifact's own precision)
    exec_precision: str | None = None
    # the runtime's own switches that keep its telemetry off, applied per process before it is imported
    # (see keep_runtimes_offline): environment variables it reads on import, and optional modules whose
    # absence the runtime handles by sending nothing
    OFFLINE_ENVIRONMENT: dict[str, str] = {}
    OFFLINE_WITHOUT_MODULES: tuple[str, ...] = ()

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The first (for a classifier: the only) output."""
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output, in the artifact's order."""
        return [self._from_output(raw, spec) for raw, spec in zip(self._invoke(self._to_input(batch)), self.outputs)]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - per runtime
        raise NotImplementedError

    def _to_input(self, batch: np.ndarray) -> np.ndarray:
        spec = self.input
        if spec.scale:
            info = np.iinfo(spec.dtype)
            q = np.round(batch / spec.scale) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return batch.astype(spec.dtype, copy=False)

    @staticmethod
    def _from_output(raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
        if spec.scale:
            return (raw.astype(np.float32) - spec.zero_point) * spec.scale
        return raw.astype(np.float32, copy=False)


class OnnxRunner(Runner):
    SUFFIX = ".onnx"
    # onnxruntime (1.32, Linux) queues telemetry events (Microsoft's 1DS SDK: device id, OS, CPU, the
    # Python path) in ~/.cache/Microsoft/DeveloperTools/ for upload from C++ on every InferenceSession,
    # unless this is set when onnxruntime is imported (setting it later has no effect: measured, 1.32)
    OFFLINE_ENVIRONMENT = {"ORT_DISABLE_TELEMETRY": "1"}

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None):
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
        self.outputs = [TensorSpec(out.name, list(out.shape), dtypes[out.type]) for out in self.session.get_outputs()]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run([spec.name for spec in self.outputs], {self.input.name: batch})


class LiteRTRunner(Runner):
    SUFFIX = ".tflite"

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None):
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
        outputs = _signature_order(self.interpreter, self.interpreter.get_output_details())
        self._in, self._out = inp["index"], [out["index"] for out in outputs]
        self.input = _litert_spec(inp)
        self.outputs = [_litert_spec(out) for out in outputs]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self._in, batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index).copy() for index in self._out]


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

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None):
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY"}
        if exec_precision is not None:
            config["INFERENCE_PRECISION_HINT"] = exec_precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.exec_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.request = self.compiled.create_infer_request()
        self.runtime, self.runtime_version = "openvino", ov.get_version()
        self.input = _ov_spec(self.compiled.input(0), "input")
        self.outputs = [_ov_spec(out, f"output_{i}") for i, out in enumerate(self.compiled.outputs)]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: batch})
        return [results[i].copy() for i in range(len(self.outputs))]


def _ov_spec(port, fallback_name: str) -> TensorSpec:
    shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    name = next(iter(sorted(port.get_names())), fallback_name)
    return TensorSpec(name, shape, port.get_element_type().to_dtype().name)


class MNNRunner(Runner):
    """MNN's Module API on the CPU backend. MNN's precision modes: "high" computes in f32 (what
    `exec_precision` "f32" pins), "low" in fp16 or bf16 where the CPU has them ("f16" / "bf16" ask for
    it; MNN picks which, so "low" is reported), and the default "normal" is f32 on CPUs without fp16
    arithmetic and may use fp16 on ARMv8.2 (reported as None: not read back)."""

    SUFFIX = ".mnn"
    MODES = {None: "normal", "f32": "high", "bf16": "low", "f16": "low"}

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None):
        mnn = quiet_import_mnn()
        mode = self.MODES[exec_precision]
        with _stdout_to_stderr():  # MNN announces its precision mode on stdout
            manager = mnn.nn.create_runtime_manager(({"backend": "CPU", "precision": mode,
                                                      "numThread": threads or 1},))
            self.module = mnn.nn.load_module_from_file(str(path), [], [], runtime_manager=manager)
        self.expr = mnn.expr
        info = self.module.get_info()
        (inp,) = info["inputs"]
        self.runtime, self.runtime_version = "MNN", info.get("version") or mnn.version()
        self.exec_precision = {"normal": None, "high": "f32", "low": "low"}[mode]
        self.input = TensorSpec(info["inputNames"][0], list(inp.shape), "float32")
        # in the order of their names (features_0, features_1, ...): MNN's quantizer reorders outputs
        names = info["outputNames"]
        self._order = sorted(range(len(names)), key=lambda i: _natural(names[i]))
        probes = self._invoke(np.zeros(self.input.shape, np.float32))
        self.outputs = [TensorSpec(names[i], list(probe.shape), "float32") for i, probe in zip(self._order, probes)]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)  # MNN reads this memory: keep it alive
        outputs = self.module.forward([self.expr.const(batch, list(batch.shape), self.expr.NCHW)])
        # read() is a view MNN reuses
        return [np.array(outputs[i].read(), dtype=np.float32, copy=True) for i in self._order]


def _natural(name: str) -> tuple:
    """Sort key: `features_10` after `features_9`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def quiet_import_mnn():
    """`import MNN`: its engine prints the CPU's features on stdout when loaded, which would spoil
    the JSON a command prints there; sent to stderr instead."""
    with _stdout_to_stderr():
        import MNN
        import MNN.expr
        import MNN.nn
    return MNN


class _stdout_to_stderr:
    """File descriptor 1 points at stderr for the duration (native code's prints included: the C
    library's buffer is flushed before fd 1 is restored)."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc):
        try:
            import ctypes

            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):  # pragma: no cover - no C library to flush
            pass
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


# by artifact suffix: on a board there is no target table, only the file (the table names each
# target's runner class, and a test checks that the two agree)
RUNNERS = {runner.SUFFIX: runner for runner in (OnnxRunner, LiteRTRunner, OpenVINORunner, MNNRunner)}


def keep_runtimes_offline() -> None:
    """Turn every runtime's telemetry off in this process and the processes it starts, with the
    runtimes' own switches, before any of them is imported; nothing is written to the user's settings.

    A variable the user set explicitly is theirs (`setdefault`). A module is blocked by a `None` entry in
    `sys.modules`, which makes `import` raise ImportError; one imported already is left as it is
    (bbdeploy applies this when it is imported, and the runner before it loads any artifact).
    """
    for runner in RUNNERS.values():
        for name, value in runner.OFFLINE_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        for module in runner.OFFLINE_WITHOUT_MODULES:
            sys.modules.setdefault(module, None)


EXEC_PRECISIONS = ("f32", "bf16", "f16")  # what `exec_precision` may pin, where a runtime has the setting


def load(path: str | Path, threads: int | None = None, exec_precision: str | None = None) -> Runner:
    """A runner for the artifact at `path`, chosen by its suffix (see RUNNERS).

    `exec_precision` (one of EXEC_PRECISIONS) pins the precision of float compute in runtimes that
    have such a setting; None leaves each runtime's default."""
    path = Path(path)
    if path.suffix not in RUNNERS:
        raise ValueError(f"no runtime for {path.name}; artifacts end in {', '.join(RUNNERS)}")
    if exec_precision is not None and exec_precision not in EXEC_PRECISIONS:
        raise ValueError(f"unknown execution precision {exec_precision!r}; pass one of {', '.join(EXEC_PRECISIONS)}")
    return RUNNERS[path.suffix](path, threads, exec_precision)


ROUNDS = 10  # timed runs are spread over at least this many rounds of A, B, C, A, B, C, ...


def measure(paths: list[str | Path], *, threads: int = 1, warmup: int = 10, runs: int = 50, min_time: float = 1.0,
            exec_precision: str | None = None, seed: int = 0) -> list[dict]:
    """Latency of several artifacts in one process, interleaved: after `warmup` untimed runs each,
    rounds of a few timed runs of every artifact in turn, until each has both `runs` runs and
    `min_time` seconds. Artifacts then share the device's state (load, heat, frequency) alike, so
    "int8 is not faster" compares like with like. Times are `perf_counter_ns` around the runtime
    call alone, on an input of the artifact's own dtype and shape (quantized with its scale and zero
    point). One entry per path: {"result": {...}} or {"error": "...", ["module": missing runtime]};
    an artifact that cannot load or run does not stop the others."""
    outcomes: list[dict] = [{} for _ in paths]
    active = []
    for index, path in enumerate(paths):
        before = current_rss_bytes()
        started = time.perf_counter()
        try:
            runner = load(path, threads, exec_precision)
            load_s = time.perf_counter() - started
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in runner.input.shape]
            sample = runner._to_input(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
            for _ in range(warmup):
                runner._invoke(sample)
        except ImportError as exc:
            outcomes[index] = {"error": f"no runtime module {exc.name or exc}", "module": exc.name or str(exc)}
            continue
        except Exception as exc:  # an artifact its runtime refuses: this row fails, the others run
            outcomes[index] = {"error": one_line(exc)}
            continue
        after = current_rss_bytes()
        outcomes[index] = {"result": {
            "runtime": runner.runtime, "runtime_version": runner.runtime_version,
            "exec_precision": runner.exec_precision, "threads": threads, "warmup": warmup, "load_s": load_s,
            "times_ns": [], "input": runner.input.as_dict(), "xnnpack": getattr(runner, "xnnpack", None),
            "load_rss_bytes": None if before is None or after is None else after - before,
            "file_bytes": os.path.getsize(path)}}
        active.append((index, runner, sample))
    block = max(1, -(-runs // ROUNDS))
    min_ns = int(min_time * 1e9)

    def wanting(index: int) -> bool:  # fewer runs than asked, or less timed time
        times_ns = outcomes[index]["result"]["times_ns"]
        return len(times_ns) < runs or sum(times_ns) < min_ns

    while active and any(wanting(index) for index, _, _ in active):
        for entry in list(active):
            index, runner, sample = entry
            times_ns = outcomes[index]["result"]["times_ns"]
            try:
                for _ in range(block):
                    begin = time.perf_counter_ns()
                    runner._invoke(sample)
                    times_ns.append(time.perf_counter_ns() - begin)
            except Exception as exc:
                outcomes[index] = {"error": one_line(exc)}
                active.remove(entry)
    for outcome in outcomes:
        if "result" in outcome:
            outcome["result"]["runs"] = len(outcome["result"]["times_ns"])
    return outcomes


def one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message; OpenVINO's messages open with the source
    locations that raised them ("Exception from src/...cpp:59:"), which say nothing to a user: skipped."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    while len(lines) > 1 and lines[0].startswith("Exception from ") and lines[0].endswith(":"):
        lines.pop(0)
    return f"{type(exc).__name__}: {lines[0][:300]}"


def current_rss_bytes() -> int | None:
    """Resident memory of this process now (Linux), to attribute the growth to each artifact."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process (Linux reports kilobytes, macOS bytes)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# CPU part numbers of Arm Ltd. cores (implementer 0x41), as ARM kernels list them in /proc/cpuinfo
ARM_CORES = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
             "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2"}
# a kernel that runs these user-space machines natively (compat mode is not emulation)
NATIVE_COMPAT = {"x86_64": ("i386", "i486", "i586", "i686"), "aarch64": ("armv7l", "armv8l", "arm")}


def emulated_on() -> str | None:
    """The kernel's machine when this process is emulated (qemu-user translates uname's machine, not
    the kernel's own /proc/sys/kernel/arch), else None."""
    try:
        kernel = Path("/proc/sys/kernel/arch").read_text().strip()
    except OSError:
        return None
    machine = platform.machine()
    if not kernel or kernel == machine or machine in NATIVE_COMPAT.get(kernel, ()):
        return None
    return kernel


def device_facts() -> dict:
    """What the numbers were measured on: CPU model, cores, OS, Python, emulation, temperature,
    throttling; read here, on the device."""
    facts = {"cpu": platform.processor() or platform.machine(), "machine": platform.machine(), "model": None,
             "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
             "emulated": False, "kernel_machine": None, "cpu_temperature_c": None, "throttled": None}
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        if fields.get("model name"):
            facts["cpu"] = fields["model name"]
        elif fields.get("CPU implementer") == "0x41" and fields.get("CPU part") in ARM_CORES:
            facts["cpu"] = ARM_CORES[fields["CPU part"]]
        elif fields.get("Hardware"):
            facts["cpu"] = fields["Hardware"]
        facts["model"] = fields.get("Model") or None  # Raspberry Pi kernels: the board
    except OSError:
        pass
    kernel = emulated_on()
    if kernel is not None:
        facts.update(emulated=True, kernel_machine=kernel)
    try:
        facts["cpu_temperature_c"] = int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:  # Raspberry Pi firmware: bit 0 under-voltage, 1 frequency capped, 2 throttled now
        facts["throttled"] = Path("/sys/devices/platform/soc/soc:firmware/get_throttled").read_text().strip()
    except OSError:
        pass
    return facts


def main(argv: list[str] | None = None) -> int:
    """`python runner.py ARTIFACT... [--threads N] [--warmup W] [--runs R] [--min-time S]
    [--exec-precision P]`: one JSON object on stdout. This is what runs on a remote device."""
    import argparse

    parser = argparse.ArgumentParser(description="Benchmark artifacts with their own runtimes, interleaved.")
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--exec-precision", choices=EXEC_PRECISIONS, default=None)
    args = parser.parse_args(argv)
    keep_runtimes_offline()
    outcomes = measure(args.artifacts, threads=args.threads, warmup=args.warmup, runs=args.runs,
                       min_time=args.min_time, exec_precision=args.exec_precision)
    print(json.dumps({"device": device_facts(), "peak_rss_bytes": peak_rss_bytes(), "outcomes": outcomes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
