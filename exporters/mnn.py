"""PyTorch -> MNN (Alibaba's mobile inference engine): bbdeploy's ONNX export, then MNN's own converter
from the `MNN` wheel.

The converter runs in a child process through `mnn_tools.py` (the compiled `_tools` extension, never
MNN's Python wrappers, which phone home; see that file): a converter crash is then this artifact's
failed row, with the converter's own last words, and nothing in it can reach the network.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from . import onnx as onnx_exporter

TOOLS = Path(__file__).with_name("mnn_tools.py")
TOOL_TIMEOUT_S = 3600


def run_tool(command: str, arguments: list[Path | str]) -> str:
    """Run `mnn_tools.py command arguments...` in a fresh Python; its output, or a RuntimeError that
    carries the tool's last message (MNN prints its errors on stdout and aborts).

    The tool runs in a folder of its own: MNN's converter writes `.__convert_external_data.bin` into
    its working folder, so two conversions in one folder (two exports at once) swap weights and write
    models that compute garbage (measured: 7 of 12 conversions run four at a time). Paths are made
    absolute for that reason."""
    arguments = [str(Path(a).resolve()) if isinstance(a, Path) else a for a in arguments]
    with tempfile.TemporaryDirectory(prefix="bbdeploy-mnn-") as private:
        done = subprocess.run([sys.executable, str(TOOLS), command, *arguments], capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT_S, cwd=private)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"MNN {command} failed (exit {done.returncode}): {tool_message(output)}")
    return output


def tool_message(output: str) -> str:
    """The lines that say why the tool failed: MNN's own error lines, else the last lines."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line or "what()" in line or "terminate" in line]
    return " | ".join((errors or lines)[-3:])[:600] or "no output"


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nchw") -> None:
    """Write `model` traced at `sample`'s static shape to `path` as an .mnn file.

    fp16 stores convolution weights as float16 (`--fp16`: half the file) and computes in float32 on
    CPUs without fp16 arithmetic, as LiteRT's fp16 scheme does.
    """
    source = path.with_name(path.stem + ".source.onnx")
    # with the exporter's optimizer: without it weights and biases reach MNN as computed values, which
    # its converter refuses ("Conv's bias input should be Constant!", then a crash)
    onnx_exporter.convert(model, sample, source, precision="fp32", layout=layout)
    arguments = ["-f", "ONNX", "--modelFile", source, "--MNNModel", path, "--bizCode", "bbdeploy"]
    if precision == "fp16":
        arguments.append("--fp16")
    output = run_tool("convert", arguments)
    source.unlink()
    if not path.is_file():  # the converter reports some failures and returns normally
        raise RuntimeError(f"MNN convert wrote no model: {tool_message(output)}")


def op_histogram(path: Path) -> dict[str, int]:
    """Operator counts of the .mnn graph (an int8 model keeps Convolution ops, with int8 weights)."""
    from bbdeploy.targets.runner.runtimes.mnn import quiet_import_mnn

    expr = quiet_import_mnn().expr
    return dict(Counter(var.op_type for var in expr.load_as_list(str(path)) if var.op_type not in ("Input", "Const")))
