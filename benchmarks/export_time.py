"""Export wall time: bbdeploy's int8 export per target against the bare stock path, and the cached rerun.

Every figure is one fresh process, as a user runs it (imports included), on the same model and the same
calibration images (the built-in crops, `--calib-size` of them), all measured in this one run:

- stock: the toolchain's documented PTQ recipe and nothing else: onnxruntime `quantize_static` (QDQ,
  MinMax), litert-torch PT2E (`PT2EQuantizer`, per-channel symmetric), NNCF `nncf.quantize` (its
  defaults). No parity check, no manifest. MNN has none that works: its default (KL) quantizer
  crashes in the MNN 3.6.1 wheel (see bbdeploy/quantization/mnn.py).
- bbdeploy, one target per command: `bbdeploy export MODEL --int8 --target T --force`.
- bbdeploy, onnx,tflite,openvino in one command (issue 14's bar: <= 120 s on 2 cores), then the same
  command again, answered from the cache (bar: <= 2 s), then MNN on its own.

Peak memory (max RSS of the process) comes with each figure. With `--fp32`, it compares instead the
fp32 export stage (conversion, parity run, manifest) with the bare converter call, in one process
(target: ratio <= 1.2).

    .venv/bin/python benchmarks/export_time.py [--model efficientnet_lite0] [--calib-size 300] [--fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from int8_speed import cpu_int8_features

BUNDLED = ("onnx", "tflite", "openvino")  # issue 14's command; MNN is timed on its own, on top


def run_timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS in GB, the finished process) of one fresh Python process."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage (kilobytes on Linux)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout.read(), stderr.read())
    if done.returncode not in (0, 1):  # 1: some row failed, which the row itself says
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024**2, done


def bbdeploy_export(model: str, targets: str, output: Path, calib_size: int, force: bool) -> tuple[float, float, list]:
    args = ["-m", "bbdeploy", "export", model, "--weights", "imagenet", "--int8", "--target", targets,
            "--calib-size", str(calib_size), "--output", str(output), "--json", *(["--force"] if force else [])]
    seconds, peak_gb, done = run_timed(args)
    return seconds, peak_gb, json.loads(done.stdout)


# ---- the stock recipes, each run by this script in a process of its own (--stock TARGET) ----

def stock_onnx(model, sample, data, folder: Path) -> None:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.onnx.export(model, (sample,), str(folder / "float.onnx"), input_names=["input"], dynamo=True)
    quant_pre_process(str(folder / "float.onnx"), str(folder / "pre.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter({"input": array[None]} for array in data)

        def get_next(self):
            return next(self.samples, None)

    quantize_static(str(folder / "pre.onnx"), str(folder / "stock_int8.onnx"), Reader(), quant_format=QuantFormat.QDQ)


def stock_tflite(model, sample, data, folder: Path) -> None:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (sample,)).module(), quantizer)
    with torch.no_grad():
        for array in data:
            prepared(torch.from_numpy(array[None]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(folder / "stock_int8.tflite"))


def stock_openvino(model, sample, data, folder: Path) -> None:
    import nncf
    import openvino as ov

    quantized = nncf.quantize(ov.convert_model(model, example_input=sample), nncf.Dataset([a[None] for a in data]),
                              subset_size=len(data))
    ov.save_model(quantized, str(folder / "stock_int8.xml"))


STOCK = {"onnx": stock_onnx, "tflite": stock_tflite, "openvino": stock_openvino}


def run_stock(target: str, model_name: str, calib_size: int, folder: Path) -> None:
    """One stock recipe on the float model (ImageNet weights) and the decoded calibration crops."""
    import numpy as np
    import torch

    from bbdeploy import create_backbone
    from bbdeploy.backbones import resolve
    from bbdeploy.quantization.calibration import calibration_set
    from bbdeploy.quiet import captured_output

    spec = resolve(model_name)
    model = create_backbone(model_name, weights="imagenet")
    model = model.deploy_form() if hasattr(model, "deploy_form") else model
    data = np.concatenate(list(calibration_set(None, spec.preprocess, spec.preprocess.input_size,
                                               calib_size).batches(32)))
    sample = torch.from_numpy(data[:1])
    with captured_output(folder / f"stock_{target}.log"):
        STOCK[target](model, sample, data, folder)


def int8_report(model: str, calib_size: int) -> None:
    print(f"CPU: {cpu_int8_features()}, {os.cpu_count()} cores; {model}, ImageNet weights, {calib_size} built-in "
          "calibration crops; every figure one fresh process")
    print(f"{'target':9s} {'stock s':>8s} {'bbdeploy s':>11s} {'ratio':>6s} {'stock GB':>9s} {'bbdeploy GB':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for target in (*BUNDLED, "mnn"):
            stock_s = stock_gb = None
            if target in STOCK:
                stock_folder = folder / f"stock_{target}"
                stock_folder.mkdir()
                stock_s, stock_gb, _ = run_timed([__file__, "--stock", target, "--model", model, "--calib-size",
                                                  str(calib_size), "--out", str(stock_folder)])
            ours_s, ours_gb, rows = bbdeploy_export(model, target, folder / f"alone_{target}", calib_size, force=True)
            (row,) = rows
            stock = f"{stock_s:8.1f}" if stock_s is not None else f"{'n/a':>8s}"
            ratio = f"{ours_s / stock_s:6.2f}" if stock_s is not None else f"{'':6s}"
            stock_mem = f"{stock_gb:9.2f}" if stock_gb is not None else f"{'':9s}"
            print(f"{target:9s} {stock} {ours_s:11.1f} {ratio} {stock_mem} {ours_gb:12.2f}   "
                  f"(cosine {row['parity']['cosine']:.4f}, {row['status']})", flush=True)
        bundle = ",".join(BUNDLED)
        seconds, peak_gb, rows = bbdeploy_export(model, bundle, folder / "bundle", calib_size, force=False)
        per_target = ", ".join(f"{row['target']} {row['timings']['convert_s']:.1f} s" for row in rows)
        print(f"bbdeploy --target {bundle}: {seconds:.1f} s, peak {peak_gb:.2f} GB (bar: <= 120 s, < 4 GB); "
              f"convert_s {per_target}; statuses {[row['status'] for row in rows]}")
        seconds, peak_gb, rows = bbdeploy_export(model, bundle, folder / "bundle", calib_size, force=False)
        print(f"the same command again: {seconds:.2f} s (bar: <= 2 s); statuses {[row['status'] for row in rows]}")


def fp32_report(models: list[str], rounds: int) -> None:
    """The fp32 export stage against the bare converter call, interleaved in one process."""
    import torch

    from bbdeploy.backbones import resolve
    from bbdeploy.stages.build import build, input_size
    from bbdeploy.stages.export import ExportOptions, export_target, layout_for, plan_target
    from bbdeploy.exporters.registry import TARGETS, exporter
    from bbdeploy.quiet import captured_output

    torch.set_num_threads(2)
    print(f"CPU: {cpu_int8_features()}, {os.cpu_count()} cores")
    print(f"{'model':20s} {'target':9s} {'direct s':>9s} {'bbdeploy s':>11s} {'ratio':>6s}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in models:
            spec = resolve(name)
            options = ExportOptions(name, weights="imagenet" if spec.imagenet and spec.imagenet.package else "random",
                                    force=True)
            built = build(spec, options, input_size(spec, None))
            sample = torch.from_numpy(built.parity.images[:1])
            for target in TARGETS.values():
                plan = plan_target(built, target, options, layout_for(target, options), folder, None)

                def ours():
                    row = export_target(built, plan, options, folder)
                    assert row["status"] == "exported", row

                def direct():
                    with captured_output(folder / "converters.log"):
                        exporter(target).convert(built.deploy_model, sample, folder / f"direct{target.suffix}",
                                                 precision="fp32", layout=plan.layout)

                direct()  # warm-up: imports and first-call caches, for both paths
                ours_times, direct_times = [], []
                for _ in range(rounds):
                    direct_times.append(_timed(direct))
                    ours_times.append(_timed(ours))
                ratio = statistics.median(ours_times) / statistics.median(direct_times)
                worst = max(worst, ratio)
                print(f"{name:20s} {target.name:9s} {statistics.median(direct_times):9.2f} "
                      f"{statistics.median(ours_times):11.2f} {ratio:6.2f}", flush=True)
    print(f"worst ratio {worst:.2f} (target <= 1.2): {'met' if worst <= 1.2 else 'NOT met'}")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--calib-size", type=int, default=300)
    parser.add_argument("--fp32", action="store_true", help="the fp32 stage against the bare converter instead")
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v3_large", help="with --fp32")
    parser.add_argument("--rounds", type=int, default=2, help="with --fp32")
    parser.add_argument("--stock", choices=sorted(STOCK), help=argparse.SUPPRESS)  # one stock run (a child process)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stock:
        run_stock(args.stock, args.model, args.calib_size, args.out)
    elif args.fp32:
        fp32_report(args.models.split(","), args.rounds)
    else:
        int8_report(args.model, args.calib_size)


if __name__ == "__main__":
    main()
