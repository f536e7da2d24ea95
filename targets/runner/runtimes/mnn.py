"""MNN's Module API: `.mnn` artifacts. MNN prints on stdout (its CPU features when loaded, its
precision mode per runtime manager), which would spoil the JSON the runner prints there: both go to
stderr here, and the MNN exporter and quantizer import MNN through `quiet_import_mnn` for the same reason."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ..artifact import Runner, TensorSpec


class MNNRunner(Runner):
    """MNN's Module API on the CPU backend. MNN's precision modes: "high" computes in f32 (what
    `exec_precision` "f32" pins), "low" in fp16 or bf16 where the CPU has them ("f16" / "bf16" ask for
    it; MNN picks which, so "low" is reported), and the default "normal" is f32 on CPUs without fp16
    arithmetic and may use fp16 on ARMv8.2 (reported as None: not read back)."""

    SUFFIX = ".mnn"
    MODES = {None: "normal", "f32": "high", "bf16": "low", "f16": "low"}

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None,
                 probes: tuple[str, ...] = ()):
        mnn = quiet_import_mnn()
        mode = self.MODES[exec_precision]
        with _stdout_to_stderr():  # MNN announces its precision mode on stdout
            manager = mnn.nn.create_runtime_manager(({"backend": "CPU", "precision": mode,
                                                      "numThread": threads or 1},))
            self.module = mnn.nn.load_module_from_file(str(path), [], [], runtime_manager=manager)
        self.expr = mnn.expr
        info = self.module.get_info()
        (inp,) = info["inputs"]
        names = info["outputNames"]
        if probes:  # tensor names (exporters/mnn_probes.py): the Module API returns what it is asked for
            with _stdout_to_stderr():
                self.module = mnn.nn.load_module_from_file(str(path), info["inputNames"], [*names, *probes],
                                                           runtime_manager=manager)
        self._probes = list(range(len(names), len(names) + len(probes)))
        self.runtime, self.runtime_version = "MNN", info.get("version") or mnn.version()
        self.exec_precision = {"normal": None, "high": "f32", "low": "low"}[mode]
        self.input = TensorSpec(info["inputNames"][0], list(inp.shape), "float32")
        # in the order of their names (features_0, features_1, ...): MNN's quantizer reorders outputs
        self._order = sorted(range(len(names)), key=lambda i: _natural(names[i]))
        probes = self._invoke(np.zeros(self.input.shape, np.float32))
        self.outputs = [TensorSpec(names[i], list(probe.shape), "float32") for i, probe in zip(self._order, probes)]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)  # MNN reads this memory: keep it alive
        outputs = self.module.forward([self.expr.const(batch, list(batch.shape), self.expr.NCHW)])
        # read() is a view MNN reuses
        return [np.array(outputs[i].read(), dtype=np.float32, copy=True) for i in self._order]

    def _invoke_probes(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outputs = self.module.forward([self.expr.const(batch, list(batch.shape), self.expr.NCHW)])
        probes = [outputs[i] for i in self._probes]
        # a convolution's output is in MNN's packed NC4HW4 layout: converted to NCHW to be read
        return [np.array(self.expr.convert(var, self.expr.NCHW).read() if var.data_format == self.expr.NC4HW4
                         else var.read(), dtype=np.float32, copy=True) for var in probes]


def _natural(name: str) -> tuple:
    """Sort key: `features_10` after `features_9`."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def quiet_import_mnn():
    """`import MNN`: its engine prints the CPU's features on stdout when loaded, which would spoil
    the JSON a command prints there; sent to stderr instead."""
    with _stdout_to_stderr():
        import MNN
        import MNN.expr
        import MNN.nn
    return MNN


class _stdout_to_stderr:
    """File descriptor 1 points at stderr for the duration (native code's prints included: the C
    library's buffer is flushed before fd 1 is restored)."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc):
        try:
            import ctypes

            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):  # pragma: no cover - no C library to flush
            pass
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


RUNNER = MNNRunner
