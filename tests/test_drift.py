"""`bbdeploy drift`: accuracy and agreement of deployed artifacts against their float model.

The real-data fixture trains a small backbone on scikit-learn's digits (real, labeled handwriting),
exports it fp32 and int8 to every target, and measures drift on held-out digits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bbdeploy.data.folders import eval_data
from bbdeploy.stages.drift import DriftOptions, drift, gate_failures
from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.metrics import DriftAccumulator, bootstrap_interval
from bbdeploy.quantization.options import QuantOptions
from bbdeploy.targets.runner import load as load_runner
from tests.conftest import PLUMBING_TARGET, TINY, calibrated_checkpoint, run_cli, shared_folder
from tests.digits import digit_tensors, train_on_digits, write_digits
from tests.target_checks import target_checks

SECOND = list(TARGETS)[1]  # another target than the plumbing one

BACKBONE, WIDTH, SIZE = "mobilenet_v1", 0.25, 32


# the digits, the model trained on them and its artifacts are made once per suite run: the other xdist
# worker finds them in the shared folder (tests/conftest.py shared_folder) and its exports cached
@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's 1797 digits as 32x32 PNGs: train/<digit>/ (1400) and test/<digit>/ (397)."""
    with shared_folder(tmp_path_factory, "digits") as root:
        if not (root / "test").is_dir():
            write_digits(root, SIZE)
    return root


def _tensors(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return digit_tensors(folder, BACKBONE, SIZE)


@pytest.fixture(scope="session")
def digits_checkpoint(digits, tmp_path_factory) -> Path:
    """MobileNetV1 x0.25 trained on the digits (about 96% held-out accuracy), saved as a state_dict."""
    with shared_folder(tmp_path_factory, "digits-model"):
        path = digits / "digits.pth"
        return path if path.is_file() else train_on_digits(digits, BACKBONE, WIDTH, SIZE, epochs=10)


@pytest.fixture(scope="session")
def digits_artifacts(digits, digits_checkpoint, tmp_path_factory) -> dict[tuple[str, str], Path]:
    artifacts = {}
    with shared_folder(tmp_path_factory, "digits-artifacts") as out:
        for precision in ("fp32", "int8"):
            rows = export(ExportOptions(BACKBONE, width=WIDTH, weights=str(digits_checkpoint), input_size=SIZE,
                                        output=out, precision=precision,
                                        quant=QuantOptions(calib_data=str(digits / "train"), calib_size=128)))
            assert [(row["target"], row["status"] in ("exported", "cached")) for row in rows] == [
                (t, True) for t in TARGETS], rows
            artifacts.update({(row["target"], precision): Path(row["artifact"]) for row in rows})
    return artifacts


def _independent_predictions(artifact: Path, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(artifact logits, float logits, labels), computed without the drift code."""
    import bbdeploy

    runner = load_runner(artifact, exec_precision="f32")
    model = bbdeploy.create_backbone(BACKBONE, width=WIDTH, weights=str(folder.parent / "digits.pth"))
    images, labels = _tensors(folder)
    from bbdeploy.stages.manifest import read_manifest

    nhwc = read_manifest(artifact)["input"]["layout"] == "NHWC"
    logits = np.concatenate([runner(np.ascontiguousarray((x.permute(0, 2, 3, 1) if nhwc else x).numpy()))
                             for x in images.split(1)])
    with torch.no_grad():
        reference = model(images).numpy()
    return logits, reference, labels.numpy()


def test_drift_on_real_digits_matches_an_independent_computation(digits, digits_artifacts, tmp_path):
    paths = [digits_artifacts[key] for key in sorted(digits_artifacts)]
    report = drift(DriftOptions(artifacts=paths, data=digits / "test", exec_precision="f32"))
    assert report["data"]["images"] == 397 and report["data"]["labels"] == "folders"
    assert report["reference"]["accuracy_top1"] >= 0.93, report["reference"]
    for result in report["results"]:
        logits, reference, labels = _independent_predictions(Path(result["artifact"]), digits / "test")
        accuracy = np.mean(logits.argmax(1) == labels)
        top5 = np.mean([label in np.argsort(-row)[:5] for row, label in zip(logits, labels)])
        agreement = np.mean(logits.argmax(1) == reference.argmax(1))
        assert result["samples"] == 397
        assert result["accuracy_top1"] == pytest.approx(accuracy, abs=1e-9)
        assert result["accuracy_top5"] == pytest.approx(top5, abs=1e-9)
        assert result["agreement_top1"] == pytest.approx(agreement, abs=1e-9)
        assert result["accuracy_drop"] == pytest.approx(100 * (np.mean(reference.argmax(1) == labels) - accuracy))
        low, high = result["agreement_top1_ci95"]
        assert low <= result["agreement_top1"] <= high
        if result["precision"] == "fp32":  # the bar for float artifacts
            assert result["agreement_top1"] >= 0.995 and abs(result["accuracy_drop"]) <= 0.1, result
            assert result["sqnr_db"] > 80, result
        else:  # measured: agreement 0.992 onnx, 0.995 openvino, 0.997 tflite; drop -0.25 to 0 points
            assert result["agreement_top1"] >= 0.97 and result["accuracy_drop"] <= 1.5, result


def test_drift_report_renders_in_headless_chromium(digits, digits_artifacts, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    artifacts = [str(digits_artifacts[(PLUMBING_TARGET, "fp32")]), str(digits_artifacts[(PLUMBING_TARGET, "int8")])]
    result = run_cli("drift", *artifacts, "--data", str(digits / "test"), "--limit", "120", "--layers",
                     "--layer-samples", "8", "--simulate-layers", "--simulated-samples", "32",
                     "--report", str(tmp_path / "report"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads((tmp_path / "report" / "drift.json").read_text()) == report
    import platform

    from importlib.metadata import version

    from bbdeploy.stages.drift_report import device_text

    # every row says where it ran, as this machine reported itself, and with which runtime
    assert report["device"]["machine"] == platform.machine() and report["device"]["emulated"] is False
    assert all(row["device"] == report["device"] for row in report["results"])
    markdown = (tmp_path / "report" / "drift.md").read_text()
    int8 = report["results"][1]
    assert (f"| ✓ | {Path(artifacts[1]).name} | {PLUMBING_TARGET} | int8 | - | local ({platform.machine()} "
            f"{report['device']['cpu']}) | {int8['runtime']} {version(TARGETS[PLUMBING_TARGET].device_distributions[0])} | 120 |") in markdown
    assert f"Measured on: {device_text(report['device'])}; " in markdown

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options)
    try:
        browser.get((tmp_path / "report" / "drift.html").as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "table.results tr")
        assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows[1:]] == [Path(a).name for a in artifacts]
        # MobileNetV1: 28 conv/linear layers (a header row each) for each of the two artifacts on their runtime
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.layers tr")) == 2 * 29
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.simulated tr")) > 10
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) == 3  # per-target bars, SQNR against depth, the int8 artifact's simulated ranking
        for image in images:  # decoded by the browser, at a real size
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 200
        # the device card: what the device said of itself, the runtime and the precision that ran
        (card,) = browser.find_elements(By.CSS_SELECTOR, "section.device-card")
        fields = dict(zip((dt.text for dt in card.find_elements(By.TAG_NAME, "dt")),
                          (dd.text for dd in card.find_elements(By.TAG_NAME, "dd"))))
        assert fields["cores"] == str(report["device"]["cores"]) and fields["emulated"] == "no"
        assert fields["runtimes"] == f"{int8['runtime']} {int8['runtime_version']}"
        assert fields["execution precision"] == ", ".join(f"{r['target']} {r['precision']}: {r['exec_precision']}"
                                                          for r in report["results"] if r["exec_precision"]) or "-"
        header = [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "th")]
        assert header[-1] == "note"
        for row, result in zip(rows[1:], report["results"]):
            note = row.find_elements(By.TAG_NAME, "td")[-1].text
            assert ("ran in " in note) == (result["exec_precision"] in ("bf16", "f16")), (note, result["exec_precision"])
    finally:
        browser.quit()


def test_simulated_sensitivity_ranks_every_layer_and_names_them_as_keep_float_takes_them(digits, digits_artifacts):
    report = drift(DriftOptions(artifacts=[digits_artifacts[(list(TARGETS)[-1], "int8")]], data=digits / "test",
                                limit=64, simulate_layers=True, simulated_samples=32))
    layers = report["results"][0]["simulated_sensitivity"]
    names = [row["layer"] for row in layers["ranked"]]
    # MobileNetV1: a stem conv, 13 depthwise + 13 pointwise convs, the classifier, each ranked once
    assert len(names) == len(set(names)) == 28, names
    assert {"conv_stem", "blocks.0.0.conv_dw", "blocks.4.1.conv_pw", "classifier"} <= set(names)
    sqnr = [row["sqnr_db"] for row in layers["ranked"]]
    assert sqnr == sorted(sqnr) and sqnr[0] < sqnr[-1]
    assert layers["suggest"] == "--keep-float " + ",".join(names[:3])
    # the suggestion is accepted by export as it stands
    result = run_cli("export", BACKBONE, "--width", str(WIDTH), "--weights", str(digits / "digits.pth"), "--int8",
                     "--target", PLUMBING_TARGET, "--input-size", str(SIZE), "--calib-data", str(digits / "train"),
                     "--calib-size", "16", "--output", str(digits / "kept"), *layers["suggest"].split())
    assert result.returncode == 0, result.stderr


def test_gates_exit_1_naming_the_artifacts_outside(digits, digits_artifacts):
    artifact = str(digits_artifacts[(SECOND, "int8")])
    result = run_cli("drift", artifact, "--data", str(digits / "test"), "--limit", "40", "--min-agreement", "1.0",
                     "--max-drop", "-100")
    assert result.returncode == 1
    assert f"{Path(artifact).name}: accuracy drop" in result.stderr
    assert "> --max-drop -100" in " ".join(result.stderr.split())
    passing = run_cli("drift", artifact, "--data", str(digits / "test"), "--limit", "40", "--min-agreement", "0.5")
    assert passing.returncode == 0, passing.stderr


def test_artifacts_of_different_backbones_are_each_compared_with_their_own_reference(digits, digits_artifacts,
                                                                                    photos, tmp_path):
    weights = calibrated_checkpoint("mobilenet_v3_small", photos, tmp_path)
    (other,) = export(ExportOptions("mobilenet_v3_small", targets=PLUMBING_TARGET, weights=str(weights), input_size=TINY,
                                    output=tmp_path / "out"))
    report = drift(DriftOptions(artifacts=[digits_artifacts[(PLUMBING_TARGET, "fp32")], Path(other["artifact"])],
                                data=digits / "test", limit=40))
    assert [(r["backbone"], r["width"]) for r in report["references"]] == [("mobilenet_v1", 0.25),
                                                                         ("mobilenet_v3_small", None)]
    assert report["reference"] == report["references"][0]
    # each at its own input size and preprocessing, each agreeing with its own float model
    assert [r["agreement_top1"] for r in report["results"]] == [1.0, 1.0]
    assert report["results"][1]["reference_accuracy_top1"] is not None  # digits 0-9 are classes of 1000 too


def test_int8_parity_uses_calibration_folder_images_that_calibration_did_not_sample(digits, digits_artifacts):
    """With --calib-data, export judges int8 on in-domain images no quantizer saw (built-in photos are
    out of this digits model's domain: its openvino int8 cosine there measured 0.81)."""
    from bbdeploy.stages.manifest import read_manifest
    from bbdeploy.stages.parity import DEFAULT_MIN_COSINE

    for target in TARGETS:
        parity = read_manifest(digits_artifacts[(target, "int8")])["parity"]
        assert parity["images"] == f"112 images of {digits / 'train'} that calibration did not sample"
        assert parity["samples"] == 112 and parity["passed"] is True and parity["cosine"] >= DEFAULT_MIN_COSINE


def test_drift_reports_the_precision_each_runtime_computed_in(digits, digits_artifacts):
    """Issue 12: measure the runtime as it will be deployed. By default a runtime computes float parts
    as it picks (OpenVINO: bf16 on CPUs with native bf16); drift says which (the target's module says
    what to expect; None: no such setting, the file's own precision), and --exec-precision f32 pins it
    where the runtime has the setting (then every fp32 artifact matches PyTorch closely)."""
    for target in TARGETS:
        artifact = digits_artifacts[(target, "fp32")]
        default = drift(DriftOptions(artifacts=[artifact], data=digits / "test", limit=40))["results"][0]
        reported = target_checks(target).exec_precision_reported
        assert default["exec_precision"] == reported(None), target
        pinned = drift(DriftOptions(artifacts=[artifact], data=digits / "test", limit=40, exec_precision="f32"))
        assert pinned["results"][0]["exec_precision"] == reported("f32"), target
        assert pinned["results"][0]["sqnr_db"] > 80, (target, pinned["results"][0])


def test_limit_draws_across_classes(digits):
    """--limit 30 of ten class folders: three images of each class, not the first classes in sort order."""
    data = eval_data(digits / "test", limit=30)
    assert len(data) == 30 and sorted(np.bincount(data.labels).tolist()) == [3] * 10
    assert eval_data(digits / "test", limit=30).paths == data.paths  # seeded: the same images every run


def test_nan_output_is_a_failed_row_and_identical_logits_are_exact():
    from bbdeploy.stages.drift_report import plots, result_rows

    reference = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    broken = DriftAccumulator()
    broken.add(reference, np.array([[np.nan, 1.0, 0.0], [0.0, 2.0, 1.0]]), None)
    figures = broken.result()
    assert figures["nonfinite_outputs"] == 1 and figures["max_abs_diff"] is None and figures["cosine"] is None
    exact = DriftAccumulator()
    exact.add(reference, reference.copy(), None)
    assert exact.result()["sqnr_db"] is None and exact.result()["nonfinite_outputs"] == 0
    nan_error = "1 of the artifact's logits are NaN or infinite"
    rows = [{"artifact": name, "status": status, "error": error, "target": "t", "precision": "int8",
             "exec_precision": None, **result}
            for name, status, error, result in (("a.x", "failed", nan_error, figures),
                                                ("b.x", "ok", None, exact.result()))]
    report = {"results": rows}
    table = result_rows(report)
    # the last three columns: SQNR, max |diff|, note (the failed row's note is its error)
    assert table[0][0] == "✗" and table[0][-3:] == ["n/a", "-", nan_error]
    assert table[1][0] == "✓" and table[1][-3:] == ["exact", "0", ""]
    assert len(plots(report)) == 1
    # a failed row fails the run even without gates; the exact one passes any agreement gate
    assert gate_failures(report, None, None) == [f"a.x: {nan_error}"]
    assert gate_failures(report, None, 1.0) == [f"a.x: {nan_error}"]


def test_drift_metrics_by_hand():
    reference = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]])
    artifact = np.array([[2.5, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.5]])
    accumulator = DriftAccumulator()
    accumulator.add(reference[:2], artifact[:2], np.array([0, 1]))
    accumulator.add(reference[2:], artifact[2:], np.array([2, 1]))
    result = accumulator.result()
    assert result["samples"] == 4 and result["agreement_top1"] == 0.75 and result["agreement_top5"] == 1.0
    # reference right on 3 of 4 (the last label is 1), artifact on 2 of 4: a drop of 25 points
    assert result["accuracy_top1"] == 0.5 and result["accuracy_drop"] == 25.0
    assert accumulator.reference_accuracy() == {"accuracy_top1": 0.75, "accuracy_top5": 1.0}
    assert result["max_abs_diff"] == 1.0
    noise = 0.25 + 1 + 1 + 0.25
    assert result["sqnr_db"] == pytest.approx(10 * np.log10(np.sum(reference ** 2) / noise))
    assert bootstrap_interval(np.ones(10)) == [1.0, 1.0]
    low, high = bootstrap_interval(np.r_[np.ones(50), np.zeros(50)])
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # binomial: 0.5 +- 1.96 * 0.05


def test_labels_from_a_csv_and_from_named_folders(tmp_path, photos):
    for folder, name in (("cats", "chelsea"), ("cups", "coffee")):
        (tmp_path / "data" / folder).mkdir(parents=True)
        Image.fromarray(photos[name]).save(tmp_path / "data" / folder / f"{name}.png")
    (tmp_path / "names.txt").write_text("cups\ncats\n")
    data = eval_data(tmp_path / "data", class_names=tmp_path / "names.txt")
    assert [p.name for p in data.paths] == ["chelsea.png", "coffee.png"] and data.labels == [1, 0]
    (tmp_path / "labels.csv").write_text("path,label\ncats/chelsea.png,282\ncups/coffee.png,967\n")
    assert eval_data(tmp_path / "data", labels_csv=tmp_path / "labels.csv").labels == [282, 967]
    unlabeled = eval_data(tmp_path / "data")
    assert unlabeled.labels is None and "subfolder 'cats' is not a class index" in unlabeled.label_source


def _copy_without_manifest(artifact: Path, folder: Path) -> Path:
    folder.mkdir()
    return Path(shutil.copy(artifact, folder / artifact.name))


@pytest.mark.parametrize("case, expected", [
    ("empty", "error: --data '{data}' holds no images (.jpg, .jpeg, .png, .webp, .bmp); pass a folder of images"),
    ("outside", "error: labels [12] of --data are outside the 10 classes of {artifact.name}; "
                "pass labels 0 to 9"),
    ("no-manifest", "error: no manifest {artifact}.json: pass an artifact written by `bbdeploy export`"),
    ("gate-without-labels", "error: --max-drop needs labels, and --data has none (images directly in the folder"),
])
def test_bad_drift_input_is_one_line(case, expected, digits, digits_artifacts, tmp_path):
    artifact = digits_artifacts[(PLUMBING_TARGET, "int8")]
    data = tmp_path / "data"
    data.mkdir()
    extra = []
    if case == "outside":
        (data / "12").mkdir()
        shutil.copy(next((digits / "test" / "3").glob("*.png")), data / "12" / "x.png")
    elif case == "no-manifest":
        artifact = _copy_without_manifest(artifact, tmp_path / "bare")
        shutil.copy(next((digits / "test" / "3").glob("*.png")), data / "x.png")
    elif case == "gate-without-labels":
        shutil.copy(next((digits / "test" / "3").glob("*.png")), data / "x.png")
        extra = ["--max-drop", "1"]
    result = run_cli("drift", str(artifact), "--data", str(data), *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected.format(data=data, artifact=artifact)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
