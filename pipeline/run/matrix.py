"""`bbdeploy run`: the whole matrix of a pipeline file, stage by stage, in parallel but fair to devices.

Export jobs (one per model x precision, all targets: they share the build, calibration and float
measurements) start at once; when one finishes, drift of its artifacts and a bench job per device
follow. Two bench jobs never share a device, and a bench on `local` runs only while nothing else of
the pipeline runs (a benchmark beside a conversion measures the conversion). Every outcome becomes
rows of the report (run_report.py); nothing here raises for a failed row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bbdeploy.errors import BBDeployError
from bbdeploy.rows import ExportRow, Outcome, failed
from bbdeploy.run.executors import InlineExecutor, LocalExecutor, RayExecutor
from bbdeploy.run.pipeline_file import DeviceSpec, ModelSpec, Pipeline
from bbdeploy.run.jobs import (BenchJob, DriftJob, ExportJob, run_bench, run_drift, run_export,
                         write_builtin_validation)


@dataclass
class RunOptions:
    pipeline: Pipeline
    jobs: int = 1
    executor: str = "local"  # local | ray
    address: str | None = None  # a running Ray cluster; None: start one here


def model_key(model: ModelSpec) -> str:
    """The model's folder name: its name and a digest of its settings (two entries of one backbone,
    e.g. other weights, widths or calibration images, never share artifacts)."""
    settings = repr((model.weights, model.width, model.input_size, model.num_classes, model.calibration))
    return f"{model.name}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


@dataclass
class Outcomes:
    """What the jobs returned, keyed for the report."""
    exports: dict  # (model index, precision name) -> run_export's result
    drifts: dict  # (artifact path, device name; None: here) -> run_drift's outcome
    benches: dict  # (artifact path, device name) -> run_bench's outcome for it
    jobs: list = dataclasses.field(default_factory=list)  # {"kind", "what", "device", "started", "finished"}
    wall_s: float = 0.0


def _check_validation(pipeline: Pipeline) -> None:
    folder = pipeline.validation.data
    if folder is not None and not Path(folder).expanduser().is_dir():
        raise BBDeployError(f"validation.data {folder!r} is not a folder; pass a folder of images or null for the "
                            "built-in evaluation photos")


def _open_executor(options: RunOptions, devices: list[str]):
    if options.jobs < 1:
        raise BBDeployError(f"--jobs {options.jobs} must be at least 1")
    if options.executor == "ray":
        return RayExecutor(options.address, devices, options.jobs)
    if options.executor == "local":
        return LocalExecutor(options.jobs) if options.jobs > 1 else InlineExecutor()
    raise BBDeployError(f"unknown --executor {options.executor!r}; pass local or ray")


def _how_to_declare(device: DeviceSpec) -> str:
    return f"start a node that reaches {device.url} with --resources='{{\"device:{device.name}\": 1}}'"


def _undeclared(device: DeviceSpec) -> dict:
    return failed(Outcome, f"the Ray cluster has no resource device:{device.name}; {_how_to_declare(device)}")


def execute(options: RunOptions, say: Callable[[str], None] = lambda message: None,
            warn: Callable[[str], None] = lambda message: None,
            finished: Callable[[str], None] = lambda line: None) -> Outcomes:
    """Run every job of the pipeline; bad input raises before anything is written. What is known to
    fail before the first job (a device the Ray cluster does not declare) is said through `warn` at
    start, and the rest runs. `say` hears of each job that starts, `finished` gets one line per job
    that ended (a log piped to a file shows the run's progress)."""
    pipeline = options.pipeline
    _check_validation(pipeline)
    devices = {device.name: device for device in pipeline.devices}
    executor = _open_executor(options, list(devices))
    for name in getattr(executor, "missing_devices", ()):
        warn(f"the Ray cluster has no resource device:{name}: the rows of {name} will fail "
             f"({_how_to_declare(devices[name])}); running the others")
    try:
        output = Path(pipeline.output).expanduser()
        output.mkdir(parents=True, exist_ok=True)
        data = (Path(pipeline.validation.data).expanduser() if pipeline.validation.data is not None
                else write_builtin_validation(output / "data" / "builtin-evaluation"))
        return _drive(executor, pipeline, output, data, devices, say, finished)
    finally:
        executor.close()


def _drive(executor, pipeline: Pipeline, output: Path, data: Path, devices: dict[str, DeviceSpec],
           say: Callable[[str], None], finished: Callable[[str], None] = lambda line: None) -> Outcomes:
    """Submit jobs as their inputs are ready and the devices allow, collect what they return."""
    results = output / "results"
    undeclared = set(getattr(executor, "missing_devices", ()))
    outcomes = Outcomes({}, {}, {})
    started = time.perf_counter()
    waiting: list[tuple[str, object, object]] = []  # (kind, job, key)
    for index, model in enumerate(pipeline.models):
        for precision in pipeline.precisions:
            folder = output / "artifacts" / model_key(model)
            calibration = (dataclasses.replace(pipeline.calibration, data=model.calibration) if model.calibration
                           else pipeline.calibration)
            job = ExportJob(model, precision, pipeline.targets, calibration, str(folder))
            waiting.append(("export", job, (index, precision.name)))
    in_flight: dict[Future, tuple[str, object, object]] = {}
    busy_devices: set[str] = set()

    def submittable(kind: str, job) -> bool:
        if any(k == "bench" and j.device.url == "local" for k, j, _ in in_flight.values()):
            return False  # a local benchmark has this machine to itself
        if kind != "bench" and (kind != "drift" or job.device is None):
            return True
        if job.device.url == "local":
            return not in_flight
        return executor.serializes_devices or job.device.name not in busy_devices

    while waiting or in_flight:
        for item in list(waiting):
            kind, job, key = item
            if not submittable(kind, job):
                continue
            waiting.remove(item)
            function = {"export": run_export, "drift": run_drift, "bench": run_bench}[kind]
            device = _device_of(kind, job)
            in_flight[executor.submit(function, job, device=device)] = item
            if device is not None:
                busy_devices.add(device)
                say(f"{kind} on {device}: {len(job.artifacts)} artifact(s)")
            elif kind == "export":
                say(f"export {job.model.name} {job.precision.name}")
        if not in_flight:
            break
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            kind, job, key = in_flight.pop(future)
            result = _result_of(future, kind, job)
            outcomes.jobs.append(_job_record(kind, job, result))
            finished(finished_line(outcomes.jobs[-1], result, time.perf_counter() - started))
            if kind == "export":
                outcomes.exports[key] = result
                artifacts = tuple(row["artifact"] for row in result["rows"]
                                  if row["status"] in ("exported", "cached") and row.get("artifact"))
                if not artifacts:
                    continue
                waiting.append(("drift", DriftJob(artifacts, pipeline.validation, str(data), str(results)), None))
                for device in devices.values():
                    on_device = _drifts_on(device)
                    if device.name in undeclared:
                        outcomes.benches.update({(artifact, device.name): _undeclared(device) for artifact in artifacts})
                        if on_device:
                            outcomes.drifts.update({(artifact, device.name): _undeclared(device) for artifact in artifacts})
                        continue
                    if on_device:
                        waiting.append(("drift", DriftJob(artifacts, pipeline.validation, str(data), str(results),
                                                          device), None))
                    waiting.append(("bench", BenchJob(artifacts, device, pipeline.bench, str(results)), None))
            elif kind == "drift":
                if job.device is not None:
                    busy_devices.discard(job.device.name)
                where = job.device.name if job.device is not None else None
                outcomes.drifts.update({(artifact, where): outcome for artifact, outcome in result["outcomes"].items()})
            else:
                busy_devices.discard(job.device.name)
                for artifact, outcome in result["outcomes"].items():
                    outcomes.benches[(artifact, job.device.name)] = outcome
    outcomes.wall_s = time.perf_counter() - started
    return outcomes


def _drifts_on(device: DeviceSpec) -> bool:
    """Whether the device measures its own drift: every device that returns outputs, except this
    machine (its drift is the one here)."""
    from bbdeploy.targets.devices import device_class

    return device.url != "local" and device_class(device.url).NO_OUTPUTS is None


def _device_of(kind: str, job) -> str | None:
    """The device a job holds while it runs (a bench, or a drift on a device), else None."""
    device = getattr(job, "device", None)
    return device.name if kind != "export" and device is not None else None


def _result_of(future: Future, kind: str, job) -> dict:
    """The job's result; a worker that died (killed, out of memory) fails the job's rows instead."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001
        reason = f"the {kind} worker died ({type(error).__name__}: {str(error)[:200]})"
        if kind == "export":
            return {"rows": [failed(ExportRow, reason, target=t) for t in job.targets], "started": None, "finished": None}
        return {"started": None, "finished": None, "outcomes": {artifact: failed(Outcome, reason) for artifact in job.artifacts}}


def finished_line(record: dict, result: dict, elapsed_s: float) -> str:
    """One line for a job that ended: `[ 84 s] done export mobilenet_v1 int8: 4 exported, 1 cached`."""
    statuses = [row["status"] for row in result.get("rows") or result.get("outcomes", {}).values()]
    counts = ", ".join(f"{statuses.count(status)} {status}" for status in dict.fromkeys(statuses)) or "nothing to do"
    where = f" on {record['device']}" if record["device"] else ""
    what = record["what"] if record["kind"] == "export" else f"{len(statuses)} artifact(s)"
    return f"[{elapsed_s:4.0f} s] done {record['kind']}{where} {what}: {counts}"


def _job_record(kind: str, job, result: dict) -> dict:
    """When a job worked (its own clock; None for a job that only read cached results)."""
    if kind == "export":
        what = f"{job.model.name} {job.precision.name}"
    else:
        what = ", ".join(Path(artifact).name for artifact in job.artifacts)
    return {"kind": kind, "what": what, "device": _device_of(kind, job),
            "started": result.get("started"), "finished": result.get("finished")}
