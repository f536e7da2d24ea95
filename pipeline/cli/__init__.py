"""The `bbdeploy` command: thin Typer commands over the library functions.

Human output (Rich tables, progress) goes to stderr, machine output (`--json`) to stdout. A user
error is one `error: ...` line and exit code 2, never a traceback. Heavy libraries (torch and the
converters) are imported inside the commands, so `bbdeploy --help` is instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bbdeploy import __version__
from bbdeploy.errors import EXIT_FAILED, BBDeployError
from bbdeploy.exporters.registry import TARGETS, choices_help
from bbdeploy.stages.parity import DEFAULT_MIN_COSINE
from bbdeploy.quantization.options import QATOptions, QuantOptions
from bbdeploy.schema import help_of
from bbdeploy.targets.bench import BenchOptions, check_exec_precision
from bbdeploy.cli.tables import (backbones_table, print_bench_table, print_drift_table, print_export_table,
                                 print_run_table, stage_table)

app = typer.Typer(
    name="bbdeploy",
    help=f"Quantize lightweight image backbones to int8, export them ({', '.join(TARGETS)}), "
         "and measure drift and on-device latency.\n\n"
         "Exit codes: 0 success, 1 a run finished but something failed, 2 bad input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"bbdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """bbdeploy: quantize, export, validate and benchmark mobile image backbones."""


@app.command()
def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Filter names, e.g. 'mobilenet*' or 'lite'.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list on stdout.")] = False,
    detail: Annotated[bool, typer.Option("--detail", help="Add each stage's channels and the receptive field at the default input size.")] = False,
) -> None:
    """List the backbones: family, parameters, MACs, input size, ImageNet weights available offline."""
    from bbdeploy.backbones.zoo import backbone_info, list_backbones

    names = list_backbones(pattern)
    if not names:
        raise BBDeployError(f"no backbone matches {pattern!r}; run `bbdeploy models` to list them all")
    rows = [backbone_info(name) for name in names]
    if detail:
        from bbdeploy.backbones.receptive_fields import describe_stages
        from bbdeploy.backbones.zoo import create_backbone

        for row in rows:
            row["stages"] = describe_stages(create_backbone(row["name"]), row["input_size"])
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from bbdeploy.quiet import stderr_console

    stderr_console().print(backbones_table(rows, detail))


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="Backbone name or alias, e.g. efficientnet_lite0, mobilenetv3.")],
    weights: Annotated[str, typer.Option(help="random | imagenet | PATH to a checkpoint.")] = "random",
    width: Annotated[Optional[float], typer.Option(help="Width multiplier, where the family has several.")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classifier size; default: the checkpoint's.")] = None,
    stages: Annotated[bool, typer.Option("--stages", help="Per stage: output stride, feature map, channels, receptive field, parameters, MACs.")] = False,
    input_size: Annotated[Optional[int], typer.Option(help="Input side for --stages; default: the backbone's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object on stdout.")] = False,
) -> None:
    """Build one backbone with its weights (checking they load) and describe it."""
    from bbdeploy.backbones.custom import is_import_path, load_custom
    from bbdeploy.backbones.checkpoints import head_name
    from bbdeploy.stages.build import input_size as checked_input_size
    from bbdeploy.backbones.zoo import backbone_info, create_backbone

    if is_import_path(model):
        load_custom(model)  # the user named this code on the command line
    module = create_backbone(model, weights=weights, width=width, num_classes=num_classes)
    details = backbone_info(model, width=width)
    details["weights"] = module.weights_source
    details["num_classes"] = module.get_submodule(head_name(module)).out_features
    if input_size is not None and not stages:
        raise BBDeployError("--input-size only applies to --stages; add --stages or leave it out")
    if stages:
        from bbdeploy.backbones import resolve
        from bbdeploy.backbones.receptive_fields import describe_stages

        details["stages"] = describe_stages(module, checked_input_size(resolve(model), input_size))
    if as_json:
        print(json.dumps(details, indent=2))
        return
    from bbdeploy.quiet import stderr_console

    console = stderr_console()
    for key in ("name", "family", "paper", "weights", "num_classes", "params", "macs", "input_size", "preprocess"):
        console.print(f"[bold]{key:12s}[/bold] {details[key]}")
    if stages:
        console.print(stage_table(details["stages"]))


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Backbone name or alias, e.g. efficientnet_lite0, mobilenetv3, or your own MODULE:FUNCTION returning an nn.Module.")],
    target: Annotated[str, typer.Option(help=f"{' | '.join(TARGETS)} | all, or a comma list.")] = "all",
    weights: Annotated[str, typer.Option(help="imagenet (offline first, then the hash-checked download) | PATH to a "
                                              "checkpoint | random (plumbing checks only).")] = "imagenet",
    width: Annotated[Optional[float], typer.Option(help="Width multiplier, where the family has several.")] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classifier size; default: the checkpoint's.")] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Square input side; default: the backbone's.")] = None,
    batch: Annotated[int, typer.Option(help="Static batch size of the artifact.")] = 1,
    output: Annotated[Optional[Path], typer.Option(help="Folder for artifacts [default: ./bbdeploy-out/MODEL].")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half precision, in each target's own fp16 form (see README).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Post-training int8 quantization with each target's toolchain.")] = False,
    calib_data: Annotated[Optional[str], typer.Option(help=help_of(QuantOptions, "calib_data"))] = None,
    calib_size: Annotated[Optional[int], typer.Option(help=help_of(QuantOptions, "calib_size", with_default=True))] = None,
    calib_method: Annotated[Optional[str], typer.Option(help=help_of(QuantOptions, "calib_method"))] = None,
    weight_rounding: Annotated[Optional[str], typer.Option(help=help_of(QuantOptions, "weight_rounding"))] = None,
    bias_correction: Annotated[Optional[bool], typer.Option("--bias-correction/--no-bias-correction", help=help_of(QuantOptions, "bias_correction", with_default=True))] = None,
    io: Annotated[Optional[str], typer.Option(help=help_of(QuantOptions, "io", with_default=True))] = None,
    keep_float: Annotated[Optional[str], typer.Option(help=help_of(QuantOptions, "keep_float"))] = None,
    min_cosine: Annotated[Optional[float], typer.Option(help=f"int8: fail a row whose mean logit cosine with PyTorch is below this [default: {DEFAULT_MIN_COSINE}, chosen by measurement, see README].")] = None,
    features: Annotated[Optional[str], typer.Option(help="Export the backbone without its classifier, returning these stages' feature maps, e.g. 3,4,5 (strides 8/16/32; `bbdeploy info MODEL --stages` lists them).")] = None,
    preprocess: Annotated[Optional[Path], typer.Option(help="Your own backbone: JSON with input_size, crop_pct, interpolation, mean, std [default: 224, 0.875, bilinear, ImageNet mean/std].")] = None,
    qat: Annotated[bool, typer.Option("--qat", help=help_of(QuantOptions, "qat"))] = False,
    train_data: Annotated[Optional[str], typer.Option(help=help_of(QATOptions, "train_data"))] = None,
    train_labels: Annotated[Optional[str], typer.Option(help=help_of(QATOptions, "train_labels"))] = None,
    train_class_names: Annotated[Optional[str], typer.Option(help=help_of(QATOptions, "class_names"))] = None,
    epochs: Annotated[Optional[int], typer.Option(help=help_of(QATOptions, "epochs", with_default=True))] = None,
    lr: Annotated[Optional[float], typer.Option(help=help_of(QATOptions, "lr", with_default=True))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=help_of(QATOptions, "batch_size", with_default=True))] = None,
    distill: Annotated[Optional[str], typer.Option(help=help_of(QATOptions, "distill", with_default=True))] = None,
    resume: Annotated[Optional[str], typer.Option(help=help_of(QATOptions, "resume"))] = None,
    train_device: Annotated[Optional[str], typer.Option(help=help_of(QATOptions, "device", with_default=True))] = None,
    layout: Annotated[Optional[str], typer.Option(help=f"Input layout, per target ({choices_help('layouts')}) [default: the first].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Export again even if an identical artifact exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per artifact, on stdout.")] = False,
) -> None:
    """Export float or int8 artifacts, check each against PyTorch on real photos, write a manifest next to each."""
    from bbdeploy.stages.export import ExportOptions
    from bbdeploy.stages.export import export as run_export
    from bbdeploy.backbones.features import parse_features
    from bbdeploy.progress import BarProgress
    from bbdeploy.quiet import stderr_console

    if fp16 and int8:
        raise BBDeployError("--fp16 and --int8 exclude each other; pass one of them")
    int8_only = {"--calib-data": calib_data, "--calib-size": calib_size, "--calib-method": calib_method,
                 "--weight-rounding": weight_rounding, "--bias-correction": bias_correction, "--io": io,
                 "--keep-float": keep_float, "--min-cosine": min_cosine}
    given = [flag for flag, value in int8_only.items() if value is not None]
    if given and not int8:
        verb = "apply" if len(given) > 1 else "applies"
        raise BBDeployError(f"{', '.join(given)} only {verb} to int8 exports; add --int8 or leave them out")
    qat_only = {"--train-data": train_data, "--train-labels": train_labels, "--train-class-names": train_class_names,
                "--epochs": epochs, "--lr": lr, "--batch-size": batch_size, "--distill": distill, "--resume": resume,
                "--train-device": train_device}
    given = [flag for flag, value in qat_only.items() if value is not None]
    if given and not qat:
        raise BBDeployError(f"{', '.join(given)} only apply with --qat; add --qat (with --int8) or leave them out")
    qat_options = None  # (--qat without --int8: export itself says what to pass)
    if qat:
        qat_options = QATOptions(train_data=train_data, train_labels=train_labels, class_names=train_class_names,
                                 resume=resume, **{k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                                                     "distill": distill, "device": train_device}.items()
                                                  if v is not None})
    console = stderr_console()
    defaults = QuantOptions()
    quant = QuantOptions(calib_data=calib_data, calib_size=defaults.calib_size if calib_size is None else calib_size,
                         calib_method=calib_method, weight_rounding=weight_rounding,
                         bias_correction=defaults.bias_correction if bias_correction is None else bias_correction,
                         io=io or defaults.io, keep_float=tuple(n.strip() for n in (keep_float or "").split(",") if n.strip()),
                         qat=qat_options)
    options = ExportOptions(model=model, targets=target, weights=weights, width=width, num_classes=num_classes,
                            input_size=input_size, batch=batch, output=output,
                            precision="int8" if int8 else "fp16" if fp16 else "fp32", layout=layout, force=force,
                            quant=quant, min_cosine=DEFAULT_MIN_COSINE if min_cosine is None else min_cosine,
                            preprocess=preprocess, features=parse_features(features) if features is not None else None)
    with BarProgress(console) as progress:
        rows = run_export(options, progress=progress,
                          warn=lambda message: console.print(f"[bold yellow]warning:[/] {message}"))
    print_export_table(console, rows)
    if as_json:
        print(json.dumps(rows, indent=2))
    if any(row["status"] == "failed" for row in rows):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def drift(
    artifacts: Annotated[list[Path], typer.Argument(help=f"Artifacts written by `bbdeploy export` ({', '.join(t.suffix for t in TARGETS.values())}).")],
    data: Annotated[Path, typer.Option(help="Folder of images; class subfolders (index or name) give labels.")],
    labels: Annotated[Optional[Path], typer.Option(help="CSV of path,label rows (paths relative to --data).")] = None,
    class_names: Annotated[Optional[Path], typer.Option(help="Text file, one class name per line in output order.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate N images, drawn across the classes (seeded).")] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Compare every layer's input and output as the artifact's own runtime computes them with the float model's: SQNR per layer, the SQNR each layer loses, the worst layer.")] = False,
    layer_samples: Annotated[int, typer.Option(help="Images used by --layers (the first of --data).")] = 16,
    simulate_layers: Annotated[bool, typer.Option("--simulate-layers", help="Rank the layers of int8 artifacts by quantizing each alone in PyTorch (simulated, for a --keep-float suggestion).")] = False,
    simulated_samples: Annotated[int, typer.Option(help="Images used by --simulate-layers.")] = 64,
    report: Annotated[Optional[Path], typer.Option(help="Folder for drift.json, drift.md and drift.html.")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="Gate: exit 1 if an accuracy drop exceeds this many points.")] = None,
    min_agreement: Annotated[Optional[float], typer.Option(help="Gate: exit 1 if a top-1 agreement is below this fraction.")] = None,
    exec_precision: Annotated[str, typer.Option(help=help_of(BenchOptions, "exec_precision"))] = "default",
    model: Annotated[Optional[str], typer.Option(help="Artifacts of your own backbone: its MODULE:FUNCTION again (bbdeploy never imports code a manifest names).")] = None,
    device: Annotated[str, typer.Option(help="Where the artifacts run: local | ssh://[user@]host[:port] | qemu://pi5 | qemu://pi4 (the float model runs here).")] = "local",
    ssh_option: Annotated[Optional[list[str]], typer.Option(help=help_of(BenchOptions, "ssh_options"))] = None,
    remote_python: Annotated[str, typer.Option(help=help_of(BenchOptions, "remote_python"))] = "python3",
    timeout: Annotated[float, typer.Option(help="Seconds the run on the device may take.")] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """How far each artifact is from its float model: accuracy, agreement, cosine, SQNR, and where the error enters (--layers).

    With --device the artifacts run on that device's own runtime (the images travel as uint8 crops) and
    the float model here; every row says where it was measured."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bbdeploy.stages.drift import DriftOptions, gate_failures, plan_drift
    from bbdeploy.stages.drift import drift as run_drift
    from bbdeploy.quiet import stderr_console

    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise BBDeployError(f"--min-agreement {min_agreement:g} is a fraction; pass a number from 0 to 1, e.g. 0.99")
    check_exec_precision(exec_precision)
    console = stderr_console()
    options = DriftOptions(artifacts=list(artifacts), data=data, labels_csv=labels, class_names=class_names,
                           limit=limit, layers=layers, layer_samples=layer_samples, simulate_layers=simulate_layers,
                           simulated_samples=simulated_samples, max_drop=max_drop,
                           min_agreement=min_agreement, exec_precision=exec_precision, model=model, device=device,
                           ssh_options=list(ssh_option or []), remote_python=remote_python, timeout=timeout)
    plan = plan_drift(options)  # bad input is one line, before the progress bar
    with Progress(f"drift on {device}", TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("", total=None)
        if plan.device is not None:  # an emulated board is prepared on first use
            plan.device.progress = lambda step, done, total: bar.update(task, description=step, completed=done,
                                                                        total=total)
        result = run_drift(plan, progress=lambda done, total: bar.update(task, description="images", completed=done,
                                                                         total=total))
    if report is not None:
        from bbdeploy.stages.drift_report import write_report

        write_report(result, report)
    print_drift_table(console, result)
    if as_json:
        print(json.dumps(result, indent=2))
    failures = gate_failures(result, max_drop, min_agreement)
    for line in failures:
        console.print(f"✗ {line}", soft_wrap=True)
    if failures:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifacts written by `bbdeploy export`.")],
    device: Annotated[str, typer.Option(help=help_of(BenchOptions, "device"))] = "local",
    ssh_option: Annotated[Optional[list[str]], typer.Option(help=help_of(BenchOptions, "ssh_options"))] = None,
    remote_python: Annotated[str, typer.Option(help=help_of(BenchOptions, "remote_python"))] = "python3",
    benchmark_binary: Annotated[Optional[Path], typer.Option(help=help_of(BenchOptions, "benchmark_binary"))] = None,
    delegate: Annotated[str, typer.Option(help=help_of(BenchOptions, "delegate"))] = "xnnpack",
    threads: Annotated[int, typer.Option(help=help_of(BenchOptions, "threads"))] = 1,
    warmup: Annotated[int, typer.Option(help=help_of(BenchOptions, "warmup"))] = 10,
    runs: Annotated[int, typer.Option(help=help_of(BenchOptions, "runs"))] = 50,
    min_time: Annotated[float, typer.Option(help=help_of(BenchOptions, "min_time"))] = 1.0,
    exec_precision: Annotated[str, typer.Option(help=help_of(BenchOptions, "exec_precision"))] = "default",
    timeout: Annotated[float, typer.Option(help=help_of(BenchOptions, "timeout"))] = 3600,
    cpus: Annotated[Optional[str], typer.Option(help=help_of(BenchOptions, "cpus"))] = None,
    cooldown: Annotated[Optional[float], typer.Option(help=help_of(BenchOptions, "cooldown"))] = None,
    max_temp: Annotated[Optional[float], typer.Option(help=help_of(BenchOptions, "max_temp"))] = None,
    sustained: Annotated[Optional[float], typer.Option(help=help_of(BenchOptions, "sustained"))] = None,
    profile: Annotated[Optional[str], typer.Option(help=help_of(BenchOptions, "profile"))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
) -> None:
    """Latency of each artifact on a device: mean, std, min, p50, p90, p99, throughput, size, memory,
    and the device's state (governor, frequencies, temperatures, throttling, load) around the runs.

    Artifacts are timed interleaved (rounds of A, B, C, ...) in one process per device (one after
    another with --cooldown, --max-temp or --sustained); one that cannot run is a failed row and the
    others are still measured (exit 1)."""
    from bbdeploy.targets.bench import bench as run_bench

    from bbdeploy.quiet import stderr_console

    console = stderr_console()
    options = BenchOptions(artifacts=list(artifacts), device=device, threads=threads, warmup=warmup, runs=runs,
                           min_time=min_time, ssh_options=list(ssh_option or []), remote_python=remote_python,
                           benchmark_binary=benchmark_binary, delegate=delegate, exec_precision=exec_precision,
                           timeout=timeout, cpus=cpus, cooldown=cooldown, max_temp=max_temp, sustained=sustained,
                           profile=profile)
    with console.status(f"benchmarking on {device}") as status:
        result = run_bench(options, progress=lambda step, done, total: status.update(f"{step} ({done}/{total})"))
    print_bench_table(console, result)
    if as_json:
        print(json.dumps(result, indent=2))
    if any(row["status"] == "failed" for row in result["results"]):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def run(
    pipeline_file: Annotated[Optional[Path], typer.Argument(help="Pipeline YAML (`bbdeploy init` writes one) [default: the built-in pipeline].")] = None,
    jobs: Annotated[int, typer.Option(help="Jobs at once (exports and drift; benchmarks stay one per device).")] = 1,
    executor: Annotated[str, typer.Option(help="local (worker processes here) | ray (Ray tasks; devices as Ray resources).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="ray: HOST:PORT of a running cluster [default: start one here].")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="An earlier report.json: mark latency and fidelity regressions.")] = None,
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", help="With --baseline: exit 1 when a row regressed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json on stdout.")] = False,
) -> None:
    """Every model x target x precision of the pipeline: export, drift, bench on every device, cached;
    one report (report.json, report.md, report.html) in the output folder. Exit 1 when a row failed or
    missed a gate."""
    from bbdeploy.run.pipeline_file import load_pipeline
    from bbdeploy.quiet import stderr_console
    from bbdeploy.run.matrix import RunOptions, execute
    from bbdeploy.run.report import build_report, read_baseline, write_run_report

    console = stderr_console()
    pipeline = load_pipeline(pipeline_file)
    old = read_baseline(baseline) if baseline is not None else None
    if fail_on_regression and old is None:
        raise BBDeployError("--fail-on-regression compares with a baseline; pass --baseline OLD/report.json too")
    with console.status("running the pipeline") as status:
        outcomes = execute(RunOptions(pipeline, jobs=jobs, executor=executor, address=address),
                           say=lambda message: status.update(message),
                           warn=lambda message: console.print(f"[bold yellow]warning:[/] {message}", soft_wrap=True),
                           finished=lambda line: console.print(line, soft_wrap=True, highlight=False, markup=False))
    report = build_report(pipeline, outcomes, old)
    page = write_run_report(report, Path(pipeline.output))
    print_run_table(console, pipeline.source, report)
    console.print(f"report: {page} (and report.md, report.json), {report['wall_s']} s")
    if as_json:
        print(json.dumps(report, indent=2))
    regressed = fail_on_regression and any(row["regressions"] for row in report["rows"])
    if regressed or any(row["status"] in ("failed", "gated") for row in report["rows"]):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example pipeline.")] = Path("bbdeploy.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example pipeline (the built-in default) for `bbdeploy run`."""
    from bbdeploy.run.example import EXAMPLE

    if path.exists() and not force:
        raise BBDeployError(f"{path} exists; pass another path or --force to overwrite it")
    path.write_text(EXAMPLE, encoding="utf-8")
    print(f"wrote {path}; edit it, then: bbdeploy run {path}", file=sys.stderr)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one line on stderr."""
    from bbdeploy.offline import keep_dependency_state_in_cache
    from bbdeploy.quiet import silence_known_noise

    silence_known_noise()
    keep_dependency_state_in_cache()
    try:
        app()
        code = 0
    except SystemExit as exc:  # how Typer ends every command
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BBDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    _leave(code)


def _leave(code: int) -> None:
    """Exit without the interpreter's teardown, which takes 0.5 s once torch is loaded (measured on
    2 cores: `import torch` then exit 1.5 s, then os._exit 1.0 s), a quarter of a cached export's
    2 s. Every file a command writes is closed by the time it returns; the streams are flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
