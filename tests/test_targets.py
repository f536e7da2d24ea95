"""The target table is what everything reads: each record names modules and a runner class that exist
and agree with it, each satisfying its interface (bbdeploy.interfaces), as every device kind and
executor does (a new record, device or executor is checked here unedited)."""

from __future__ import annotations

import inspect
from importlib import import_module

import pytest

from bbdeploy.exporters.registry import TARGETS, exporter, layer_prober, quantizer
from bbdeploy.interfaces import Converter, Device, Executor, LayerProber, Quantizer, Runtime, mismatches
from bbdeploy.quantization.fake_quant import ACTIVATION_SCHEMES
from bbdeploy.run import executors
from bbdeploy.targets import runner as runner_module
from bbdeploy.targets.devices import KINDS
from bbdeploy.targets.runner import runtimes
from tests.target_checks import target_checks

RECORDS = pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))


@RECORDS
def test_the_runner_class_runs_the_targets_files(target):
    runner_class = import_module(f"{runtimes.__name__}.{target.runner}").RUNNER
    assert runner_class.SUFFIX == target.suffix
    assert runner_module.RUNNERS[target.suffix] is runner_class  # what a board picks by suffix alone


@RECORDS
def test_the_modules_satisfy_their_interfaces(target):
    runner_class = import_module(f"{runtimes.__name__}.{target.runner}").RUNNER
    for implementation, protocol in ((exporter(target), Converter), (quantizer(target), Quantizer),
                                     (layer_prober(target), LayerProber), (runner_class, Runtime)):
        assert mismatches(implementation, protocol) == [], (target.name, protocol.__name__)


@pytest.mark.parametrize("scheme", KINDS)
def test_every_device_kind_satisfies_the_device_interface(scheme):
    assert mismatches(KINDS[scheme], Device) == []


@pytest.mark.parametrize("name", [name for name, _ in inspect.getmembers(executors, inspect.isclass)
                                  if name.endswith("Executor") and _.__module__ == executors.__name__])
def test_every_executor_satisfies_the_executor_interface(name):
    assert mismatches(getattr(executors, name), Executor) == []


def test_the_interface_check_sees_a_missing_method_and_a_changed_signature():
    class Changed:
        SUFFIX, OFFLINE_ENVIRONMENT, OFFLINE_WITHOUT_MODULES = ".x", {}, ()

        def __init__(self, path, threads, exec_precision=None, probes=(), extra=1):  # an extra with a default is fine
            pass

        def run_probes(self, batch):
            pass

    assert mismatches(Changed, Runtime) == ["no run_all"]
    Changed.run_all = lambda self, images: None
    assert mismatches(Changed, Runtime) == ["run_all(images) is not run_all(batch)"]


@RECORDS
def test_the_record_is_consistent(target):
    assert target.suffix.startswith(".") and set(target.precisions) <= {"fp32", "fp16", "int8"}
    assert set(target.layouts) <= {"nchw", "nhwc"} and target.layouts
    assert target.calib_methods and target.weight_roundings and target.io_types[0] == "float"
    assert len(target.packages) == len(target.distributions) and target.device_distributions
    assert target.int8.weight_levels > 0 and isinstance(target.int8.own_bias_correction, bool)
    assert target.int8.activations in ACTIVATION_SCHEMES


@RECORDS
def test_the_target_has_its_own_graph_checks(target):
    """tests/test_target_<name>.py: what the generic zoo tests ask of this target's graphs."""
    target_checks(target.name)
