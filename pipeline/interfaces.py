"""The interfaces the parts meet at, written down: a target's exporter module (`Converter`) and
quantizer module (`Quantizer`), its layer probes (`LayerProber`), its runtime class in the self-contained runner (`Runtime`), a device
kind (`Device`) and an executor of `bbdeploy run` (`Executor`). The modules satisfy them by shape, not by
inheritance (the runner ships to boards without bbdeploy); `tests/test_targets.py` checks each
against its Protocol with `mismatches`, so a new target, device or executor is checked unedited.
"""

from __future__ import annotations

import inspect
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol


class Converter(Protocol):
    """`exporters/<target>.py`: a float model to an artifact file, and what ops the file holds."""

    def convert(self, model, sample, path: Path, *, precision: str, layout: str) -> None: ...

    def op_histogram(self, path: Path) -> dict[str, int]: ...


class Quantizer(Protocol):
    """`quantization/<target>.py`: shaped like `nncf.quantize(model, calibration, *, subset_size, ...)`;
    returns the settings its manifest records."""

    def quantize(self, model, calibration, *, subset_size: int, sample, out_path: Path, layout: str, method: str,
                 io: str, keep_float: list[str], bias_correction: bool) -> dict: ...


class Runtime(Protocol):
    """A runner class in `targets/runner/runtimes/` (a subclass of `artifact.Runner`): opens one
    artifact and runs float batches through it."""

    SUFFIX: str
    OFFLINE_ENVIRONMENT: dict[str, str]
    OFFLINE_WITHOUT_MODULES: tuple[str, ...]

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None,
                 probes: tuple[str, ...] = ()) -> None: ...

    def run_all(self, batch) -> list: ...

    def run_probes(self, batch) -> list: ...


class LayerProber(Protocol):
    """`exporters/<target>_probes.py`: where each conv/linear layer's input and output tensors are in an
    artifact of the target, for `drift --layers` (exporters/probes.py)."""

    def layer_probes(self, artifact: Path, layers: list[str], folder: Path): ...


class Device(Protocol):
    """A device kind of `targets/devices/`: checks its address at load, names what its results are a
    property of, takes or refuses an artifact, and runs the benchmark. `NO_OUTPUTS`: None where it can
    send outputs back (drift --device runs `evaluate` then), else the one-line reason."""

    NO_OUTPUTS: str | None

    @staticmethod
    def check_address(spec: str) -> None: ...

    @staticmethod
    def identity(spec: str) -> dict: ...

    def check(self, entry: dict) -> None: ...

    def run(self, entries: list[dict], options, step=None) -> tuple[list[dict], Any]: ...  # step(label, done, total): a wait


class Executor(Protocol):
    """Runs the jobs of `bbdeploy run` (`run/executors.py`); `device` names the one device a
    benchmark job holds."""

    def submit(self, function, job, device: str | None = None) -> Future: ...

    def close(self) -> None: ...


def mismatches(implementation, protocol: type) -> list[str]:
    """How `implementation` (a module, class or object) differs from `protocol`: members it lacks, and
    methods whose parameters differ (`self` aside; an extra parameter with a default is allowed).
    Empty: it satisfies the protocol."""
    problems = []
    declared = {name for name in vars(protocol) if not name.startswith("_")}
    if vars(protocol)["__init__"].__qualname__.startswith(protocol.__qualname__ + "."):  # not Protocol's own
        declared.add("__init__")
    for name in sorted(declared | set(vars(protocol).get("__annotations__", {}))):
        if not hasattr(implementation, name):
            problems.append(f"no {name}")
            continue
        if name not in vars(protocol):  # an attribute: its presence is the interface
            continue
        want, have = _parameters(getattr(protocol, name)), _parameters(getattr(implementation, name))
        extra = have[len(want):]
        if [p.name for p in have[:len(want)]] != [p.name for p in want] or any(
                p.default is inspect.Parameter.empty for p in extra):
            problems.append(f"{name}({', '.join(p.name for p in have)}) is not {name}({', '.join(p.name for p in want)})")
    return problems


def _parameters(function) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
