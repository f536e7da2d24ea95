"""The drift stage: what deploying cost. Each artifact runs in its own runtime (here, or on the device
that `--device` names: see drift_device.py), its float PyTorch reference (rebuilt from the manifest)
runs here on the same crops, and the two are compared. Every row says where it was measured.

Images are decoded once per batch and cropped once per distinct preprocessing; each backbone's
reference runs once per batch however many of its artifacts are compared. Memory is one batch of
images plus a few numbers per image and artifact (on a device: plus every artifact's outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bbdeploy.targets.devices import where_measured
from bbdeploy.targets.runner.evaluate import normalize, run_batched
from bbdeploy.targets.runner import device_facts
from bbdeploy.targets.runner import load as load_runner
from bbdeploy.targets.runner.errors import one_line

from bbdeploy.backbones.custom import is_import_path, load_custom
from bbdeploy.backbones.features import recorded_extractor
from bbdeploy.data.photos import crop_image, load_image, recorded_preprocess
from bbdeploy.data.folders import EvalData, check_labels, eval_data
from bbdeploy.errors import BBDeployError
from bbdeploy.rows import DriftRow
from bbdeploy.stages.build import float_model, weights_digest
from bbdeploy.stages.manifest import files_intact, read_manifest
from bbdeploy.stages.metrics import DriftAccumulator, MapAccumulator
from bbdeploy.stages.parity import nonfinite_failure

DECODE_BATCH = 32  # images decoded at a time


@dataclass
class DriftOptions:
    artifacts: list[Path]
    data: Path
    labels_csv: Path | None = None
    class_names: Path | None = None
    limit: int | None = None  # evaluate N images, drawn across classes (seeded)
    layers: bool = False  # also compare every layer's tensors as the artifact's runtime computes them
    layer_samples: int = 16  # images the per-layer comparison uses (the first of the data)
    simulate_layers: bool = False  # also rank layers by quantizing each alone in PyTorch (int8 artifacts)
    simulated_samples: int = 64  # images the simulated ranking uses
    max_drop: float | None = None  # gate: accuracy drop in points
    min_agreement: float | None = None  # gate: top-1 agreement, a fraction
    exec_precision: str = "default"  # float compute precision where the runtime has the setting
    model: str | None = None  # your own backbone's MODULE:FUNCTION, named again (never read from a manifest)
    device: str = "local"  # where the artifacts run: local (this process) | ssh://... | qemu://pi5
    ssh_options: list[str] = field(default_factory=list)
    remote_python: str = "python3"
    timeout: float = 3600.0  # seconds the run on the device may take


@dataclass
class Artifact:
    path: Path
    manifest: dict

    @property
    def reference_key(self) -> tuple:
        backbone = self.manifest["backbone"]
        return (backbone["name"], backbone.get("width"), backbone["num_classes"], backbone["weights_sha256"],
                tuple(self.features["ends"]) if self.features else None)

    @property
    def features(self) -> dict | None:
        """The feature-map record of an `export --features` artifact (None: a classifier's logits)."""
        return self.manifest["backbone"].get("features")

    @property
    def preprocess_key(self) -> str:
        return repr(sorted(self.manifest["preprocess"].items()))


def open_artifact(path: str | Path) -> Artifact:
    """An artifact with its manifest, checked to be the file the manifest describes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BBDeployError(f"artifact {str(path)!r} does not exist; pass a file written by `bbdeploy export`")
    manifest = read_manifest(path)
    if manifest.get("stage") != "export" or manifest.get("artifact") != path.name:
        raise BBDeployError(f"manifest of {str(path)!r} describes another file; export the artifact again")
    if not files_intact(manifest, path.parent):
        raise BBDeployError(f"{str(path)!r} differs from what its manifest recorded (sha256); export it again")
    return Artifact(path, manifest)


def reference_model(artifact: Artifact) -> torch.nn.Module:
    """The float model the artifact was exported from, checked by its weights' digest."""
    backbone = artifact.manifest["backbone"]
    weights = backbone.get("weights_arg")
    if weights is None:
        raise BBDeployError(f"the manifest of {artifact.path.name} does not say how to rebuild its float model; "
                            "export the artifact again with this bbdeploy")
    model = float_model(backbone["name"], weights, backbone.get("width"), backbone["num_classes"])
    if weights_digest(model) != backbone["weights_sha256"]:
        raise BBDeployError(f"the float reference of {artifact.path.name} cannot be rebuilt: weights {weights!r} "
                            "are not the ones it was exported from; pass the original checkpoint or export again")
    if artifact.features:
        return recorded_extractor(model, artifact.features, artifact.manifest["preprocess"]["size"], backbone["name"])
    return model


def _import_named_code(artifact: Artifact, model: str | None) -> None:
    """An artifact of your own backbone needs its code named again: bbdeploy never imports an import path
    it read from a manifest. The code must be the file it was exported from."""
    backbone = artifact.manifest["backbone"]
    if not is_import_path(backbone["name"]):
        return
    if model != backbone["name"]:
        raise BBDeployError(f"{artifact.path.name} was exported from your own code {backbone['name']}; pass --model "
                            f"{backbone['name']} to rebuild its float reference (bbdeploy does not import code a "
                            "manifest names)")
    spec = load_custom(model, recorded_preprocess(artifact.manifest["preprocess"]))
    if backbone.get("code_sha256") and spec.source_sha256 != backbone["code_sha256"]:
        raise BBDeployError(f"the module of {model} changed since {artifact.path.name} was exported; export it again")


@dataclass
class DriftPlan:
    """Everything checked and loaded before the first image is evaluated."""

    options: DriftOptions
    artifacts: list[Artifact]
    data: EvalData
    references: dict[tuple, torch.nn.Module]
    device: object | None  # the opened device of --device; None: this process


def plan_drift(options: DriftOptions) -> DriftPlan:
    """Check the artifacts, the data and the gates, and rebuild each float reference: every bad input
    is reported here, before any work."""
    if not options.artifacts:
        raise BBDeployError("no artifact given; pass one or more files written by `bbdeploy export`")
    artifacts = [open_artifact(path) for path in options.artifacts]
    _check_logit_options(options, artifacts)
    data = eval_data(options.data, labels_csv=options.labels_csv, class_names=options.class_names,
                     limit=options.limit)
    for artifact in artifacts:
        if not artifact.features:
            check_labels(data, artifact.manifest["backbone"]["num_classes"], artifact.path.name)
    if options.max_drop is not None and data.labels is None:
        raise BBDeployError(f"--max-drop needs labels, and --data has none ({data.label_source.removeprefix('none: ')})")
    device = None
    if options.device != "local":
        from bbdeploy.stages.drift_device import open_drift_device

        device = open_drift_device(options)
    references = {}
    for artifact in artifacts:
        if artifact.reference_key not in references:
            _import_named_code(artifact, options.model)
            references[artifact.reference_key] = reference_model(artifact)
    return DriftPlan(options, artifacts, data, references, device)


def _check_logit_options(options: DriftOptions, artifacts: list[Artifact]) -> None:
    """A feature-map artifact is compared map by map; the options that judge logits do not apply to it."""
    maps = next((artifact for artifact in artifacts if artifact.features), None)
    logit_options = [name for name, given in (("--max-drop", options.max_drop is not None),
                                              ("--min-agreement", options.min_agreement is not None),
                                              ("--simulate-layers", options.simulate_layers)) if given]
    if maps is not None and logit_options:
        raise BBDeployError(f"{maps.path.name} returns feature maps, which have no top-1 or logits to judge; leave "
                            f"out {' and '.join(logit_options)}, or pass classifier artifacts")


class Crops:
    """The uint8 crops of the evaluation images (what a device is sent), per distinct preprocessing,
    DECODE_BATCH images at a time."""

    def __init__(self, data: EvalData, artifacts: list[Artifact]):
        self.paths = data.paths
        self.preprocess = {a.preprocess_key: recorded_preprocess(a.manifest["preprocess"]) for a in artifacts}

    def batch(self, start: int) -> dict[str, np.ndarray]:
        images = [load_image(path) for path in self.paths[start:start + DECODE_BATCH]]
        return {key: np.stack([crop_image(image, preprocess) for image in images])
                for key, preprocess in self.preprocess.items()}


class InProcessOutputs:
    """The artifacts run here, in this process, batch by batch."""

    def __init__(self, plan: DriftPlan, pinned: str | None):
        self.artifacts, self.source = plan.artifacts, Crops(plan.data, plan.artifacts)
        self.runners = [load_runner(artifact.path, exec_precision=pinned) for artifact in plan.artifacts]
        self.facts, self.pinned = device_facts(), pinned

    def crops(self, start: int) -> dict[str, np.ndarray]:
        return self.source.batch(start)

    def error(self, index: int) -> str | None:
        return None

    def all_outputs(self, index: int, inputs: np.ndarray, start: int) -> list[np.ndarray]:
        """Every output of artifact `index` on `inputs` (a classifier's first is its logits)."""
        manifest = self.artifacts[index].manifest
        return run_batched(self.runners[index], inputs, manifest["input"]["layout"].lower(), manifest["config"]["batch"],
                           all_outputs=True)

    def runtime(self, index: int) -> dict:
        runner = self.runners[index]
        return {"runtime": runner.runtime, "runtime_version": runner.runtime_version,
                "exec_precision": runner.exec_precision, "threads": None}

    def probes(self, index: int, probed, inputs: np.ndarray) -> list[tuple]:
        """What the probed artifact sends of each probe on `inputs` (drift --layers), run here."""
        from bbdeploy.stages.layer_diff import run_probes_here

        return run_probes_here(probed, inputs, self.pinned)

    def close(self) -> None:
        pass


def drift(options: DriftOptions | DriftPlan, progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Compare every artifact with its float reference on the images of `options.data`.

    Returns {"data": ..., "reference": ..., "references": [...], "results": [...]}; `progress(done,
    total)` is called after each batch of images.
    """
    plan = options if isinstance(options, DriftPlan) else plan_drift(options)
    options, artifacts, data, references = plan.options, plan.artifacts, plan.data, plan.references
    pinned = None if options.exec_precision == "default" else options.exec_precision
    probed = None
    if options.layers:
        from bbdeploy.stages.layer_diff import ProbedArtifacts

        probed = ProbedArtifacts(artifacts, references, min(options.layer_samples, len(data)))
    outputs = None
    try:
        if plan.device is None:
            outputs = InProcessOutputs(plan, pinned)
        else:
            from bbdeploy.stages.drift_device import DeviceOutputs

            outputs = DeviceOutputs(plan, pinned, progress, probed)
        accumulators = _accumulate(plan, outputs, progress)
        measured_on = where_measured(options.device, outputs.facts)
        results, row_references = _rows(plan, outputs, accumulators, measured_on)
        if probed is not None:
            _add_layer_diffs(plan, outputs, probed, results)
    finally:
        if outputs is not None:
            outputs.close()
        if probed is not None:
            probed.close()
    seen_references = {}
    for artifact, reference in zip(artifacts, row_references):
        seen_references.setdefault(artifact.reference_key, reference)
    report = {"data": {"folder": str(data.root), "images": len(data), "labels": data.label_source},
              "device": measured_on, "reference": next(iter(seen_references.values())),
              "references": list(seen_references.values()), "results": results,
              "exec_precision": options.exec_precision}  # the setting asked for; each row: what ran
    if options.simulate_layers:
        from bbdeploy.quantization.sensitivity import layer_sensitivity

        for artifact, result in zip(artifacts, results):
            if artifact.manifest["precision"] == "int8":
                result["simulated_sensitivity"] = layer_sensitivity(references[artifact.reference_key],
                                                                    artifact.manifest, data,
                                                                    samples=options.simulated_samples)
    return report


def _rows(plan: DriftPlan, outputs, accumulators: list, measured_on: dict) -> tuple[list, list]:
    """(a drift row per artifact, the figures of its float reference)."""
    rows, references, data = [], [], plan.data
    for index, (artifact, accumulator) in enumerate(zip(plan.artifacts, accumulators)):
        backbone = artifact.manifest["backbone"]
        reference = {"backbone": backbone["name"], "width": backbone.get("width"), "weights": backbone["weights"],
                     "samples": len(data), **accumulator.reference_accuracy()}
        failure = outputs.error(index)
        figures = accumulator.result() if failure is None else accumulator.failed_result(len(data))
        failure = failure or nonfinite_failure(figures["nonfinite_outputs"])
        row = DriftRow(status="failed" if failure else "ok", error=failure, artifact=str(artifact.path),
                       target=artifact.manifest["target"], precision=artifact.manifest["precision"],
                       backbone=backbone["name"], reference_accuracy_top1=reference["accuracy_top1"],
                       figures=figures, runtime=outputs.runtime(index), device=measured_on).to_json()
        rows.append(row)
        references.append(reference)
    return rows, references


def _add_layer_diffs(plan: DriftPlan, outputs, probed, results: list[dict]) -> None:
    """`layers`, `worst` and `layers_check` of every artifact that ran (stages/layer_diff.py), on the
    first `probed.samples` images, its probed copy run where the artifact ran; an artifact whose
    runtime cannot be probed says why in its check."""
    from bbdeploy.stages.layer_diff import layer_diff

    samples = probed.samples
    crops = [outputs.crops(start) for start in range(0, samples, DECODE_BATCH)]
    first = {key: np.concatenate([batch[key] for batch in crops])[:samples] for key in crops[0]}
    for index, (artifact, result, item) in enumerate(zip(plan.artifacts, results, probed.items)):
        if result["status"] == "failed":
            continue
        inputs = normalize(first[artifact.preprocess_key], *_mean_std(plan.artifacts, artifact.preprocess_key))
        try:
            if isinstance(item, str):
                raise BBDeployError(item)
            parts = [outputs.all_outputs(index, inputs[start:start + DECODE_BATCH], start)
                     for start in range(0, samples, DECODE_BATCH)]
            diff = layer_diff(item, inputs, outputs.probes(index, item, inputs), [np.concatenate(o) for o in zip(*parts)])
        except Exception as exc:  # a runtime or graph the probes cannot handle: this artifact says so
            why = str(exc) if isinstance(exc, BBDeployError) else f"its layers could not be probed: {one_line(exc)}"
            diff = {"samples": samples, "layers": [], "worst": None, "check": {"error": why}}
        result.update(layers=diff["layers"], worst=diff["worst"], layer_samples=diff["samples"],
                      layers_check=diff["check"])


def _accumulate(plan: DriftPlan, outputs, progress) -> list:
    """Feed every artifact's outputs and its reference's logits on the same inputs, batch by batch."""
    artifacts, data, references = plan.artifacts, plan.data, plan.references
    accumulators = [MapAccumulator(a.features["names"]) if a.features else DriftAccumulator() for a in artifacts]
    labels = np.asarray(data.labels) if data.labels is not None else None
    for start in range(0, len(data), DECODE_BATCH):
        crops = outputs.crops(start)
        inputs = {key: normalize(batch, *_mean_std(artifacts, key)) for key, batch in crops.items()}
        count = len(next(iter(crops.values())))
        batch_labels = labels[start:start + count] if labels is not None else None
        reference_outputs: dict[tuple, list[np.ndarray]] = {}
        for index, (artifact, accumulator) in enumerate(zip(artifacts, accumulators)):
            key = artifact.preprocess_key
            pair = (artifact.reference_key, key)
            if pair not in reference_outputs:
                reference_outputs[pair] = reference_run(references[artifact.reference_key], inputs[key])
            if outputs.error(index) is None:
                accumulator.add_outputs(reference_outputs[pair], outputs.all_outputs(index, inputs[key], start),
                                        batch_labels)
            else:  # the reference's own accuracy is still reported
                accumulator.add_reference(reference_outputs[pair], batch_labels)
        progress(start + count, len(data))
    return accumulators


def reference_run(model: torch.nn.Module, inputs: np.ndarray) -> list[np.ndarray]:
    """Every output of the float model (its logits, or each feature map) on `inputs`."""
    with torch.no_grad():
        output = model(torch.from_numpy(inputs))
    return [tensor.numpy() for tensor in (output if isinstance(output, (tuple, list)) else [output])]


def _mean_std(artifacts: list[Artifact], key: str) -> tuple:
    recorded = next(a.manifest["preprocess"] for a in artifacts if a.preprocess_key == key)
    return recorded["mean"], recorded["std"]


def gate_failures(report: dict, max_drop: float | None, min_agreement: float | None) -> list[str]:
    """One line per failed artifact (NaN output) and per artifact outside the gates (`--max-drop`
    points, `--min-agreement` fraction)."""
    failures = []
    for result in report["results"]:
        name = Path(result["artifact"]).name
        if result["status"] == "failed":
            failures.append(f"{name}: {result['error']}")
            continue
        if (result.get("layers_check") or {}).get("error"):
            failures.append(f"{name}: --layers: {result['layers_check']['error']}")
        if max_drop is not None and result["accuracy_drop"] is not None:
            if result["accuracy_drop"] > max_drop:
                failures.append(f"{name}: accuracy drop {result['accuracy_drop']:.2f} points > --max-drop {max_drop:g}")
        if min_agreement is not None and result["agreement_top1"] < min_agreement:
            failures.append(f"{name}: top-1 agreement {result['agreement_top1']:.4f} < --min-agreement {min_agreement:g}")
    return failures
