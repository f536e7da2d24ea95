"""Export wall time per target: `bbdeploy export`'s per-target stage vs the bare converter call.

The stage does more than convert (parity run with the target's runtime on 12 photos, op histogram,
hashes, manifest, atomic publish); this measures what that costs. Both paths start from the same
built model, run interleaved in one process after a warm-up of each converter, and the median of
the rounds is compared. Target: ratio <= 1.2. The one-time build (weights, photos, reference
logits), shared by all targets of one command, is printed apart.

    .venv/bin/python benchmarks/export_time.py [--rounds 2] [--models efficientnet_lite0,mobilenet_v3_large]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bbdeploy.backbones import resolve
from bbdeploy.export import ExportOptions, build, export_target, input_size, layout_for
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.quiet import captured_output


def direct_onnx(model, sample, folder: Path) -> None:
    torch.onnx.export(model, (sample,), str(folder / "direct.onnx"), dynamo=True)


def direct_tflite(model, sample, folder: Path) -> None:
    import litert_torch

    nhwc = litert_torch.to_channel_last_io(model, args=[0])
    litert_torch.convert(nhwc, (sample.permute(0, 2, 3, 1).contiguous(),)).export(str(folder / "direct.tflite"))


def direct_openvino(model, sample, folder: Path) -> None:
    import openvino as ov

    ov.save_model(ov.convert_model(model, example_input=sample), str(folder / "direct.xml"),
                  compress_to_fp16=False)


DIRECT = {"onnx": direct_onnx, "tflite": direct_tflite, "openvino": direct_openvino}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default="efficientnet_lite0,mobilenet_v3_large")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{'model':20s} {'target':9s} {'direct s':>9s} {'bbdeploy s':>11s} {'ratio':>6s}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = folder / "converters.log"
        for name in args.models.split(","):
            spec = resolve(name)
            options = ExportOptions(name, weights="imagenet" if spec.imagenet and spec.imagenet.package else "random",
                                    force=True)
            built_s = time.perf_counter()
            built = build(spec, options, input_size(spec, None))
            built_s = time.perf_counter() - built_s
            sample = torch.from_numpy(built.images[:1])
            for target in TARGETS.values():
                layout = layout_for(target, options)

                def ours():
                    row = export_target(built, target, options, layout, folder)
                    assert row["status"] == "exported", row

                def direct():
                    with captured_output(log):
                        DIRECT[target.name](built.deploy_model, sample, folder)

                direct()  # warm-up: imports and first-call caches, for both paths
                ours_times, direct_times = [], []
                for _ in range(args.rounds):
                    direct_times.append(timed(direct))
                    ours_times.append(timed(ours))
                ratio = statistics.median(ours_times) / statistics.median(direct_times)
                worst = max(worst, ratio)
                print(f"{name:20s} {target.name:9s} {statistics.median(direct_times):9.2f} "
                      f"{statistics.median(ours_times):11.2f} {ratio:6.2f}", flush=True)
            print(f"{name:20s} {'(build)':9s} {'':9s} {built_s:11.2f}   once per command, all targets")
    print(f"worst ratio {worst:.2f} (target <= 1.2): {'met' if worst <= 1.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
