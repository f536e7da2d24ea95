"""ExecuTorch's Python runtime (`executorch.runtime`): `.pte` programs, their XNNPACK delegates run by the
XNNPACK backend the wheel registers. It needs torch on the device too (its tensors are torch tensors).

ExecuTorch's C++ logs its CPU probing and threadpool resets on stderr (fd 2, five lines per process);
they are kept out of the runner's output, as is the import's "experimental API" warning. Which parts of
the program XNNPACK runs is read from the file itself (`program_summary`): the runtime has no API for it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from ..artifact import Runner, TensorSpec

XNNPACK = "XnnpackBackend"  # the delegate id XnnpackPartitioner writes
DTYPES = {0: "uint8", 1: "int8", 5: "float16", 6: "float32"}  # ExecuTorch's ScalarType codes


class ExecuTorchRunner(Runner):
    SUFFIX = ".pte"

    def __init__(self, path: Path, threads: int | None, exec_precision: str | None = None,
                 probes: tuple[str, ...] = ()):
        import torch

        with _quiet_stderr(), warnings.catch_warnings():
            # executorch.runtime warns on import that its API is experimental: a note for developers
            warnings.filterwarnings("ignore", message="This API is experimental")
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime

            if threads:
                portable_lib._unsafe_reset_threadpool(threads)
            portable_lib._threadpool_get_thread_count()  # the threadpool starts here, with its logging
            program = Runtime.get().load_program(str(path))
        self._torch = torch
        self.method = program.load_method("forward")
        self.runtime, self.runtime_version = "executorch", _version()
        meta = self.method.metadata
        (self.input,) = [_spec(f"input_{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        self.outputs = [_spec(f"output_{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
        summary = program_summary(Path(path).read_bytes())
        self.xnnpack = {"applied": summary["partitions"] > 0, **summary}

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.method.execute([self._torch.from_numpy(np.ascontiguousarray(batch))])
        return [output.numpy().copy() for output in outputs]

    def _invoke_probes(self, batch: np.ndarray) -> list[np.ndarray]:
        return []  # a plan never names any (exporters/executorch_probes.py): nothing inside XNNPACK can be fetched


def program_summary(data: bytes) -> dict:
    """{"partitions": XNNPACK delegates, "portable_ops": {operator: calls outside any delegate},
    "undelegated_convolutions": those calls that are convolutions} of the first execution plan, read from
    the program's flatbuffer (schema/program.fbs of executorch)."""
    plans = tables(root(data), 1)  # Program.execution_plan
    if not plans:
        return {"partitions": 0, "portable_ops": {}, "undelegated_convolutions": 0}
    plan = plans[0]
    delegates = [_string(delegate, 0) for delegate in tables(plan, 7)]  # BackendDelegate.id
    operators = [_string(operator, 0) for operator in tables(plan, 6)]  # Operator.name
    calls: dict[str, int] = {}
    for chain in tables(plan, 5):  # ExecutionPlan.chains
        for instruction in tables(chain, 2):  # Chain.instructions
            kind, call = union(instruction, 0)  # InstructionArguments: 1 is KernelCall
            if kind == 1:
                name = operators[scalar(call, 0, "Int32Flags")]  # KernelCall.op_index
                calls[name] = calls.get(name, 0) + 1
    return {"partitions": delegates.count(XNNPACK), "portable_ops": dict(sorted(calls.items())),
            "undelegated_convolutions": sum(n for op, n in calls.items() if "conv" in op.rpartition("::")[2])}


# A few readers of flatbuffer tables by field number (the schema's order), shared with exporters/executorch.py,
# which reads XNNPACK's own flatbuffer inside each delegate with them.

def root(data: bytes):
    """The root table of a flatbuffer."""
    import flatbuffers

    buffer = bytearray(data)
    return flatbuffers.table.Table(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, 0))


def tables(table, field: int) -> list:
    """The tables in vector field `field` of `table`."""
    import flatbuffers

    offset = table.Offset(4 + 2 * field)
    if not offset:
        return []
    start = table.Vector(offset)
    return [flatbuffers.table.Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def table_at(table, field: int):
    """The table in field `field` of `table`, or None."""
    import flatbuffers

    offset = table.Offset(4 + 2 * field)
    return flatbuffers.table.Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def union(table, field: int) -> tuple:
    """(type, value table) of the union declared as field `field` (its type byte takes that field's slot,
    its value the next one)."""
    return scalar(table, field, "Uint8Flags"), table_at(table, field + 1)


def scalar(table, field: int, flags: str) -> int:
    """A number field (`flags`: flatbuffers.number_types' name for its type); 0 when absent (the default)."""
    import flatbuffers

    offset = table.Offset(4 + 2 * field)
    return table.Get(getattr(flatbuffers.number_types, flags), offset + table.Pos) if offset else 0


def _string(table, field: int) -> str:
    offset = table.Offset(4 + 2 * field)
    return table.String(offset + table.Pos).decode() if offset else ""


def _spec(name: str, info) -> TensorSpec:
    return TensorSpec(name, [int(d) for d in info.sizes()], DTYPES.get(int(info.dtype()), str(info.dtype())))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _quiet_stderr():
    """fd 2 to /dev/null for the C++ logging of the runtime's first calls (Python's own errors raise as usual)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


RUNNER = ExecuTorchRunner
