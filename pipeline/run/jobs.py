"""The stages `bbdeploy run` executes, as jobs a worker process (or a Ray task) can run alone.

Each job is plain, picklable data and returns plain data; every failure comes back as a result with
a one-line reason, never as an exception, so one bad row cannot stop the others. Export results are
cached by export itself (its manifest ids); drift and bench results are cached here, as JSON files
named by their stage id: the artifact's id + the data fingerprint (drift) or the device identity
(bench) + the options + bbdeploy's code. A result whose id exists is read, not measured again.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bbdeploy.errors import BBDeployError
from bbdeploy.rows import BenchRow, ExportRow, Outcome, failed
from bbdeploy.stages.manifest import code_digest, read_manifest, stage_id, tool_versions, write_json_atomic
from bbdeploy.run.pipeline_file import BenchSpec, CalibrationSpec, DeviceSpec, ModelSpec, PrecisionSpec, ValidationSpec
from bbdeploy.schema import exposed_fields, file_keys, key_of

BUILTIN_VALIDATION_IMAGES = 112  # as many as int8 parity uses (crops of the built-in evaluation photos)
BUILTIN_VALIDATION_SIDE = 320  # pixels: above every zoo input size's resize


def _failure(error: BaseException) -> str:
    """One line: the user-facing message, or the exception type and message of a crash."""
    if isinstance(error, BBDeployError):
        return str(error)
    last = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
    return f"{type(error).__name__}{where}: {str(error).splitlines()[0] if str(error) else ''}"[:500]


def _tools(manifest: dict) -> dict:
    """bbdeploy's code and the versions of the artifact's runtime here: an upgrade of either is a new
    result (a board's own runtime version is what the bench row records)."""
    from bbdeploy.exporters.registry import TARGETS

    return {"bbdeploy_code_sha256": code_digest(), **tool_versions(TARGETS[manifest["target"]].device_distributions)}


@dataclass(frozen=True)
class ExportJob:
    model: ModelSpec
    precision: PrecisionSpec
    targets: tuple[str, ...]
    calibration: CalibrationSpec
    folder: str  # where this model's artifacts go


def export_options(job: ExportJob):
    """The ExportOptions of `bbdeploy export` that this job stands for."""
    from bbdeploy.quantization.options import QATOptions, QuantOptions
    from bbdeploy.stages.export import ExportOptions
    from bbdeploy.stages.parity import DEFAULT_MIN_COSINE

    options = dict(job.precision.options)
    qat = None
    if job.precision.name == "int8-qat":
        qat_fields = {key: name for key, (name, _) in file_keys(QATOptions).items()}
        qat = QATOptions(**{qat_fields[key]: options.pop(key) for key in list(options) if key in qat_fields})
    min_cosine = options.pop("min_cosine", DEFAULT_MIN_COSINE)
    quant = QuantOptions(calib_data=job.calibration.data, calib_size=job.calibration.size,
                         keep_float=tuple(options.pop("keep_float", ())), qat=qat, **options)
    model = job.model
    return ExportOptions(model=model.name, targets=",".join(job.targets), weights=model.weights, width=model.width,
                         num_classes=model.num_classes, input_size=model.input_size, output=Path(job.folder),
                         precision="int8" if job.precision.name.startswith("int8") else job.precision.name,
                         quant=quant, min_cosine=min_cosine)


def run_export(job: ExportJob) -> dict:
    """{"rows": one per target (export's rows), "started", "finished"}; a job that cannot start
    (bad options, a missing folder) gives every target a failed row with the reason."""
    from bbdeploy.stages.export import export

    started = time.time()
    try:
        rows = export(export_options(job))
    except Exception as error:  # noqa: BLE001 - a failed row, whatever went wrong
        reason = _failure(error)
        rows = [failed(ExportRow, reason, target=target) for target in job.targets]
    return {"rows": rows, "started": started, "finished": time.time()}


@dataclass(frozen=True)
class DriftJob:
    artifacts: tuple[str, ...]
    validation: ValidationSpec
    data: str  # the validation folder (the built-in one already written)
    results: str  # folder of cached drift results
    device: DeviceSpec | None = None  # where the artifacts run; None: this process (the float model always here)


def data_fingerprint(paths: list[Path], root: Path, labels: list[int] | None) -> str:
    """sha256 over the evaluated images' relative paths and contents, and their labels."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    digest.update(repr(labels).encode())
    return digest.hexdigest()


def run_drift(job: DriftJob) -> dict:
    """{"started", "finished", "outcomes": {artifact path: {"status": ran|cached|failed, "result": drift's
    result row, "reference": ..., "error"}}}: one drift pass over the artifacts not cached yet."""
    started = time.time()
    outcomes = _drift_outcomes(job)
    return {"started": started, "finished": time.time(), "outcomes": outcomes}


def _drift_outcomes(job: DriftJob) -> dict:
    from bbdeploy.data.folders import eval_data
    from bbdeploy.stages.drift import DriftOptions, drift

    validation = job.validation
    try:
        data = eval_data(job.data, labels_csv=validation.labels, class_names=validation.class_names,
                         limit=validation.limit)
        fingerprint = data_fingerprint(data.paths, data.root, data.labels)
    except Exception as error:  # noqa: BLE001
        return {artifact: failed(Outcome, _failure(error)) for artifact in job.artifacts}
    config = {"data": fingerprint, "limit": validation.limit, "exec_precision": "default"}
    if validation.layers:  # a result without the per-layer view is not one with it
        config["layers"] = validation.layer_samples
    on = {}
    if job.device is not None:  # a device's own drift is a property of that device (and the host's one is not)
        config["device"] = device_identity(job.device)
        on = {"device": job.device.url, "ssh_options": list(job.device.ssh_options), "remote_python": job.device.python}
    outcomes, pending = _split_cached(job.artifacts, "drift", config, Path(job.results))
    if pending:
        try:
            report = drift(DriftOptions(artifacts=[Path(a) for a in pending], data=Path(job.data),
                                        labels_csv=validation.labels, class_names=validation.class_names,
                                        limit=validation.limit, layers=validation.layers,
                                        layer_samples=validation.layer_samples, **on))
        except Exception as error:  # noqa: BLE001
            reason = _failure(error)
            return {**outcomes, **{a: failed(Outcome, reason) for a in pending}}
        for (artifact, identity), result in zip(pending.items(), report["results"]):
            reference = next(r for r in report["references"] if r["backbone"] == result["backbone"])
            outcome = {"id": identity, "data": report["data"], "result": result, "reference": reference}
            if result["status"] == "ok":  # a NaN artifact is not a result to keep
                _write_result(Path(job.results) / f"drift-{identity}.json", outcome)
            outcomes[artifact] = {**outcome, "status": "ran" if result["status"] == "ok" else "failed",
                                  "error": result["error"]}
    return outcomes


@dataclass(frozen=True)
class BenchJob:
    artifacts: tuple[str, ...]
    device: DeviceSpec
    bench: BenchSpec
    results: str  # folder of cached bench results


def device_identity(device: DeviceSpec) -> dict:
    """What a latency or a device's drift is a property of: this machine's host and CPU for `local`,
    an emulated board's contents, the address of the others (the same board behind the same address)."""
    from bbdeploy.targets.devices import device_identity as identity

    return identity(device.url)


def bench_options(device: DeviceSpec, bench: BenchSpec, artifacts: list[Path]):
    """The BenchOptions of a device entry and the bench section, field by field as the schema maps them."""
    from bbdeploy.targets.bench import BenchOptions

    values = {}
    for entry in exposed_fields(BenchOptions):
        key = key_of(BenchOptions, entry.name)
        if key is not None:
            values[entry.name] = getattr(device, key.rpartition(".")[2]) if key.startswith("devices.") else getattr(bench, key)
    binary = values["benchmark_binary"]
    return BenchOptions(artifacts=artifacts, **{**values, "ssh_options": list(values["ssh_options"]),
                                                "benchmark_binary": Path(binary) if binary else None})


def run_bench(job: BenchJob) -> dict:
    """{"started", "finished", "device": facts, "outcomes": {artifact: {"status": ran|cached|failed,
    "row", "error"}}}: the artifacts without a cached result are benchmarked together, in one session
    on the device (started..finished is that session)."""
    from bbdeploy.targets.bench import bench

    device, settings = job.device, job.bench
    config = {"device": device_identity(device), "threads": settings.threads, "runs": settings.runs,
              "warmup": settings.warmup, "min_time": settings.min_time, "exec_precision": settings.exec_precision,
              **{key: getattr(settings, key) for key in ("cooldown", "max_temp", "sustained", "profile")
                 if getattr(settings, key) is not None}, **({"cpus": device.cpus} if device.cpus else {})}
    outcomes, pending = _split_cached(job.artifacts, "bench", config, Path(job.results))
    started = finished = None
    facts = None
    options = bench_options(device, settings, [Path(a) for a in pending])
    for artifact, reason in _unsupported(options).items():  # e.g. adb runs TFLite only: n/a, not a failure
        outcomes[artifact] = {"status": "unsupported", "error": reason}
        del pending[artifact]
    if pending:
        options.artifacts = [Path(a) for a in pending]
        started = time.time()
        try:
            result = bench(options)
            rows, facts = result["results"], result["device"]
        except Exception as error:  # noqa: BLE001 - e.g. the device cannot be reached: its rows fail
            rows = [failed(BenchRow, _failure(error)) for _ in pending]
        finished = time.time()
        for (artifact, identity), row in zip(pending.items(), rows):
            if row["status"] == "measured":
                outcome = {"id": identity, "row": row, "device": facts, "started": started, "finished": finished}
                _write_result(Path(job.results) / f"bench-{identity}.json", outcome)
                outcomes[artifact] = {**outcome, "status": "ran"}
            else:
                outcomes[artifact] = {**failed(Outcome, row["error"]), "started": started, "finished": finished}
    return {"started": started, "finished": finished, "outcomes": outcomes}


def _unsupported(options) -> dict[str, str]:
    """Artifacts the device does not take, with its reason (none where the device cannot be opened:
    then the bench itself fails with the reason)."""
    from bbdeploy.targets.bench import artifact_entry
    from bbdeploy.targets.devices import open_device

    try:
        handle = open_device(options)
    except BBDeployError:
        return {}
    refused = {}
    for path in options.artifacts:
        try:
            handle.check(artifact_entry(path))
        except BBDeployError as error:
            refused[str(path)] = str(error)
        except Exception:  # noqa: BLE001 - an unreadable artifact fails in the bench itself
            pass
    return refused


def _split_cached(artifacts: tuple[str, ...], stage: str, config: dict, results: Path) -> tuple[dict, dict]:
    """({artifact: cached or failed outcome}, {artifact: stage id still to run}): each artifact's stage
    id over its manifest id, `config` and the tools, and the result file of that id if it exists."""
    outcomes, pending = {}, {}
    for artifact in artifacts:
        try:
            manifest = read_manifest(Path(artifact))
            identity = stage_id(manifest["id"], stage, config, _tools(manifest))
        except Exception as error:  # noqa: BLE001
            outcomes[artifact] = failed(Outcome, _failure(error))
            continue
        cached = _read_result(results / f"{stage}-{identity}.json")
        if cached is not None:
            outcomes[artifact] = {**cached, "status": "cached"}
        else:
            pending[artifact] = identity
    return outcomes, pending


def _read_result(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_result(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def write_builtin_validation(folder: Path) -> Path:
    """Crops of the built-in evaluation photos as PNG files (written once, through a staging folder,
    so a half-written set never looks complete); no calibration photo is among them."""
    import shutil
    import tempfile

    from PIL import Image

    from bbdeploy.data.photos import EVALUATION_PHOTOS, builtin_photo
    from bbdeploy.quantization.calibration import PhotoCrops

    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for index, (name, box) in enumerate(PhotoCrops(BUILTIN_VALIDATION_IMAGES, names=EVALUATION_PHOTOS)):
            crop = Image.fromarray(builtin_photo(name)).crop(box)
            crop.resize((BUILTIN_VALIDATION_SIDE, BUILTIN_VALIDATION_SIDE), Image.BILINEAR).save(
                staging / f"{index:03d}-{name}.png")
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder
