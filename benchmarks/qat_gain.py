"""QAT against PTQ, per target, on the same images: what issue 15's acceptance asks for.

EfficientNet-Lite0 with ImageNet weights; both exports calibrate on the same training folder (seeded
crops of scikit-image's photos, written here), QAT also trains on it; parity is measured by each
export on the built-in evaluation photos, which no training image comes from. Prints per target the
logit SQNR, cosine and top-1 agreement of PTQ and QAT with the float model, and QAT - PTQ.

    .venv/bin/python benchmarks/qat_gain.py [--input-size 224] [--epochs 4] [--images 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from int8_speed import cpu_int8_features


def write_training_photos(folder: Path, count: int, side: int) -> None:
    """`count` seeded crops of the built-in calibration photos (none of them an evaluation photo)."""
    from PIL import Image

    from bbdeploy.data.photos import builtin_photo
    from bbdeploy.quantization.calibration import PhotoCrops

    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, box) in enumerate(PhotoCrops(count, seed=5)):
        Image.fromarray(builtin_photo(name)).crop(box).resize((side, side), Image.BILINEAR).save(folder / f"{index:04d}.png")


def export(args: list[str]) -> tuple[list[dict], float]:
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("bbdeploy")), "export", "efficientnet_lite0", "--int8",
                           "--json", *args], capture_output=True, text=True)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(f"export failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--target", default="all")
    options = parser.parse_args()
    print(f"CPU int8 features: {cpu_int8_features()}")
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "train"
        write_training_photos(photos, options.images, round(options.input_size / 0.875) + 8)
        common = ["--target", options.target, "--input-size", str(options.input_size), "--calib-data", str(photos)]
        ptq, ptq_s = export([*common, "--output", f"{tmp}/ptq"])
        qat, qat_s = export([*common, "--output", f"{tmp}/qat", "--qat", "--train-data", str(photos),
                             "--epochs", str(options.epochs)])
        trainings = [json.loads(Path(row["manifest"]).read_text())["quantization"]["qat"] if row["manifest"] else None
                     for row in qat]
    print(f"Lite0 {options.input_size} px, {options.images} training/calibration images, {options.epochs} epochs; "
          f"PTQ export {ptq_s:.0f} s, QAT export {qat_s:.0f} s")
    print(f"{'target':9s} {'PTQ SQNR':>9s} {'QAT SQNR':>9s} {'gain dB':>8s} {'PTQ cos':>8s} {'QAT cos':>8s} "
          f"{'PTQ agree':>9s} {'QAT agree':>9s} {'train s':>8s}")
    for before, after, training in zip(ptq, qat, trainings):
        if before["parity"] is None or after["parity"] is None:
            print(f"{before['target']:9s} failed: {before['error'] or after['error']}")
            continue
        p, q = before["parity"], after["parity"]
        train_s = training["train_s"]
        print(f"{after['target']:9s} {p['sqnr_db']:9.2f} {q['sqnr_db']:9.2f} {q['sqnr_db'] - p['sqnr_db']:8.2f} "
              f"{p['cosine']:8.4f} {q['cosine']:8.4f} {p['top1_agreement']:9.3f} {q['top1_agreement']:9.3f} "
              f"{train_s:8.1f}")


if __name__ == "__main__":
    main()
