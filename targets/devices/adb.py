"""An Android phone over adb, timed by LiteRT's own `benchmark_model` binary (the artifacts of targets
whose record names it as their `adb_tool`: TFLite).

The artifact and the binary are pushed into a fresh folder under /data/local/tmp, run with the thread
and delegate options, and the folder is removed afterwards, also when the run fails. adb is called
with argument lists; the command lines `adb shell` hands to the phone's shell are quoted piece by piece.

benchmark_model prints its timed runs as `count=N first=.. curr=.. min=.. max=.. avg=.. std=..`
(microseconds) and no percentiles, so p50/p90/p99 are null for this device, and `--sustained` (which
needs every run's time) is refused. The phone's state before and after each artifact is read by the
runner's own reader (`runner/device_state.py`) over one `adb shell` dump; `--cpus` runs the binary
under toybox's `taskset`, and `--cooldown`/`--max-temp` wait here, reading the phone's temperatures.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from pathlib import Path

from bbdeploy.errors import EXIT_FAILED, BBDeployError
from bbdeploy.exporters.registry import TARGETS

from ..runner.device_state import SHELL_DUMP, DumpSource, cpu_list, hottest_c, read_state
from ..runner.timing import COOLDOWN_LIMIT_S, cool_down

REMOTE_ROOT = "/data/local/tmp"
TOOL = "benchmark_model"  # targets whose record names this `adb_tool` run here
DELEGATE_FLAGS = {"xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"],
                  "none": ["--use_xnnpack=false"]}
STAT_LINE = re.compile(r"count=(?P<count>\d+) first=\S+ curr=\S+ min=(?P<min>\S+) max=\S+ avg=(?P<avg>\S+) std=(?P<std>\S+)")
MEMORY_LINE = re.compile(r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
                         r"init=\S+ overall=(?P<overall>[\d.e+]+)")


def parse_benchmark_output(text: str) -> dict:
    """The timed runs (the last `count=` line: the first one is the warm-up) and peak memory."""
    stats = list(STAT_LINE.finditer(text))
    if not stats:
        raise BBDeployError("benchmark_model printed no timings; run it by hand with --graph to see why", EXIT_FAILED)
    timed = stats[-1]
    memory = MEMORY_LINE.search(text)
    return {"runs": int(timed["count"]), "min_ms": float(timed["min"]) / 1000, "mean_ms": float(timed["avg"]) / 1000,
            "std_ms": float(timed["std"]) / 1000,
            "peak_rss_bytes": int(float(memory["overall"]) * 2**20) if memory else None,
            "xnnpack": {"applied": "XNNPACK delegate" in text, "partitions": None}}


class _ArtifactFailed(Exception):
    """benchmark_model failed on one artifact; the phone itself is fine."""


class ADBDevice:
    # LiteRT's benchmark_model times a model on random input and prints a summary; nothing on the phone
    # runs an artifact on given images and returns its outputs
    NO_OUTPUTS = ("{spec}: adb devices cannot return an artifact's outputs (benchmark_model only times it); "
                  "measure drift on local, ssh:// or qemu://pi5 and latency with bench --device {spec}")

    def __init__(self, spec: str, binary: Path | None, delegate: str):
        self.spec = spec
        self.serial = spec.removeprefix("adb://").strip("/")
        if not self.serial:
            raise BBDeployError(f"device {spec!r} names no phone; pass adb://SERIAL (see `adb devices`)")
        if binary is None or not Path(binary).is_file():
            raise BBDeployError("adb devices need LiteRT's benchmark_model for Android: pass --benchmark-binary PATH")
        if delegate not in DELEGATE_FLAGS:
            raise BBDeployError(f"unknown --delegate {delegate!r}; pass one of {', '.join(DELEGATE_FLAGS)}")
        self.binary, self.delegate = Path(binary), delegate

    @staticmethod
    def check_address(spec: str) -> None:
        """One line when `spec` names no phone (nothing is connected)."""
        if not spec.removeprefix("adb://").strip("/"):
            raise BBDeployError(f"device {spec!r} names no phone; pass adb://SERIAL (see `adb devices`)")

    @staticmethod
    def identity(spec: str) -> dict:
        """The same board behind the same address."""
        return {"url": spec}

    def check(self, entry: dict) -> None:
        if TARGETS[entry["target"]].adb_tool != TOOL:
            runnable = ", ".join(t.name for t in TARGETS.values() if t.adb_tool == TOOL)
            raise BBDeployError(f"{Path(entry['artifact']).name} is a {entry['target']} artifact; adb devices run "
                                f"{runnable} artifacts only (with {TOOL}); bench it locally or over ssh://")

    def _adb(self, *arguments: str, timeout: float = 120) -> str:
        try:
            done = subprocess.run(["adb", "-s", self.serial, *arguments], capture_output=True, text=True,
                                  timeout=timeout)
        except FileNotFoundError:
            raise BBDeployError("no `adb` command here; install Android's platform tools (apt-get install adb)") from None
        except subprocess.TimeoutExpired:
            raise BBDeployError(f"{self.spec} did not answer within {timeout:g} s", EXIT_FAILED) from None
        if done.returncode != 0:
            last = ((done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise BBDeployError(f"adb on {self.spec} failed: {last[:300]}", EXIT_FAILED)
        return done.stdout

    def state(self, cpus: list[int] | None) -> dict:
        """The phone's state now, read by the runner's reader over one shell dump."""
        return read_state(DumpSource(self._adb("shell", SHELL_DUMP)), cpus, own_process=False)

    def facts(self) -> dict:
        model, release, abi, cores = self._adb(
            "shell", "getprop ro.product.model; getprop ro.build.version.release; getprop ro.product.cpu.abi; "
                     "nproc").strip().splitlines()[:4]
        return {"cpu": abi, "machine": model, "cores": int(cores), "os": f"Android {release}", "python": None,
                "cpu_temperature_c": None, "throttled": None}

    def run(self, entries: list[dict], options, step=None) -> tuple[list[dict], dict | None]:
        """benchmark_model times one model per invocation: artifacts run one after another here, and
        one that fails is its own row."""
        if options.sustained is not None:
            raise BBDeployError(f"--sustained needs the time of every run, which {TOOL} does not print; time a "
                                "sustained run over ssh:// or locally")
        outcomes, facts = [], None
        cpus = cpu_list(options.cpus) if options.cpus else None
        waits_for_start = options.cooldown is not None and options.max_temp is None  # back to where it started
        started_at = hottest_c(self.state(cpus)) if waits_for_start else None
        for entry in entries:
            try:
                waited = None
                if options.cooldown is not None or options.max_temp is not None:
                    target = options.max_temp if options.max_temp is not None else started_at
                    waited = cool_down(lambda: hottest_c(self.state(cpus)), target,
                                       options.cooldown if options.cooldown is not None else COOLDOWN_LIMIT_S, step)
                before = self.state(cpus)
                measured, facts = self._run_one(entry, options, cpus)
                measured.update(state_before=before, state_after=self.state(cpus), cooldown=waited)
                outcomes.append({"result": measured})
            except _ArtifactFailed as exc:
                outcomes.append({"error": str(exc)})
        return outcomes, facts

    def _run_one(self, entry: dict, options, cpus: list[int] | None) -> tuple[dict, dict]:
        folder = f"{REMOTE_ROOT}/bbdeploy-{secrets.token_hex(4)}"
        graph, tool = f"{folder}/model{Path(entry['artifact']).suffix}", f"{folder}/{TOOL}"
        try:
            self._adb("shell", shlex.join(["mkdir", "-p", folder]))
            self._adb("push", entry["artifact"], graph, timeout=600)
            self._adb("push", str(self.binary), tool, timeout=600)
            self._adb("shell", shlex.join(["chmod", "755", tool]))
            try:  # the phone answered so far: what fails from here on is this artifact's run
                pinned = ["taskset", format(sum(1 << cpu for cpu in cpus), "x")] if cpus else []
                output = self._adb("shell", shlex.join([
                    *pinned, tool, f"--graph={graph}", f"--num_threads={options.threads}", f"--warmup_runs={options.warmup}",
                    f"--num_runs={options.runs}", f"--min_secs={options.min_time:g}",
                    *DELEGATE_FLAGS[self.delegate]]), timeout=options.timeout)
                parsed = parse_benchmark_output(output)
            except BBDeployError as exc:
                raise _ArtifactFailed(str(exc)) from None
            facts = self.facts()
        finally:
            try:
                self._adb("shell", shlex.join(["rm", "-rf", folder]))
            except BBDeployError:
                pass
        measured = {"runtime": "benchmark_model", "runtime_version": None, "exec_precision": None,
                    "load_rss_bytes": None, "threads": options.threads,
                    "warmup": options.warmup, "runs": parsed["runs"], "peak_rss_bytes": parsed["peak_rss_bytes"],
                    "xnnpack": parsed["xnnpack"] if self.delegate == "xnnpack" else None,
                    "summary_ms": {"mean": parsed["mean_ms"], "std": parsed["std_ms"], "min": parsed["min_ms"],
                                   "p50": None, "p90": None, "p99": None}}
        return measured, facts
