"""The export stage: a backbone becomes deployable float or int8 artifacts, each one run with its own
runtime, compared with PyTorch on real photos, and described by a manifest.

Each target is converted in a private staging folder and published by renames, artifact files first
and the manifest last: a manifest on disk always describes complete files, and a failed or
interrupted export leaves the previous artifact (if any) as it was.

The cache is asked first: an artifact's id is computed from the request, the weights' digest and
the fingerprints of its images (file contents, or how built-in crops are drawn; never pixels), so a request
whose artifacts all exist costs a model build. Everything else is done once per request and shared
by its targets: the parity images and the float model's logits on them, and the int8 work
(`ptq.SharedWork`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bbdeploy.errors import EXIT_FAILED, BBDeployError
from bbdeploy.exporters.registry import Target, exporter, resolve_targets
from bbdeploy.backbones.features import compare_features
from bbdeploy.progress import Progress
from bbdeploy.quantization import ptq
from bbdeploy.quantization.calibration import CalibrationSet, calibration_set
from bbdeploy.quantization.options import QATOptions, QuantOptions
from bbdeploy.quantization.qat import QATRun, is_main_process, world_size
from bbdeploy.quantization.training_data import training_set
from bbdeploy.quiet import captured_output
from bbdeploy.rows import FROM_MANIFEST, ExportRow, failed
from bbdeploy.stages.build import Built, backbone_spec, build, input_size
from bbdeploy.stages.manifest import (SCHEMA, code_digest, file_entry, files_intact, manifest_path, now, read_manifest,
                                      stage_id, tool_versions, write_json_atomic)
from bbdeploy.stages.parity import DEFAULT_MIN_COSINE, FLOAT_TOLERANCE, compare_logits, parity_failure, run_batched
from bbdeploy.targets.runner import load as load_runner

MAX_BATCH = 64


@dataclass
class ExportOptions:
    model: str
    targets: str = "all"
    weights: str = "imagenet"  # or "random" (plumbing checks) or a checkpoint PATH
    width: float | None = None
    num_classes: int | None = None
    input_size: int | None = None
    batch: int = 1
    output: Path | None = None
    precision: str = "fp32"
    layout: str | None = None  # None: each target's default (NHWC for TFLite)
    force: bool = False
    quant: QuantOptions = field(default_factory=QuantOptions)  # used when precision is int8
    min_cosine: float = DEFAULT_MIN_COSINE  # int8 rows below this mean logit cosine with PyTorch fail
    preprocess: Path | None = None  # your own backbone (module:function): its preprocessing, as JSON
    features: tuple[int, ...] | None = None  # export these stages' feature maps instead of the logits


@dataclass
class Plan:
    """One target's artifact of a request, and the id that says whether it exists already."""

    target: Target
    layout: str
    artifact: Path
    export_id: str
    config: dict
    tools: dict


def export(options: ExportOptions, progress: Progress = Progress(),
           warn: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Export to every requested target; one result row per target, failures included.

    Bad options raise BBDeployError before anything is built; a target that fails to convert or to
    pass parity gives a row with `status: failed` and the others still run (an artifact that
    converted but failed parity stays on disk, its manifest saying why it failed).
    """
    spec = backbone_spec(options)
    targets = resolve_targets(options.targets)
    layouts = {t.name: layout_for(t, options) for t in targets}
    for target in targets:
        if options.precision not in target.precisions:
            raise BBDeployError(f"{target.name} does not export {options.precision}; pass one of "
                                f"{', '.join(target.precisions)}")
    size = input_size(spec, options.input_size)
    if not 1 <= options.batch <= MAX_BATCH:
        raise BBDeployError(f"--batch {options.batch} is out of range; pass 1 to {MAX_BATCH}")
    if not 0 <= options.min_cosine <= 1:
        raise BBDeployError(f"--min-cosine {options.min_cosine:g} is a cosine; pass a number from 0 to 1, "
                            f"e.g. {DEFAULT_MIN_COSINE}")
    if options.features and options.num_classes is not None:
        raise BBDeployError("--features exports the backbone without its classifier; leave out --num-classes")
    if options.features and options.quant.qat is not None:
        raise BBDeployError("--qat distills the classifier's logits; leave out --features (or --qat)")
    calibration = training = None
    qat_options = options.quant.qat
    if qat_options is not None and options.precision != "int8":
        raise BBDeployError("--qat trains for int8; pass --int8 with it")
    if options.precision == "int8":
        options.quant.validate()
        for target in targets:
            ptq.target_choices(target, options.quant)  # e.g. --calib-method mse with onnx: exit 2 now
        if qat_options is not None:
            progress.say(f"decoding the training images of {qat_options.train_data}")
            training = training_set(qat_options.train_data, spec.preprocess, size,
                                    labels_csv=qat_options.train_labels, class_names=qat_options.class_names)
        # with QAT and no --calib-data, the toolchains calibrate on (a sample of) the training images
        calib_data = options.quant.calib_data or (qat_options.train_data if qat_options else None)
        calibration = calibration_set(calib_data, spec.preprocess, size, options.quant.calib_size)
    out_dir = options.output or Path("bbdeploy-out") / spec.name
    _check_writable(out_dir)
    progress.say(f"building {spec.name} (weights: {options.weights})")
    built = build(spec, options, size, _parity_source(calibration, qat_options))
    qat_run = None
    if calibration is not None:
        ptq.float_layers(built.deploy_model, options.quant.keep_float)  # unknown names: one line, nothing written
    if training is not None:
        qat_run = QATRun(qat_options, training, built.record["weights_sha256"],
                         ptq.float_layers(built.deploy_model, options.quant.keep_float),
                         Path(out_dir) / "qat-checkpoints", progress)
        qat_run.check_resume([ptq.target_grid(target) for target in targets])  # a wrong --resume: nothing written
    # the choices that make figures less telling, said once all input is known to be good
    for note in (built.record["note"], calibration.warning if calibration else None):
        if note:
            warn(note)
    out_dir = _writable_folder(out_dir)
    calibration_fingerprint = calibration.fingerprint() if calibration is not None else None
    work = (ptq.SharedWork(built.deploy_model, calibration, options.quant.keep_float, progress, qat_run)
            if calibration is not None else None)
    plans = [plan_target(built, target, options, layouts[target.name], out_dir, calibration_fingerprint,
                         training.fingerprint if training is not None else None) for target in targets]
    cached_manifests = [None if options.force else _cached(manifest_path(plan.artifact), plan.export_id, out_dir)
                        for plan in plans]
    if qat_run is not None and world_size() > 1:  # every torchrun process trains; the first one goes on
        for plan, cached in zip(plans, cached_manifests):
            if cached is None:
                ptq.train_ahead(plan.target, work, options.quant)
        if not is_main_process():
            return []
    rows = []
    for target, plan, cached in zip(targets, plans, cached_manifests):
        if cached:
            rows.append(_judged_row(cached, plan.artifact, "cached", options.min_cosine))
            continue
        progress.say(f"exporting {target.name} {options.precision} ({plan.layout.upper()})")
        try:
            rows.append(export_target(built, plan, options, out_dir, work))
        except BBDeployError as exc:  # conversion, parity or a crash of the converter: this row fails
            rows.append(failed(ExportRow, str(exc), target=target.name, precision=options.precision))
    return rows


def _parity_source(calibration: CalibrationSet | None, qat: QATOptions | None) -> CalibrationSet | None:
    """The set whose held-out images parity may use: not one QAT trains on (the training folder is
    used whole), so then the built-in evaluation photos."""
    if calibration is None or qat is None or calibration.kind != "folder":
        return calibration
    same = Path(calibration.source).resolve() == Path(qat.train_data).expanduser().resolve()
    return None if same else calibration


def layout_for(target: Target, options: ExportOptions) -> str:
    layout = (options.layout or target.layouts[0]).lower()
    if layout not in target.layouts:
        raise BBDeployError(f"{target.name} artifacts take {' or '.join(target.layouts).upper()} input, "
                            f"not {layout.upper()}; leave out --layout or pass {target.layouts[0]}")
    return layout


def _check_writable(folder: Path) -> None:
    """Fail before any work when the output folder cannot be created: its nearest existing ancestor
    must be a writable folder."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BBDeployError(f"cannot write to output folder {str(folder)!r} ({existing} is not a writable folder); "
                            "pass --output to a writable folder")


def _writable_folder(folder: Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BBDeployError(f"cannot write to output folder {str(folder)!r} ({exc.strerror or exc}); "
                            "pass --output to a writable folder") from None
    return folder


def artifact_name(built: Built, target: Target, options: ExportOptions, layout: str) -> str:
    """`<model>[_w<width>][_<size>px][_b<batch>]_<precision>[_qat][_<layout>]<suffix>`: every choice that
    differs from the default is in the name, so different exports never overwrite each other."""
    size = built.record["preprocess"]["size"]
    tags = [re.sub(r"[^\w-]", "_", built.spec.name)]  # your own `module:function`: no ':' in a file name
    if options.width not in (None, 1.0):
        tags.append(f"w{options.width:g}")
    if size != built.spec.preprocess.input_size:
        tags.append(f"{size}px")
    if options.batch != 1:
        tags.append(f"b{options.batch}")
    if options.features:
        tags.append("f" + "".join(map(str, options.features)))
    tags.append(options.precision)
    if options.quant.qat is not None and options.precision == "int8":
        tags.append("qat")
    if layout != target.layouts[0]:
        tags.append(layout)
    return "_".join(tags) + target.suffix


def plan_target(built: Built, target: Target, options: ExportOptions, layout: str, out_dir: Path,
                calibration_fingerprint: str | None, training_fingerprint: str | None = None) -> Plan:
    """The artifact's path and id, from what is known without decoding an image or converting."""
    config = {"target": target.name, "precision": options.precision, "layout": layout, "batch": options.batch,
              "input_size": built.record["preprocess"]["size"], "parity_images": built.parity.fingerprint}
    if calibration_fingerprint is not None:
        config["quantization"] = {**options.quant.as_config(), "calibration": calibration_fingerprint}
    if training_fingerprint is not None:
        config["quantization"]["qat"]["train_data"] = training_fingerprint
    tools = {**tool_versions(target.distributions), "bbdeploy_code_sha256": code_digest()}
    return Plan(target, layout, out_dir / artifact_name(built, target, options, layout),
                stage_id(built.record["id"], "export", config, tools), config, tools)


def export_target(built: Built, plan: Plan, options: ExportOptions, out_dir: Path,
                  work: ptq.SharedWork | None = None) -> dict:
    """Convert (or quantize with `work`), check parity, describe and publish one artifact."""
    target, layout, artifact = plan.target, plan.layout, plan.artifact
    precision, batch = options.precision, options.batch
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    log = staging / "convert.log"
    try:
        with captured_output(log):
            module = exporter(target)
        images = built.parity.images
        staged = staging / artifact.name
        sample = torch.from_numpy(np.resize(images, (batch, *images.shape[1:])))
        shared_before = work.seconds if work is not None else 0.0
        with captured_output(log):
            started = time.perf_counter()
            if work is not None:
                quantization = ptq.quantize(target, work, sample, staged, options.quant, layout=layout)
            else:
                module.convert(built.float_model, sample, staged, precision=precision, layout=layout)
                quantization = None
            convert_s = time.perf_counter() - started
            started = time.perf_counter()
            # parity: the model as converted (no bf16), on as many threads as torch may use here
            runner = load_runner(staged, threads=torch.get_num_threads(), exec_precision="f32")
            outputs = run_batched(runner, images, layout, batch, all_outputs=True)
            parity_s = time.perf_counter() - started
            ops = module.op_histogram(staged)
        features = built.record["features"]
        if features:
            parity = compare_features(built.parity.reference, outputs, features["names"])
        else:
            parity = compare_logits(built.parity.reference[0], outputs[0])
        parity["images"] = built.parity.note
        parity["tolerance"] = FLOAT_TOLERANCE.get(precision)
        parity["exec_precision"] = runner.exec_precision  # pinned to f32 where the runtime could pick bf16
        parity.update(_verdict(parity, precision, options.min_cosine))

        files = [staged, *(staged.with_suffix(suffix) for suffix in target.companions)]
        manifest = {
            "schema": SCHEMA, "id": plan.export_id, "parent": built.record["id"], "stage": "export",
            "created": now(), "config": plan.config,
            "artifact": artifact.name, "target": target.name, "precision": precision,
            "files": [file_entry(f) for f in files],
            "input": {**runner.input.as_dict(), "layout": layout.upper()},
            "output": runner.output.as_dict(),
            "outputs": [spec.as_dict() for spec in runner.outputs],
            "preprocess": built.record["preprocess"],
            "backbone": {k: v for k, v in built.record.items() if k not in ("id", "preprocess", "build_s")},
            "calibration": work.calibration.record() if work is not None else None,
            "quantization": quantization,
            "runtime": {"name": runner.runtime, "version": runner.runtime_version},
            "parity": parity,
            "ops": ops,
            "tools": plan.tools,
            # convert_s includes shared_s: the int8 work this target was the first to need (decoding the
            # calibration images, GPTQ on a grid), which later targets reuse
            "timings": {"build_s": built.record["build_s"], "convert_s": round(convert_s, 3),
                        "shared_s": round((work.seconds if work is not None else 0.0) - shared_before, 3),
                        "parity_s": round(parity_s, 3)},
        }
        del runner
        _publish(files, out_dir, manifest, manifest_path(artifact))
        return _judged_row(manifest, artifact, "exported", options.min_cosine)
    except Exception as exc:  # any failure of this target becomes its row's error, with the log kept
        kept = _keep_log(log, artifact)
        where = f" (converter log: {kept})" if kept else ""
        if isinstance(exc, BBDeployError):
            raise BBDeployError(f"{exc}{where}", exc.exit_code) from None
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BBDeployError(f"{type(exc).__name__}: {first_line}{where}", EXIT_FAILED) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cached(manifest_file: Path, export_id: str, out_dir: Path) -> dict | None:
    """The existing manifest when it describes this very export and its files are intact."""
    if not manifest_file.exists():
        return None
    try:
        previous = read_manifest(manifest_file)
    except BBDeployError:
        return None
    return previous if previous.get("id") == export_id and files_intact(previous, out_dir) else None


def _keep_log(log: Path, artifact: Path) -> Path | None:
    """Move a failed conversion's log next to where the artifact would have been."""
    if not log.exists() or log.stat().st_size == 0:
        return None
    kept = artifact.with_name(artifact.name + ".log")
    shutil.move(log, kept)
    return kept


def _publish(files: list[Path], out_dir: Path, manifest: dict, manifest_file: Path) -> None:
    """Old manifest out, new files in, new manifest last."""
    manifest_file.unlink(missing_ok=True)
    for staged in files:
        os.replace(staged, out_dir / staged.name)
    write_json_atomic(manifest_file, manifest)


def _judged_row(manifest: dict, artifact: Path, status: str, min_cosine: float) -> dict:
    """The result row, judged by today's floor: a failed artifact is a failed row, and its manifest
    says so (rewritten when a cached artifact is judged by another --min-cosine than before)."""
    parity = manifest["parity"]
    verdict = _verdict(parity, manifest["precision"], min_cosine)
    if any(parity.get(key) != value for key, value in verdict.items()):
        parity.update(verdict)
        write_json_atomic(manifest_path(artifact), manifest)
    row = _row(manifest, artifact, status)
    if verdict["failure"]:
        row.update(status="failed", error=f"{verdict['failure']} ({artifact.name} kept on disk, its manifest "
                                          "says failed)")
    return row


def _verdict(parity: dict, precision: str, min_cosine: float) -> dict:
    failure = parity_failure(parity, precision, min_cosine)
    return {"passed": failure is None, "failure": failure,
            "min_cosine": min_cosine if precision not in FLOAT_TOLERANCE else None}


def _row(manifest: dict, artifact: Path, status: str) -> dict:
    return ExportRow(status=status, error=None, artifact=str(artifact), manifest=str(manifest_path(artifact)),
                     target=manifest["target"], precision=manifest["precision"],
                     bytes=sum(f["bytes"] for f in manifest["files"]),
                     described={key: manifest[key] for key in FROM_MANIFEST}).to_json()
