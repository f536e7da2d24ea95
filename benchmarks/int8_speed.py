"""int8 vs fp32 latency of bbdeploy's artifacts, per target, on this machine's runtimes.

For each model, exports the fp32 and the default int8 artifact of every target (through the same
`export` stage users run; ImageNet weights where they install offline, random ones otherwise:
latency does not depend on the weight values), loads each pair in its own runtime with 1 thread,
and times them interleaved (fp32, int8, fp32, int8, ...) so both see the same machine state. Prints
the median latency of each and the ratio int8/fp32. Issue 4's target: ratio <= 0.6 on every target.

    .venv/bin/python benchmarks/int8_speed.py [--runs 100] [--models efficientnet_lite0,mobilenet_v3_large]
                                              [--targets all]

The CPU's int8 instructions decide much of the answer: the script prints whether the CPU has
AVX-512 VNNI / AVX-VNNI (x86 int8 dot products) next to the figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bbdeploy.backbones import resolve
from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.quantization.options import QuantOptions
from bbdeploy.targets.runner import load
from bbdeploy.backbones.weights import find_offline


def cpu_int8_features() -> str:
    """The x86 int8 dot-product extensions this CPU advertises (Linux /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    present = [flag for flag in wanted if f" {flag}" in flags]
    return " ".join(present) or "none of " + " ".join(wanted)


def interleaved_medians(runners: dict, batch: np.ndarray, runs: int, warmup: int = 10) -> dict[str, float]:
    """Median milliseconds of each runner, timed in alternation."""
    for runner in runners.values():
        for _ in range(warmup):
            runner(batch)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, runner in runners.items():
            started = time.perf_counter_ns()
            runner(batch)
            times[name].append((time.perf_counter_ns() - started) / 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def artifacts(model: str, targets: str, folder: Path, calib_size: int) -> dict[tuple[str, str], dict]:
    """(target, precision) -> export row, for fp32 and int8 on every target."""
    weights = "imagenet" if find_offline(resolve(model)) else "random"
    rows = {}
    for precision in ("fp32", "int8"):
        options = ExportOptions(model, targets=targets, weights=weights, output=folder,
                                precision=precision, quant=QuantOptions(calib_size=calib_size),
                                min_cosine=0.0)  # speed only: random networks' int8 fidelity is not judged here
        for row in export(options):
            if row["status"] == "failed":
                raise SystemExit(f"{model} {row['target']} {precision}: {row['error']}")
            rows[(row["target"], precision)] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v3_large")
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--targets", default="all", help=f"comma list of {', '.join(TARGETS)}, or all")
    args = parser.parse_args()
    print(f"CPU int8 features: {cpu_int8_features()}; 1 thread; {args.runs} interleaved runs per artifact")
    print(f"{'model':22s} {'target':9s} {'exec':>5s} {'fp32 ms':>8s} {'int8 ms':>8s} {'int8/fp32':>9s}")
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            rows = artifacts(model, args.targets, Path(folder) / model, args.calib_size)
            for target in dict.fromkeys(target for target, _ in rows):
                fp32, int8 = rows[(target, "fp32")], rows[(target, "int8")]
                shape = fp32["input"]["shape"]
                batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
                # the runtime's default execution precision (what an application gets: OpenVINO computes
                # float parts in bf16 on CPUs with native bf16), then pinned to f32 where it has one
                for pinned in (None, "f32"):
                    runners = {"fp32": load(fp32["artifact"], threads=1, exec_precision=pinned),
                               "int8": load(int8["artifact"], threads=1, exec_precision=pinned)}
                    executed = runners["fp32"].exec_precision
                    if pinned and executed is None:
                        break  # no such setting in this runtime: the first line said it all
                    medians = interleaved_medians(runners, batch, args.runs)
                    print(f"{model:22s} {target:9s} {executed or '-':>5s} {medians['fp32']:8.2f} "
                          f"{medians['int8']:8.2f} {medians['int8'] / medians['fp32']:9.2f}", flush=True)


if __name__ == "__main__":
    main()
