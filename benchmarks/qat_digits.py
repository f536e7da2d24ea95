"""QAT against PTQ on a small real labeled set: scikit-learn's digits (issue 15's second acceptance).

MobileNetV3-Small x0.75 at 32 px is trained here on 1400 digits (15 epochs), exported fp32, PTQ int8
and QAT int8 (cross-entropy + distillation, 2 epochs at lr 1e-4) to every target, and `bbdeploy
drift` measures top-1 accuracy on the 397 held-out digits. Prints accuracy per artifact and the
distance of each int8 artifact from fp32 in points. Takes about 20 minutes on 2 cores.

    .venv/bin/python benchmarks/qat_digits.py [--output DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


from int8_speed import cpu_int8_features

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: tests/digits.py
from tests.digits import train_on_digits, write_digits  # noqa: E402

BACKBONE, WIDTH, SIZE = "mobilenet_v3_small", 0.75, 32


def main() -> None:
    from bbdeploy.stages.drift import DriftOptions, drift
    from bbdeploy.stages.export import ExportOptions, export
    from bbdeploy.quantization.options import QuantOptions
    from bbdeploy.quantization.options import QATOptions

    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, default=None)
    out = parser.parse_args().output or Path(tempfile.mkdtemp(prefix="qat-digits-"))
    print(f"CPU int8 features: {cpu_int8_features()}; output in {out}")
    write_digits(out / "digits", SIZE)
    checkpoint = train_on_digits(out / "digits", BACKBONE, WIDTH, SIZE, epochs=15)
    train = str(out / "digits" / "train")
    artifacts = []
    for precision, qat in (("fp32", None), ("int8", None), ("int8", QATOptions(train_data=train, epochs=2, lr=1e-4))):
        rows = export(ExportOptions(BACKBONE, width=WIDTH, weights=str(checkpoint), input_size=SIZE, output=out,
                                    precision=precision, min_cosine=0.5,
                                    quant=QuantOptions(calib_data=train, calib_size=128, qat=qat)))
        artifacts += [Path(row["artifact"]) for row in rows if row["artifact"]]
        for row in rows:
            if row["status"] == "failed":
                print(f"{row['target']} {precision}{' qat' if qat else ''}: ✗ {row['error']}")
    report = drift(DriftOptions(artifacts=artifacts, data=out / "digits" / "test", exec_precision="f32"))
    reference = report["reference"]["accuracy_top1"]
    print(f"float PyTorch: {100 * reference:.2f}% on {report['data']['images']} held-out digits")
    for row in report["results"]:
        accuracy = row.get("accuracy_top1")
        shown = "✗ " + str(row.get("error")) if accuracy is None else f"{100 * accuracy:.2f}% ({100 * (accuracy - reference):+.2f} pt)"
        print(f"{Path(row['artifact']).name:45s} {shown}")


if __name__ == "__main__":
    main()
