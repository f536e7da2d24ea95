"""The target table is what everything reads: each record names modules and a runner class that exist
and agree with it (a new record is checked here unedited)."""

from __future__ import annotations

import inspect
from importlib import import_module

import pytest

from bbdeploy.exporters.registry import TARGETS, exporter, quantizer
from bbdeploy.targets import runner as runner_module
from bbdeploy.targets.runner import runtimes
from tests.target_checks import target_checks

RECORDS = pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
# the one quantizer signature (quantization/ptq.py), shaped like nncf.quantize(model, calibration, *, subset_size, ...)
QUANTIZER_PARAMETERS = ["model", "calibration", "subset_size", "sample", "out_path", "layout", "method", "io",
                        "keep_float", "bias_correction"]


@RECORDS
def test_the_runner_class_runs_the_targets_files(target):
    runner_class = import_module(f"{runtimes.__name__}.{target.runner}").RUNNER
    assert runner_class.SUFFIX == target.suffix
    assert runner_module.RUNNERS[target.suffix] is runner_class  # what a board picks by suffix alone


@RECORDS
def test_the_modules_have_the_common_interface(target):
    module = exporter(target)
    assert list(inspect.signature(module.convert).parameters)[:5] == ["model", "sample", "path", "precision", "layout"]
    assert callable(module.op_histogram)
    quantize = quantizer(target)
    assert list(inspect.signature(quantize.quantize).parameters) == QUANTIZER_PARAMETERS
    assert quantize.WEIGHT_LEVELS > 0 and isinstance(quantize.OWN_BIAS_CORRECTION, bool)


@RECORDS
def test_the_record_is_consistent(target):
    assert target.suffix.startswith(".") and set(target.precisions) <= {"fp32", "fp16", "int8"}
    assert set(target.layouts) <= {"nchw", "nhwc"} and target.layouts
    assert target.calib_methods and target.weight_roundings and target.io_types[0] == "float"
    assert len(target.packages) == len(target.distributions) and target.device_distributions


@RECORDS
def test_the_target_has_its_own_graph_checks(target):
    """tests/test_target_<name>.py: what the generic zoo tests ask of this target's graphs."""
    target_checks(target.name)
