"""The one table of export targets, read by the CLI, the export stage, validation and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from bbdeploy.errors import BBDeployError, did_you_mean


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str  # of the main artifact file
    companions: tuple[str, ...]  # other files that belong to the artifact (OpenVINO's weights .bin)
    precisions: tuple[str, ...]
    layouts: tuple[str, ...]  # input layouts it can produce; the first is the default
    module: str  # exporter module with convert(model, sample, path, **options) and op_histogram(path)
    packages: tuple[str, ...]  # import names the converter and runtime need
    distributions: tuple[str, ...]  # their PyPI names: pip install hint, versions in manifests
    runtime: str

    @property
    def install(self) -> str:
        return " ".join(self.distributions)


TARGETS: dict[str, Target] = {
    t.name: t for t in (
        Target("onnx", ".onnx", (), ("fp32", "fp16", "int8"), ("nchw",), "bbdeploy.exporters.onnx",
               ("onnx", "onnxscript", "onnxruntime"), ("onnx", "onnxscript", "onnxruntime"), "onnxruntime"),
        Target("tflite", ".tflite", (), ("fp32", "fp16", "int8"), ("nhwc", "nchw"), "bbdeploy.exporters.tflite",
               ("litert_torch", "ai_edge_litert"), ("litert-torch", "ai-edge-litert"), "ai_edge_litert"),
        Target("openvino", ".xml", (".bin",), ("fp32", "fp16", "int8"), ("nchw",), "bbdeploy.exporters.openvino",
               ("openvino",), ("openvino",), "openvino"),
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


def exporter(target: Target):
    """The exporter module of `target`, or a one-line error naming the packages to install."""
    for package in target.packages:
        try:
            import_module(package)
        except ImportError:
            raise BBDeployError(f"target {target.name} needs the Python package {package!r}; "
                                f"pip install {target.install}") from None
    return import_module(target.module)
