"""The one table of export targets. The CLI, export, int8, drift, bench (local, ssh, adb), the
benchmarks and the tests read it; what differs between targets is a field here or lives in the
target's own modules (its exporter, its quantizer, its runtime module in `targets/runner/runtimes/`).

Adding a target is one record here plus those modules: every parametrized test then covers it.
The record is plain data (no heavy imports), so `bbdeploy --help` can list it instantly.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from bbdeploy.errors import BBDeployError, did_you_mean


@dataclass(frozen=True)
class QuantizerFacts:
    """What a target's int8 toolchain computes with, for the code that works toward it (GPTQ rounds
    onto its weight grid, QAT fake-quantizes its scheme, bias correction is left to it or done here)."""

    weight_levels: float  # per-channel symmetric weights: scale = max|w| / weight_levels
    activations: str  # its activation scheme, one of quantization.fake_quant.ACTIVATION_SCHEMES
    own_bias_correction: bool  # with nearest rounding, the toolchain's own (else bbdeploy's)


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str  # of the main artifact file
    companions: tuple[str, ...]  # other files that belong to the artifact (OpenVINO's weights .bin)
    precisions: tuple[str, ...]
    layouts: tuple[str, ...]  # input layouts it can produce; the first is the default
    # module with convert(model, sample, path, *, precision, layout) and op_histogram(path)
    exporter: str
    # module with quantize(model, calibration, *, subset_size, ...) (see quantization/ptq.py)
    quantizer: str
    # module with layer_probes(artifact, layers, folder): where each layer's tensors are in its files
    # (exporters/probes.py; drift --layers)
    layer_probes: str
    int8: QuantizerFacts  # what that quantizer's int8 model computes with
    calib_methods: tuple[str, ...]  # --calib-method choices, the first the measured default
    weight_roundings: tuple[str, ...]  # --weight-rounding choices, the first the measured default
    io_types: tuple[str, ...]  # int8 input/output types (--io), the first the default
    runner: str  # its module in targets/runner/runtimes/ (self-contained: it ships to boards in the runner)
    packages: tuple[str, ...]  # import names the converter, quantizer and runtime need here
    distributions: tuple[str, ...]  # their PyPI names: pip install hint, versions in manifests
    device_distributions: tuple[str, ...]  # what a board needs for the runner to run the artifact
    adb_tool: str | None  # the Android binary that times it over adb; None: adb cannot
    # the calib methods whose quantizer can leave layers in float (--keep-float); None: all of them
    keep_float_methods: tuple[str, ...] | None = None

    @property
    def install(self) -> str:
        return " ".join(self.distributions)


TARGETS: dict[str, Target] = {
    t.name: t for t in (
        Target("onnx", ".onnx", (), ("fp32", "fp16", "int8"), ("nchw",),
               exporter="bbdeploy.exporters.onnx", quantizer="bbdeploy.quantization.onnx",
               layer_probes="bbdeploy.exporters.onnx_probes",
               # onnxruntime's reduce_range weights (7 bits: the u8s8 kernels of AVX2 CPUs saturate without)
               int8=QuantizerFacts(weight_levels=64, activations="asymmetric", own_bias_correction=False),
               calib_methods=("minmax", "percentile", "entropy"), weight_roundings=("gptq", "nearest"),
               io_types=("float",), runner="onnxruntime",
               packages=("onnx", "onnxscript", "onnxruntime"), distributions=("onnx", "onnxscript", "onnxruntime"),
               device_distributions=("onnxruntime",), adb_tool=None),
        Target("tflite", ".tflite", (), ("fp32", "fp16", "int8"), ("nhwc", "nchw"),
               exporter="bbdeploy.exporters.tflite", quantizer="bbdeploy.quantization.tflite",
               layer_probes="bbdeploy.exporters.tflite_probes",
               int8=QuantizerFacts(weight_levels=127, activations="asymmetric", own_bias_correction=False),
               # mse: Lite0 cosine 0.9967 vs 0.9958 with minmax; GPTQ is not offered (quantization/tflite.py)
               calib_methods=("mse", "minmax"), weight_roundings=("nearest",),
               io_types=("float", "int8", "uint8"), runner="litert",
               packages=("litert_torch", "ai_edge_litert", "torchao"),
               distributions=("litert-torch", "ai-edge-litert", "torchao"),
               device_distributions=("ai-edge-litert",), adb_tool="benchmark_model"),
        Target("openvino", ".xml", (".bin",), ("fp32", "fp16", "int8"), ("nchw",),
               exporter="bbdeploy.exporters.openvino", quantizer="bbdeploy.quantization.openvino",
               layer_probes="bbdeploy.exporters.openvino_probes",
               # NNCF performance preset: unsigned over [0, max] where never negative; with nearest rounding
               # NNCF's fast bias correction (bbdeploy's measured worse)
               int8=QuantizerFacts(weight_levels=63.5, activations="symmetric", own_bias_correction=True),
               calib_methods=("minmax",), weight_roundings=("gptq", "nearest"),
               io_types=("float",), runner="openvino",
               packages=("openvino", "nncf"), distributions=("openvino", "nncf"),
               device_distributions=("openvino",), adb_tool=None),
        Target("mnn", ".mnn", (), ("fp32", "fp16", "int8"), ("nchw",),
               exporter="bbdeploy.exporters.mnn", quantizer="bbdeploy.quantization.mnn",
               layer_probes="bbdeploy.exporters.mnn_probes",
               # MAX_ABS weights: scale max|w| / weight_clamp_value (127); feature_clamp_value 127, also for
               # non-negative inputs
               int8=QuantizerFacts(weight_levels=127, activations="symmetric-signed", own_bias_correction=False),
               # KL crashes MNN 3.6.1's quantizer; ADMM measured worse than EMA (quantization/mnn.py)
               calib_methods=("ema", "admm"), weight_roundings=("gptq", "nearest"),
               io_types=("float",), runner="mnn",
               packages=("MNN", "onnx", "onnxscript"), distributions=("MNN", "onnx", "onnxscript"),
               device_distributions=("MNN",), adb_tool=None,
               # MNN's EMA quantizer quantizes every layer; its ADMM one honours skip_quant_op_names
               keep_float_methods=("admm",)),
        Target("executorch", ".pte", (), ("fp32", "fp16", "int8"), ("nchw",),
               exporter="bbdeploy.exporters.executorch", quantizer="bbdeploy.quantization.executorch",
               layer_probes="bbdeploy.exporters.executorch_probes",
               # XNNPACK's QC8 scheme: weights +-127 per channel, activations int8 per tensor with a zero point
               int8=QuantizerFacts(weight_levels=127, activations="asymmetric", own_bias_correction=False),
               # GPTQ: Lite0 cosine 0.9983 / 24.5 dB; nearest with bias correction 0.9962 / 21.5 dB
               calib_methods=("mse", "minmax"), weight_roundings=("gptq", "nearest"),
               io_types=("float",), runner="executorch",
               # the optional extra bbdeploy[executorch]; its runtime needs torch on the board too
               packages=("executorch",), distributions=("executorch",),
               device_distributions=("executorch", "torch"), adb_tool=None),
    )
}


def resolve_targets(spec: str) -> list[Target]:
    """`onnx`, `tflite,openvino` or `all` -> targets; an unknown name gets a suggestion."""
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if names == ["all"]:
        return list(TARGETS.values())
    targets = []
    for name in names or [""]:
        if name not in TARGETS:
            raise BBDeployError(f"unknown target {name!r}{did_you_mean(name, [*TARGETS, 'all'])}; pass one of "
                                f"{', '.join(TARGETS)} or all")
        targets.append(TARGETS[name])
    return targets


def _check_installed(target: Target) -> None:
    for package in target.packages:
        try:
            import_module(package)
        except ImportError:
            raise BBDeployError(f"target {target.name} needs the Python package {package!r}; "
                                f"pip install {target.install}") from None


def exporter(target: Target) -> ModuleType:
    """The exporter module of `target`, or a one-line error naming the packages to install."""
    _check_installed(target)
    return import_module(target.exporter)


def quantizer(target: Target) -> ModuleType:
    """The quantizer module of `target`, or a one-line error naming the packages to install."""
    _check_installed(target)
    return import_module(target.quantizer)


def layer_prober(target: Target) -> ModuleType:
    """The layer probe module of `target`. It imports only what reads the artifact (not the converter's
    packages: onnxscript alone costs ~1.6 s), when it is called; a missing one fails that artifact's row."""
    return import_module(target.layer_probes)


def choices_help(field: str) -> str:
    """`tflite: mse | minmax; onnx: ...` for a CLI help text, from the records' `field`."""
    return "; ".join(f"{t.name}: {' | '.join(getattr(t, field))}" for t in TARGETS.values())
