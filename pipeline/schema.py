"""One schema per option set: an option dataclass's fields carry their help, their command-line flag
and their pipeline-file key, so the CLI's help and the pipeline file's keys are read from the
dataclass instead of being written again beside it (tests/test_schema.py checks both ways).

    calib_size: int = option(300, "int8 calibration: number of images.", key="calibration.size")

`flag` defaults to `--calib-size` (None: no flag), `key` to the field's name inside its section of
the pipeline file (None: not in the file; a dotted key lives in another section). Standard library
only: `bbdeploy --help` imports the dataclasses that use it.
"""

from __future__ import annotations

import dataclasses
import types
import typing

_DEFAULT = object()


def option(default=dataclasses.MISSING, help: str = "", *, flag=_DEFAULT, key=_DEFAULT,
           default_factory=dataclasses.MISSING, why_not_exposed: str | None = None):
    """A dataclass field with its help, flag and pipeline-file key. `why_not_exposed`: the reason a
    field has neither flag nor key (e.g. fixed for reproducibility), said where it is declared."""
    metadata = {"help": help, "flag": flag, "key": key, "why_not_exposed": why_not_exposed}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def default_of(cls, name: str):
    field = _field(cls, name)
    if field.default is dataclasses.MISSING:
        return None if field.default_factory is dataclasses.MISSING else field.default_factory()
    return field.default


def flag_of(cls, name: str) -> str | None:
    flag = _field(cls, name).metadata.get("flag", _DEFAULT)
    return "--" + name.replace("_", "-") if flag is _DEFAULT else flag


def key_of(cls, name: str) -> str | None:
    key = _field(cls, name).metadata.get("key", _DEFAULT)
    return name if key is _DEFAULT else key


def help_of(cls, name: str, *, with_default: bool = False) -> str:
    """The field's help; `with_default`: for a flag whose own default is None (unset, so that the
    command can tell "given" from "left out"), the dataclass default it stands for."""
    text = _field(cls, name).metadata["help"]
    default = default_of(cls, name)
    if with_default and default not in (None, (), []):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default).lower() if isinstance(default, bool) else default
        text += f" [default: {shown}]"
    return text


def exposed_fields(cls) -> list[dataclasses.Field]:
    """The fields a user sets (those not declared `why_not_exposed`)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("why_not_exposed")]


def file_keys(cls, section: str | None = None) -> dict[str, tuple[str, object]]:
    """{pipeline-file key: (field name, accepted YAML types)} of the fields whose key lives in
    `section` (None: the undotted keys, i.e. the section the dataclass is written in)."""
    hints = typing.get_type_hints(cls)
    keys = {}
    for field in exposed_fields(cls):
        key = key_of(cls, field.name)
        if key is None:
            continue
        where, _, leaf = key.rpartition(".")
        if (where or None) == section:
            keys[leaf] = (field.name, yaml_types(hints[field.name]))
    return keys


def yaml_types(annotation) -> object:
    """What a YAML value may be for a field of this type: str, int, bool, list or (int, float)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = typing.get_origin(annotation)
    if base in (typing.Union, types.UnionType) and len(args) == 1:  # X | None
        return yaml_types(args[0])
    if base in (tuple, list) or annotation in (tuple, list):
        return list
    if annotation is float:
        return (int, float)
    if annotation in (str, int, bool):
        return annotation
    return str  # a Path and the like: written as a string
