"""One deployed artifact behind one interface, whatever its runtime: `load(path)` picks the runner class
of `runtimes/` whose SUFFIX the file has, and the caller feeds float batches and gets float outputs."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TensorSpec:
    """What the artifact expects or returns; scale/zero_point are set for quantized tensors."""

    name: str
    shape: list[int]
    dtype: str  # numpy dtype name: float32, float16, int8, uint8
    scale: float | None = None
    zero_point: int | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


class Runner:
    """Feed float32 NCHW or NHWC batches as the artifact's layout says; get float32 logits back.

    Quantized inputs and outputs are converted with the artifact's own scale and zero point, so
    callers always deal in the float domain.
    """

    SUFFIX: str  # of the artifacts it runs
    input: TensorSpec
    outputs: list[TensorSpec]  # logits; or the feature maps of an artifact exported with --features, in order
    runtime: str
    runtime_version: str
    # the precision the runtime computes float parts in, read back from it; None where the runtime
    # has no such setting (it computes in the artifact's own precision)
    exec_precision: str | None = None
    # the runtime's own switches that keep its telemetry off, applied per process before it is imported
    # (see keep_runtimes_offline): environment variables it reads on import, and optional modules whose
    # absence the runtime handles by sending nothing
    OFFLINE_ENVIRONMENT: dict[str, str] = {}
    OFFLINE_WITHOUT_MODULES: tuple[str, ...] = ()
    # runtimes that hand the graph to XNNPACK say whether it took it: {"applied": bool, "partitions": n}
    xnnpack: dict | None = None

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The first (for a classifier: the only) output."""
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output, in the artifact's order."""
        return [self._from_output(raw, spec) for raw, spec in zip(self._invoke(self._to_input(batch)), self.outputs)]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - per runtime
        raise NotImplementedError

    def run_probes(self, batch: np.ndarray) -> list[np.ndarray]:
        """The tensors named by `probes` at load (a layer probe plan's, exporters/probes.py), raw as the
        runtime holds them (quantized ones in their integer type), in that order."""
        return self._invoke_probes(self._to_input(batch))

    def _invoke_probes(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - per runtime
        raise NotImplementedError

    def _to_input(self, batch: np.ndarray) -> np.ndarray:
        spec = self.input
        if spec.scale:
            info = np.iinfo(spec.dtype)
            q = np.round(batch / spec.scale) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return batch.astype(spec.dtype, copy=False)

    @staticmethod
    def _from_output(raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
        return dequantize(raw, spec.scale, spec.zero_point)


def dequantize(raw: np.ndarray, scale: float | None, zero_point: int | None) -> np.ndarray:
    """A runtime's tensor in the float domain: (raw - zero_point) * scale where it is quantized."""
    if scale:
        return (raw.astype(np.float32) - np.float32(zero_point or 0)) * np.float32(scale)
    return raw.astype(np.float32, copy=False)


def _runner_classes() -> list[type[Runner]]:
    """The RUNNER of every module in `runtimes/` (a folder here, a folder inside the zipapp on a board):
    a new runtime is a new file there. Importing one imports no runtime: each does so when it loads."""
    from . import runtimes

    return [importlib.import_module(f"{runtimes.__name__}.{info.name}").RUNNER
            for info in sorted(pkgutil.iter_modules(runtimes.__path__), key=lambda info: info.name)]


# by artifact suffix: on a board there is no target table, only the file (the table names each
# target's runtime module, and a test checks that the two agree)
RUNNERS: dict[str, type[Runner]] = {runner.SUFFIX: runner for runner in _runner_classes()}


def keep_runtimes_offline() -> None:
    """Turn every runtime's telemetry off in this process and the processes it starts, with the
    runtimes' own switches, before any of them is imported; nothing is written to the user's settings.

    A variable the user set explicitly is theirs (`setdefault`). A module is blocked by a `None` entry in
    `sys.modules`, which makes `import` raise ImportError; one imported already is left as it is
    (bbdeploy applies this when it is imported, and the runner before it loads any artifact).
    """
    for runner in RUNNERS.values():
        for name, value in runner.OFFLINE_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        for module in runner.OFFLINE_WITHOUT_MODULES:
            sys.modules.setdefault(module, None)


EXEC_PRECISIONS = ("f32", "bf16", "f16")  # what `exec_precision` may pin, where a runtime has the setting


def load(path: str | Path, threads: int | None = None, exec_precision: str | None = None,
         probes: list[str] | tuple[str, ...] = ()) -> Runner:
    """A runner for the artifact at `path`, chosen by its suffix (see RUNNERS).

    `exec_precision` (one of EXEC_PRECISIONS) pins the precision of float compute in runtimes that
    have such a setting; None leaves each runtime's default. `probes`: the intermediate tensors
    `run_probes` returns (the runtime's names for them, from the artifact's layer probe plan)."""
    path = Path(path)
    if path.suffix not in RUNNERS:
        raise ValueError(f"no runtime for {path.name}; artifacts end in {', '.join(RUNNERS)}")
    if exec_precision is not None and exec_precision not in EXEC_PRECISIONS:
        raise ValueError(f"unknown execution precision {exec_precision!r}; pass one of {', '.join(EXEC_PRECISIONS)}")
    return RUNNERS[path.suffix](path, threads, exec_precision, tuple(probes))


