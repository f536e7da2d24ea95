"""The pipeline file of `bbdeploy run`: which models, targets, precisions and devices, validated.

A pipeline is YAML (see EXAMPLE, which `bbdeploy init` writes and which equals the built-in default).
Every mistake is one line naming the file, the line and the key, with a suggestion where a close
name exists: a typo in a key must never turn into a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bbdeploy.errors import BBDeployError, did_you_mean
from bbdeploy.run.file_positions import Where
from bbdeploy.run.example import EXAMPLE
from bbdeploy.quantization.options import QATOptions, QuantOptions
from bbdeploy.schema import file_keys, flag_of
from bbdeploy.targets.bench import BenchOptions, check_exec_precision
from bbdeploy.targets.devices import KINDS

PRECISIONS = ("fp32", "fp16", "int8", "int8-qat")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weights: str = "imagenet"  # imagenet | random | PATH
    width: float | None = None
    input_size: int | None = None  # None: the backbone's own
    num_classes: int | None = None
    calibration: str | None = None  # this model's calibration folder, instead of calibration.data


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision and its options: for int8, those of `export --int8` (calib_method,
    weight_rounding, bias_correction, io, keep_float, min_cosine); for int8-qat also the QAT ones
    (train_data, train_labels, train_class_names, epochs, lr, batch_size, distill)."""
    name: str
    options: tuple[tuple[str, object], ...] = ()

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class DeviceSpec:
    """A `devices:` entry: BenchOptions' keys there (`devices.*.KEY`), with its defaults."""
    name: str  # what the report calls it; a Ray resource `device:NAME` under --executor ray
    url: str = "local"  # local | ssh://[user@]host[:port] | adb://SERIAL | qemu://pi5
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"
    benchmark_binary: str | None = None
    delegate: str = "xnnpack"
    cpus: str | None = None  # pin the runtime to these cores (2,3)


@dataclass(frozen=True)
class CalibrationSpec:
    data: str | None = None  # None: crops of the built-in calibration photos (loud, recorded)
    size: int = 300


@dataclass(frozen=True)
class ValidationSpec:
    data: str | None = None  # None: crops of the built-in evaluation photos (no labels)
    labels: str | None = None
    class_names: str | None = None
    limit: int | None = None
    max_drop: float | None = None  # accuracy points, needs labels
    min_agreement: float | None = None  # top-1 agreement with the float model, a fraction
    layers: bool = False  # drift --layers: every layer's tensors on the artifact's runtime (where it ran)
    layer_samples: int = 16  # images the per-layer comparison uses


@dataclass(frozen=True)
class BenchSpec:
    """The `bench:` section: BenchOptions' keys there, with its defaults (tests/test_schema.py)."""
    threads: int = 1
    runs: int = 50
    warmup: int = 10
    min_time: float = 1.0
    exec_precision: str = "default"
    timeout: float = 3600.0
    cooldown: float | None = None
    max_temp: float | None = None
    sustained: float | None = None
    profile: str | None = None


@dataclass(frozen=True)
class Pipeline:
    models: tuple[ModelSpec, ...]
    targets: tuple[str, ...]
    precisions: tuple[PrecisionSpec, ...]
    calibration: CalibrationSpec = CalibrationSpec()
    validation: ValidationSpec = ValidationSpec()
    devices: tuple[DeviceSpec, ...] = (DeviceSpec("local"),)
    bench: BenchSpec = BenchSpec()
    output: str = "bbdeploy-run"
    source: str = field(default="built-in default", compare=False)


def _types(options_class, section: str | None = None) -> dict:
    return {key: types for key, (_, types) in file_keys(options_class, section).items()}



# key -> accepted types, per section; the dataclass defaults supply the rest. The keys of int8, int8-qat,
# calibration, bench and devices are those the option dataclasses declare (bbdeploy.schema)
_MODEL_KEYS = {"name": str, "weights": str, "width": (int, float), "input_size": int, "num_classes": int,
               "calibration": str}
_INT8_KEYS = {**_types(QuantOptions), "min_cosine": (int, float)}  # min_cosine: export's floor, per precision
_QAT_KEYS = {**_INT8_KEYS, **_types(QATOptions)}
_PRECISION_KEYS = {"fp32": {}, "fp16": {}, "int8": _INT8_KEYS, "int8-qat": _QAT_KEYS}
_DEVICE_KEYS = _types(BenchOptions, "devices.*")
_CALIBRATION_KEYS = _types(QuantOptions, "calibration")
_VALIDATION_KEYS = {"data": str, "labels": str, "class_names": str, "limit": int, "max_drop": (int, float),
                    "min_agreement": (int, float), "layers": bool, "layer_samples": int}
_BENCH_KEYS = _types(BenchOptions)
_TOP_KEYS = ("models", "targets", "precisions", "calibration", "validation", "devices", "bench", "output")


def load_pipeline(path: str | Path | None) -> Pipeline:
    """The pipeline in `path`, validated; None: the built-in default (EXAMPLE)."""
    if path is None:
        return parse_pipeline(EXAMPLE, "built-in default")
    file = Path(path).expanduser()
    if not file.is_file():
        raise BBDeployError(f"pipeline file {str(path)!r} does not exist; pass a YAML file "
                            "(`bbdeploy init` writes an example) or none for the built-in default")
    return parse_pipeline(file.read_text(encoding="utf-8"), str(path), base=file.parent.resolve())


def parse_pipeline(text: str, source: str, base: Path | None = None) -> Pipeline:
    """Validate and build. Every path is made absolute here, once: relative paths in the file are taken
    relative to the file's folder (`base`; None: the current folder), and the default output folder
    relative to the current folder, so that a job run elsewhere (a Ray worker started in another
    folder, or on another machine) reads and writes where the user meant."""
    base = Path(base or Path.cwd()).absolute()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BBDeployError(f"{source}{line}: not valid YAML ({problem}); fix the file or run "
                            "`bbdeploy init` for an example") from None
    where = Where(source, node)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise where.error((), "a pipeline is a mapping of sections (models, targets, precisions, ...)")
    _unknown_keys(data, _TOP_KEYS, (), where)
    default = parse_pipeline(EXAMPLE, "built-in default") if source != "built-in default" else None
    relative = (lambda value: value if value is None else str(base / Path(value).expanduser()))
    models = tuple(dataclasses.replace(model, calibration=relative(model.calibration),
                                       weights=model.weights if model.weights in ("imagenet", "random")
                                       else relative(model.weights))
                   for model in _models(data, where, default))
    targets = _targets(data, where)
    precisions = _precisions(data, where, relative, default)
    calibration = _section(data, "calibration", _CALIBRATION_KEYS, CalibrationSpec, where)
    validation = _section(data, "validation", _VALIDATION_KEYS, ValidationSpec, where)
    calibration = dataclasses.replace(calibration, data=relative(calibration.data))
    validation = dataclasses.replace(validation, data=relative(validation.data), labels=relative(validation.labels),
                                     class_names=relative(validation.class_names))
    _check_ranges(validation, calibration, where)
    devices = _devices(data, where)
    bench = _section(data, "bench", _BENCH_KEYS, BenchSpec, where)
    for key in ("threads", "runs"):
        if getattr(bench, key) < 1:
            raise where.error(("bench", key), f"{getattr(bench, key)} must be at least 1")
    try:
        check_exec_precision(bench.exec_precision)
    except BBDeployError as error:
        raise where.error(("bench", "exec_precision"), str(error).replace("--exec-precision ", "")) from None
    output = data.get("output", "bbdeploy-run")
    if not isinstance(output, str) or not output:
        raise where.error(("output",), f"{output!r} is not a folder name; pass a path such as bbdeploy-run")
    return Pipeline(models, targets, precisions, calibration, validation, devices, bench,
                    relative(output) if "output" in data else str(Path(output).absolute()), source)


def _unknown_keys(mapping: dict, allowed, path: tuple, where: Where) -> None:
    for key in mapping:
        if key not in allowed:
            raise where.error((*path, key), f"unknown key{did_you_mean(str(key), allowed)}; "
                                            f"allowed here: {', '.join(allowed) or 'none'}")


def _typed(value, expected, path: tuple, where: Where):
    if value is None:
        return None
    if isinstance(value, bool) and expected is not bool and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise where.error(path, f"{value!r} is a boolean; pass {_type_name(expected)}")
    if not isinstance(value, expected):
        raise where.error(path, f"{value!r} is a {type(value).__name__}; pass {_type_name(expected)}")
    if expected is list:
        return tuple(str(item) for item in value)
    return float(value) if expected == (int, float) else value


def _type_name(expected) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", (int, float): "a number"}
    return names.get(expected, str(expected))


def _mapping(data: dict, key: str, path: tuple, where: Where) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error((*path, key), f"expected a mapping of keys, got {type(value).__name__}")
    return value


def _section(data: dict, name: str, keys: dict, spec_type, where: Where):
    section = _mapping(data, name, (), where)
    _unknown_keys(section, keys, (name,), where)
    values = {key: _typed(value, keys[key], (name, key), where) for key, value in section.items()}
    return spec_type(**{key: value for key, value in values.items() if value is not None})


def _models(data: dict, where: Where, default: Pipeline | None) -> tuple[ModelSpec, ...]:
    from bbdeploy.backbones import resolve

    if "models" not in data:
        return default.models if default else ()
    entries = data["models"]
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        raise where.error(("models",), "expected a list of models (names, or {name: ..., weights: ...})")
    models = []
    for index, entry in enumerate(entries):
        path = ("models", index)
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise where.error(path, "each model needs a name (e.g. - name: efficientnet_lite0)")
        _unknown_keys(entry, _MODEL_KEYS, path, where)
        values = {key: _typed(value, _MODEL_KEYS[key], (*path, key), where) for key, value in entry.items()}
        try:
            values["name"] = resolve(values["name"]).name
        except BBDeployError as error:
            raise where.error((*path, "name"), str(error)) from None
        models.append(ModelSpec(**{key: value for key, value in values.items() if value is not None}))
    return tuple(models)


def _targets(data: dict, where: Where) -> tuple[str, ...]:
    from bbdeploy.exporters.registry import TARGETS

    value = data.get("targets", "all")
    if value == "all":
        return tuple(TARGETS)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise where.error(("targets",), f"expected all or a list of targets ({', '.join(TARGETS)})")
    for index, name in enumerate(names):
        if name not in TARGETS:
            raise where.error(("targets", index), f"unknown target {name!r}{did_you_mean(str(name), TARGETS)}; "
                                                  f"pass all or some of {', '.join(TARGETS)}")
    return tuple(dict.fromkeys(names))


def _precisions(data: dict, where: Where, relative, default: Pipeline | None) -> tuple[PrecisionSpec, ...]:
    if "precisions" not in data:
        return default.precisions if default else ()
    value = data["precisions"]
    if isinstance(value, list):  # [fp32, int8]: each with its default options
        value = {name: {} for name in value} if all(isinstance(v, str) for v in value) else value
    if not isinstance(value, dict) or not value:
        raise where.error(("precisions",), f"expected a mapping of precisions ({', '.join(PRECISIONS)}) to options")
    precisions = []
    for name, options in value.items():
        path = ("precisions", name)
        if name not in _PRECISION_KEYS:
            raise where.error(path, f"unknown precision{did_you_mean(str(name), PRECISIONS)}; pass some of "
                                    f"{', '.join(PRECISIONS)}")
        options = options or {}
        if not isinstance(options, dict):
            raise where.error(path, "expected a mapping of options ({} for none)")
        keys = _PRECISION_KEYS[name]
        _unknown_keys(options, keys, path, where)
        typed = {key: _typed(option, keys[key], (*path, key), where) for key, option in options.items()}
        for key in ("train_data", "train_labels", "train_class_names"):
            if typed.get(key) is not None:
                typed[key] = relative(typed[key])
        if name == "int8-qat" and not typed.get("train_data"):
            raise where.error(path, "int8-qat needs train_data: a folder of in-domain images (labels optional)")
        if name.startswith("int8"):
            _check_int8_options(name, typed, path, where)
        precisions.append(PrecisionSpec(name, tuple(sorted((k, v) for k, v in typed.items() if v is not None))))
    return tuple(precisions)


def _in_file_words(message: str, *option_sets) -> tuple[str, list[str]]:
    """An option set's error as the pipeline file says it: each flag (`--exec-precision`) replaced by its
    key (`exec_precision`); and the keys it named."""
    words = {flag_of(cls, field): key for cls in option_sets for key, (field, _) in file_keys(cls).items()
             if flag_of(cls, field)}
    keys = [key for flag, key in words.items() if flag in message]
    for flag in sorted(words, key=len, reverse=True):  # --train-device before --train-d...
        message = message.replace(flag, words[flag])
    return message, keys


def _check_int8_options(name: str, typed: dict, path: tuple, where: Where) -> None:
    """The option sets' own checks (choices, ranges), at load and in the file's words: the key that is
    wrong instead of the flag that export would name."""
    quant_keys, qat_keys = file_keys(QuantOptions), file_keys(QATOptions)
    fields = {key: typed[key] for key in typed if key in quant_keys}
    qat = QATOptions(**{qat_keys[key][0]: typed[key] for key in typed if key in qat_keys}) if name == "int8-qat" else None
    try:
        QuantOptions(**{quant_keys[key][0]: tuple(v) if isinstance(v, list) else v for key, v in fields.items()},
                     qat=qat).validate()
    except BBDeployError as error:
        message, keys = _in_file_words(str(error), QuantOptions, QATOptions)
        keys = [key for key in keys if key in typed]
        raise where.error((*path, *keys[:1]), message) from None


def _devices(data: dict, where: Where) -> tuple[DeviceSpec, ...]:
    if "devices" not in data:
        return (DeviceSpec("local"),)
    value = data["devices"]
    if value is None:
        return ()
    if isinstance(value, list):  # [local, ssh://pi@host]: named by their URL
        if not all(isinstance(item, str) for item in value):
            raise where.error(("devices",), "a device list holds URLs; use a mapping name: {url: ...} for options")
        value = {item: {"url": item} for item in value}
    if not isinstance(value, dict):
        raise where.error(("devices",), "expected a mapping of device names to {url: ...}")
    devices = []
    for name, options in value.items():
        path = ("devices", name)
        options = options or {}
        if not isinstance(options, dict):
            raise where.error(path, "expected a mapping such as {url: ssh://pi@host}")
        _unknown_keys(options, _DEVICE_KEYS, path, where)
        typed = {key: _typed(option, _DEVICE_KEYS[key], (*path, key), where) for key, option in options.items()}
        url = typed.pop("url", None) or ("local" if name == "local" else None)
        if url is None or not (url == "local" or url.startswith(tuple(k for k in KINDS if k.endswith("://")))):
            raise where.error((*path, "url") if url else path,
                              f"{url!r} is not a device; pass url: local, ssh://[user@]host[:port], adb://SERIAL or qemu://pi5")
        _check_device(url, typed, path, where)
        devices.append(DeviceSpec(str(name), url, **{k: v for k, v in typed.items() if v is not None}))
    return tuple(devices)


def _check_device(url: str, options: dict, path: tuple, where: Where) -> None:
    """What the device would refuse at bench time, said at load in the file's words: its address, and
    each ssh option (the form `ssh -o` takes)."""
    from bbdeploy.targets.devices import device_class
    from bbdeploy.targets.devices.ssh import ssh_option_problem

    try:
        device_class(url).check_address(url)
    except BBDeployError as error:
        raise where.error((*path, "url"), str(error)) from None
    for index, option in enumerate(options.get("ssh_options") or []):
        problem = ssh_option_problem(str(option))
        if problem:
            raise where.error((*path, "ssh_options"), f"item {index + 1}: {problem}; write e.g. "
                                                      "[IdentityFile=~/.ssh/id_ed25519, Port=2222]")


def _check_ranges(validation: ValidationSpec, calibration: CalibrationSpec, where: Where) -> None:
    if validation.min_agreement is not None and not 0 <= validation.min_agreement <= 1:
        raise where.error(("validation", "min_agreement"), f"{validation.min_agreement} is not a fraction in [0, 1]")
    if validation.max_drop is not None and validation.max_drop < 0:
        raise where.error(("validation", "max_drop"), f"{validation.max_drop} must be >= 0 (points of accuracy)")
    if validation.limit is not None and validation.limit < 1:
        raise where.error(("validation", "limit"), f"{validation.limit} must be at least 1")
    if validation.layer_samples < 1:
        raise where.error(("validation", "layer_samples"), f"{validation.layer_samples} must be at least 1")
    if calibration.size < 1:
        raise where.error(("calibration", "size"), f"{calibration.size} must be at least 1")
