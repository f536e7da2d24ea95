"""This machine: the runner (as the zipapp a board gets) runs in one fresh Python process for all
artifacts, as on a board, timing them interleaved (`runner.measure`); `drift --device` runs its
`evaluate` command the same way.

`ProcessDevice` is any device whose Python runs here as a child process: this machine's own
interpreter (`LocalDevice`) or an emulated board's (`qemu.QemuDevice`)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bbdeploy.errors import EXIT_FAILED, BBDeployError
from bbdeploy.exporters.registry import TARGETS

from .process import check_refusal, run_streaming, runner_failure
from .runner_archive import write_runner_archive


def runner_arguments(artifacts: list[str], options) -> list[str]:
    """The runner's command-line arguments (after the interpreter and the archive)."""
    arguments = ["bench", *artifacts, "--threads", str(options.threads), "--warmup", str(options.warmup),
                 "--runs", str(options.runs), "--min-time", str(options.min_time)]
    if options.exec_precision != "default":
        arguments += ["--exec-precision", options.exec_precision]
    for flag, value in (("--cpus", options.cpus), ("--cooldown", options.cooldown), ("--max-temp", options.max_temp),
                        ("--sustained", options.sustained)):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments


def parse_runner_output(stdout: str, where: str, entries: list[dict]) -> tuple[list[dict], dict]:
    """(one outcome per artifact of `entries`, device facts) from the JSON line of the runner or of
    its evaluate command. An outcome is {"result": {...}} or {"error": "one line"}; a missing runtime names the
    pip command to run there."""
    try:
        answer = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BBDeployError(f"the runner on {where} printed no result", EXIT_FAILED) from None
    outcomes = []
    for outcome, entry in zip(answer["outcomes"], entries):
        if "module" in outcome:
            install = " ".join(TARGETS[entry["target"]].device_distributions)
            outcome = {"error": f"{where} lacks the runtime module {outcome['module']!r}; install it there: "
                                f"python3 -m pip install {install}"}
        elif "result" in outcome and "peak_rss_bytes" in answer:
            outcome["result"]["peak_rss_bytes"] = answer["peak_rss_bytes"]
        outcomes.append(outcome)
    return outcomes, answer["device"]


def evaluation_request(jobs: list[dict], settings: dict, path_of) -> dict:
    """The runner's evaluate request: `jobs` as drift plans them ({"artifact", "images", "mean", "std",
    "layout", "batch"[, "count", "probes"]}), with each file named by `path_of(index, path)` as the device sees it."""
    return {**settings, "artifacts": [
        {"path": path_of(index, job["artifact"]), "images": path_of(index, job["images"]), "mean": job["mean"],
         "std": job["std"], "layout": job["layout"], "batch": job["batch"],
         **{key: job[key] for key in PROBE_JOB_KEYS if key in job}} for index, job in enumerate(jobs)]}


PROBE_JOB_KEYS = ("count", "probes")  # a drift --layers job: its first images, the tensors it sends back


BENCH_TOO_LONG = ("the benchmark did not finish within --timeout {timeout:g} s; pass fewer --runs, a smaller "
                  "--min-time or a larger --timeout")
DRIFT_TOO_LONG = "drift on the device did not finish within --timeout {timeout:g} s; pass --limit N or a larger --timeout"


class ProcessDevice:
    """A device whose Python is a child process here."""

    where = "this machine"
    NO_OUTPUTS = None  # drift --device: it returns the artifacts' outputs (the runner's evaluate)

    def __init__(self, timeout: float):
        self.timeout = timeout

    def interpreter(self) -> tuple[list[str], dict | None]:  # (argument list, environment or None)
        return [sys.executable], None

    @staticmethod
    def check_address(spec: str) -> None:
        """This machine needs no address."""

    @staticmethod
    def identity(spec: str) -> dict:
        """This machine's host and CPU: what a result measured here is a property of."""
        import platform

        from ..runner import device_facts

        facts = device_facts()
        return {"url": spec, "host": platform.node(), "cpu": facts["cpu"], "cores": facts["cores"]}

    def check(self, entry: dict) -> None:
        """Every target runs here."""

    def _run(self, arguments: list[str], progress=None, too_long: str = BENCH_TOO_LONG, step=None) -> str:
        command, env = self.interpreter()
        done = run_streaming([*command, *arguments], timeout=self.timeout, env=env, progress=progress, step=step)
        if done.timed_out:
            raise BBDeployError(too_long.format(timeout=self.timeout), EXIT_FAILED)
        if done.returncode != 0:
            check_refusal(self.where, done.returncode, done.stderr)
            raise BBDeployError(runner_failure(self.where, done.returncode, done.stderr), EXIT_FAILED)
        return done.stdout

    def run(self, entries: list[dict], options, step=None) -> tuple[list[dict], dict]:
        with tempfile.TemporaryDirectory(prefix="bbdeploy-bench-") as folder:
            archive = write_runner_archive(Path(folder))
            stdout = self._run([str(archive), *runner_arguments([e["artifact"] for e in entries], options)], step=step)
        return parse_runner_output(stdout, self.where, entries)

    def evaluate(self, entries: list[dict], jobs: list[dict], settings: dict, progress=None) -> tuple[list[dict], dict]:
        """Outputs of every job's artifact on its images (the runner's evaluate), with the device's facts."""
        with tempfile.TemporaryDirectory(prefix="bbdeploy-evaluate-") as folder:
            archive, request = write_runner_archive(Path(folder)), Path(folder) / "request.json"
            request.write_text(json.dumps(evaluation_request(jobs, settings, lambda index, path: str(Path(path).resolve()))))
            stdout = self._run([str(archive), "evaluate", str(request)], progress, DRIFT_TOO_LONG)
        return parse_runner_output(stdout, self.where, entries)


class LocalDevice(ProcessDevice):
    """This machine's own Python: the same process boundary as a board (a fresh interpreter, nothing of
    bbdeploy's state), so `local` times what a board would."""
