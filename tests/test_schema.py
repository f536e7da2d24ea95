"""One schema per option set (`bbdeploy.schema`): each field of QuantOptions, QATOptions and
BenchOptions is a flag of its command, with the field's help and default, and a key of the pipeline
file whose value reaches that field, with the same default. Fields are read from the dataclasses, so
a new option is checked here unedited."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import typer.main
import yaml

from bbdeploy.cli import app
from bbdeploy.quantization.options import (CALIB_METHODS, DEVICES, DISTILL_LOSSES, IO_TYPES, WEIGHT_ROUNDINGS,
                                           QATOptions, QuantOptions)
from bbdeploy.run.jobs import ExportJob, bench_options, export_options
from bbdeploy.run.pipeline_file import parse_pipeline
from bbdeploy.schema import default_of, exposed_fields, flag_of, help_of, key_of
from bbdeploy.targets.bench import EXEC_PRECISION_CHOICES, BenchOptions
from tests.conftest import PLUMBING_TARGET

COMMAND = {QuantOptions: "export", QATOptions: "export", BenchOptions: "bench"}
SECTION = {QuantOptions: ("precisions", "int8"), QATOptions: ("precisions", "int8-qat"), BenchOptions: ("bench",)}
OPTION_SETS = list(COMMAND)
QAT_DATA = "photos"  # an int8-qat precision needs train_data
CHOICES = {(QuantOptions, "calib_method"): CALIB_METHODS, (QuantOptions, "weight_rounding"): WEIGHT_ROUNDINGS,
           (QuantOptions, "io"): IO_TYPES, (QATOptions, "distill"): DISTILL_LOSSES, (QATOptions, "device"): DEVICES,
           (BenchOptions, "exec_precision"): EXEC_PRECISION_CHOICES}


def _params(command: str) -> dict:
    click_command = typer.main.get_command(app).commands[command]
    return {opt: param for param in click_command.params for opt in (*param.opts, *param.secondary_opts)}


def _fields(cls) -> list[str]:
    return [f.name for f in exposed_fields(cls)]


@pytest.mark.parametrize("cls", OPTION_SETS, ids=lambda c: c.__name__)
def test_every_field_is_a_flag_with_the_fields_help_and_default(cls):
    params = _params(COMMAND[cls])
    for name in _fields(cls):
        flag = flag_of(cls, name)
        if flag is None:  # a positional argument of the command
            (param,) = [p for p in params.values() if p.name == name]
            assert not param.opts[0].startswith("-") and param.help == help_of(cls, name)
            continue
        assert flag in params, f"{cls.__name__}.{name}: no {flag} on `bbdeploy {COMMAND[cls]}`"
        param = params[flag]
        default = default_of(cls, name)
        if name == "qat":  # the QAT option set itself: a switch
            assert param.is_flag and param.default is False and param.help == help_of(cls, name)
        elif param.default is None and default not in (None, (), []):
            # unset on the command line (so that it can tell given from left out): the field's default
            # stands in, and the help says which
            assert param.help == help_of(cls, name, with_default=True), (cls.__name__, name)
        else:
            assert param.help == help_of(cls, name), (cls.__name__, name)
            assert param.default == (None if default in ((), []) else default), (cls.__name__, name, param.default)


def test_every_flag_of_bench_is_a_field():
    fields = {flag_of(BenchOptions, name) for name in _fields(BenchOptions)}
    flags = {param.opts[0] for param in _params("bench").values() if param.opts[0].startswith("--")}
    assert flags - fields == {"--json"}


def _other_value(cls, name: str):
    """A value unlike the default, valid where the loader checks it."""
    if (cls, name) == (BenchOptions, "device"):
        return "ssh://pi@192.168.1.20"
    if name == "ssh_options":
        return ["Port=2222"]
    if (cls, name) in CHOICES:  # checked at load: another of its choices (not cuda: no GPU here)
        return next(c for c in CHOICES[cls, name] if c not in (default_of(cls, name), "cuda"))
    annotation = typing.get_type_hints(cls)[name]
    optional = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = optional[0] if type(None) in typing.get_args(annotation) else annotation  # X | None: X
    default = default_of(cls, name)
    if typing.get_origin(kind) in (tuple, list) or kind in (tuple, list):
        return ["features.1"]
    if kind is bool:
        return not default
    if kind is int:
        return (default or 0) + 3
    if kind is float:
        return (default or 1.0) * 2.5
    return f"other-{name}"


def _pipeline_with(cls, key: str | None, value) -> dict:
    data = {"models": ["mobilenet_v2"], "targets": [PLUMBING_TARGET],
            "precisions": {"int8": {}, "int8-qat": {"train_data": QAT_DATA}},
            "devices": {"local": {}}}
    if key is not None:
        path = (("devices", "local", *key.split(".")[2:]) if key.startswith("devices.")
                else tuple(key.split(".")) if "." in key else (*SECTION[cls], key))
        section = data
        for part in path[:-1]:
            section = section.setdefault(part, {})
        section[path[-1]] = value
    return data


def _loaded(cls, data: dict, tmp_path: Path):
    """The option-set instance the pipeline's jobs would run with."""
    pipeline = parse_pipeline(yaml.safe_dump(data), "pipeline.yaml", base=tmp_path)
    if cls is BenchOptions:
        return bench_options(pipeline.devices[0], pipeline.bench, [])
    precision = next(p for p in pipeline.precisions if p.name == SECTION[cls][1])
    job = ExportJob(pipeline.models[0], precision, pipeline.targets, pipeline.calibration, str(tmp_path))
    quant = export_options(job).quant
    return quant.qat if cls is QATOptions else quant


def _as_field(cls, name: str, value, tmp_path: Path):
    """`value` as the loader hands it to the field: a relative path taken from the file's folder."""
    if isinstance(value, list):
        return type(default_of(cls, name))(value)
    if name in ("train_data", "train_labels", "class_names", "calib_data"):
        return str(tmp_path / value)
    if name == "benchmark_binary":
        return Path(value)
    return value


@pytest.mark.parametrize("cls", OPTION_SETS, ids=lambda c: c.__name__)
def test_every_field_is_a_pipeline_key_whose_value_reaches_it_with_the_same_default(cls, tmp_path):
    defaults = _loaded(cls, _pipeline_with(cls, None, None), tmp_path)
    for name in _fields(cls):
        key = key_of(cls, name)
        if key is None or name == "qat":  # qat: the int8-qat precision itself
            assert name in ("artifacts", "resume", "qat"), f"{cls.__name__}.{name} has no pipeline key"
            continue
        if name != "train_data":
            assert getattr(defaults, name) == default_of(cls, name), (cls.__name__, name)
        value = _other_value(cls, name)
        loaded = _loaded(cls, _pipeline_with(cls, key, value), tmp_path)
        assert getattr(loaded, name) == _as_field(cls, name, value, tmp_path), (cls.__name__, name, key)


def test_the_pipeline_file_spec_defaults_are_the_option_defaults():
    """BenchSpec and DeviceSpec hold the file's values until a job runs: their defaults are BenchOptions'."""
    from bbdeploy.run.pipeline_file import BenchSpec, DeviceSpec

    for spec in (BenchSpec, DeviceSpec):
        for field in dataclasses.fields(spec):
            owner = next((f.name for f in exposed_fields(BenchOptions)
                          if (key_of(BenchOptions, f.name) or "").rpartition(".")[2] == field.name), None)
            if owner is None:
                assert (spec, field.name) == (DeviceSpec, "name")  # the device's name in the report
                continue
            expected = default_of(BenchOptions, owner)
            assert field.default == (tuple(expected) if isinstance(expected, list) else expected), (spec, field.name)
