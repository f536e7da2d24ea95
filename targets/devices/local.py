"""This machine: the runner script runs in one fresh Python process for all artifacts, as on a board,
timing them interleaved (see `runner.measure`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bbdeploy.errors import EXIT_FAILED, BBDeployError
from bbdeploy.exporters.registry import TARGETS

RUNNER = Path(__file__).resolve().parent.parent / "runner.py"


def runner_arguments(artifacts: list[str], options) -> list[str]:
    """The runner's command-line arguments (after the interpreter and the script)."""
    arguments = [*artifacts, "--threads", str(options.threads), "--warmup", str(options.warmup),
                 "--runs", str(options.runs), "--min-time", str(options.min_time)]
    if options.exec_precision != "default":
        arguments += ["--exec-precision", options.exec_precision]
    return arguments


def parse_runner_output(stdout: str, where: str, entries: list[dict]) -> tuple[list[dict], dict]:
    """(one outcome per artifact of `entries`, device facts) from the runner's JSON line. An outcome
    is {"result": {...}} or {"error": "one line"}; a missing runtime names the pip command to run."""
    try:
        answer = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BBDeployError(f"the benchmark runner on {where} printed no result", EXIT_FAILED) from None
    outcomes = []
    for outcome, entry in zip(answer["outcomes"], entries):
        if "module" in outcome:
            install = " ".join(TARGETS[entry["target"]].device_distributions)
            outcome = {"error": f"{where} lacks the runtime module {outcome['module']!r}; install it there: "
                                f"python3 -m pip install {install}"}
        elif "result" in outcome:
            outcome["result"]["peak_rss_bytes"] = answer.get("peak_rss_bytes")
        outcomes.append(outcome)
    return outcomes, answer["device"]


class LocalDevice:
    def __init__(self, timeout: float):
        self.timeout = timeout

    def check(self, entry: dict) -> None:
        """Every target runs here."""

    def run(self, entries: list[dict], options) -> tuple[list[dict], dict]:
        command = [sys.executable, str(RUNNER), *runner_arguments([e["artifact"] for e in entries], options)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise BBDeployError(f"the benchmark did not finish within --timeout {self.timeout:g} s; pass fewer "
                                "--runs, a smaller --min-time or a larger --timeout", EXIT_FAILED) from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise BBDeployError(f"the benchmark runner failed: {last}", EXIT_FAILED)
        return parse_runner_output(done.stdout, "this machine", entries)
