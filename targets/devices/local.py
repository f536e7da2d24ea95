"""This machine: the runner script runs in a fresh Python process per artifact, as on a board, so
each artifact's peak memory is its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bbdeploy.errors import EXIT_FAILED, BBDeployError

RUNNER = Path(__file__).resolve().parent.parent / "runner.py"


def runner_arguments(artifact: str, options) -> list[str]:
    """The runner's command-line arguments (after the interpreter and the script)."""
    return [artifact, "--threads", str(options.threads), "--warmup", str(options.warmup),
            "--runs", str(options.runs), "--min-time", str(options.min_time)]


def parse_runner_output(stdout: str, where: str) -> tuple[dict, dict]:
    """(measurement, device facts) from the runner's JSON line; its errors as one clear line."""
    try:
        answer = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BBDeployError(f"the benchmark runner on {where} printed no result", EXIT_FAILED) from None
    if answer.get("error") == "runtime":
        module = answer["module"]
        package = {"onnxruntime": "onnxruntime", "openvino": "openvino",
                   "tflite_runtime": "ai-edge-litert"}.get(module, module)
        raise BBDeployError(f"{where} lacks the runtime module {module!r}; install it there: "
                            f"python3 -m pip install {package}")
    return answer["result"], answer["device"]


class LocalDevice:
    def check(self, entry: dict) -> None:
        """Every target runs here."""

    def run(self, entry: dict, options) -> tuple[dict, dict]:
        command = [sys.executable, str(RUNNER), *runner_arguments(entry["artifact"], options)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode not in (0, 3):
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise BBDeployError(f"benchmark of {Path(entry['artifact']).name} failed: {last}", EXIT_FAILED)
        return parse_runner_output(done.stdout, "this machine")
