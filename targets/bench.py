"""The latency method, one for every device: the device runs `runner.py` (warm-up, then timed runs
until both a minimum count and a minimum time are reached) and returns raw times; they are summarised
here, so that numbers from this machine, a board or a phone mean the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bbdeploy.errors import BBDeployError
from bbdeploy.rows import BenchRow, failed
from bbdeploy.schema import option
from bbdeploy.stages.manifest import files_intact, read_manifest

from .runner import EXEC_PRECISIONS
from .runner.device_state import cpu_list, state_notes
from .runner.timing import COOLDOWN_LIMIT_S

SUSTAINED_WINDOW_S = 60.0  # --sustained: the first and the last minute
NOISY_SPREAD = 1.5  # p99 / p50 above this: the device is noisy (other load, thermal throttling)
EXEC_PRECISION_CHOICES = ("default", *EXEC_PRECISIONS)  # default: what an application gets


EXEC_PRECISION_HELP = ("Precision of float compute where the runtime has the setting (OpenVINO: bf16 by default on "
                       "CPUs with native bf16): default (what an application gets) | f32 | bf16 | f16.")


@dataclass
class BenchOptions:
    """`bbdeploy bench` and a pipeline's `bench:` section and `devices:` entries (`bbdeploy.schema`)."""

    artifacts: list[Path] = option(help="Artifacts written by `bbdeploy export`.", flag=None,
                                   key=None)  # the command's arguments; a pipeline benches its own exports
    device: str = option("local", "Where to run: local | ssh://[user@]host[:port] | adb://SERIAL | qemu://pi5 | "
                                  "qemu://pi4 (emulated: no meaningful latency).", key="devices.*.url")
    threads: int = option(1, "Runtime threads (fixed and recorded).")
    warmup: int = option(10, "Untimed runs first.")
    runs: int = option(50, "At least this many timed runs.")
    min_time: float = option(1.0, "And at least this many seconds of timed runs.")
    ssh_options: list[str] = option(default_factory=list, help="ssh: -o KEY=VALUE for the OpenSSH client "
                                    "(repeatable).", flag="--ssh-option", key="devices.*.ssh_options")
    remote_python: str = option("python3", "ssh: the device's Python with the runtimes.", key="devices.*.python")
    benchmark_binary: Path | None = option(None, "adb: LiteRT's benchmark_model built for the phone.",
                                           key="devices.*.benchmark_binary")
    delegate: str = option("xnnpack", "adb: benchmark_model's delegate, xnnpack | gpu | nnapi | none.",
                           key="devices.*.delegate")
    exec_precision: str = option("default", EXEC_PRECISION_HELP)
    timeout: float = option(3600.0, "Seconds the whole run on the device may take.")
    cpus: str | None = option(None, "Pin the runtime to these cores of the device (2,3 or 0-3; taskset's list), "
                              "recorded in the row.", key="devices.*.cpus")
    cooldown: float | None = option(None, "Before each artifact, wait up to this many seconds until the device is "
                                    "back at the temperature it started at (or --max-temp); artifacts then run one "
                                    "after another.")
    max_temp: float | None = option(None, f"Before each artifact, wait until the hottest thermal zone is at or under "
                                    f"this many °C (at most --cooldown, else {COOLDOWN_LIMIT_S:g} s).")
    sustained: float | None = option(None, "Keep each artifact running this many seconds, one after another: p50/p90 "
                                     "of the first and the last window (a minute, a third of shorter runs) and the "
                                     "slope.")
    profile: str | None = option(None, "mlperf: at least 1024 runs and 60 s per artifact, p90 first (MLPerf "
                                 "Mobile's rule).")

    def validate(self) -> "BenchOptions":
        if not self.artifacts:
            raise BBDeployError("no artifact given; pass one or more files written by `bbdeploy export`")
        for flag, value, low in (("--threads", self.threads, 1), ("--warmup", self.warmup, 0), ("--runs", self.runs, 1)):
            if value < low:
                raise BBDeployError(f"{flag} {value} must be at least {low}")
        if not self.min_time >= 0:
            raise BBDeployError(f"--min-time {self.min_time} must be a number of seconds >= 0")
        if not self.timeout > 0:
            raise BBDeployError(f"--timeout {self.timeout} must be a number of seconds > 0")
        check_exec_precision(self.exec_precision)
        for flag, value in (("--cooldown", self.cooldown), ("--max-temp", self.max_temp), ("--sustained", self.sustained)):
            if value is not None and not value > 0:
                raise BBDeployError(f"{flag} {value} must be a number > 0")
        if self.cpus is not None:
            check_cpus(self.cpus)
        if self.profile is not None:
            if self.profile not in PROFILES:
                raise BBDeployError(f"unknown --profile {self.profile!r}; pass one of {', '.join(PROFILES)}")
            runs, seconds = PROFILES[self.profile]
            self.runs, self.min_time = max(self.runs, runs), max(self.min_time, seconds)
        return self


PROFILES = {"mlperf": (1024, 60.0)}  # name -> (at least this many runs, at least this many seconds)


def check_cpus(text: str) -> list[int]:
    """`--cpus` as the kernel lists cores (2,3 or 0-3): one line when it is not that."""
    try:
        cpus = cpu_list(text)
    except ValueError:
        cpus = None
    if not cpus or any(cpu < 0 for cpu in cpus):
        raise BBDeployError(f"--cpus {text!r} is not a list of cores; pass e.g. 2,3 or 0-3")
    return cpus


def check_exec_precision(value: str) -> str:
    """`--exec-precision` as drift and bench take it: one line naming the choices when unknown."""
    if value not in EXEC_PRECISION_CHOICES:
        raise BBDeployError(f"unknown --exec-precision {value!r}; pass one of {', '.join(EXEC_PRECISION_CHOICES)}")
    return value


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    position = (len(sorted_values) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_summary(times_ns: list[int]) -> dict:
    """mean, std, min, p50, p90, p99 in milliseconds."""
    values = sorted(t / 1e6 for t in times_ns)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std, "min": values[0], "p50": percentile(values, 50),
            "p90": percentile(values, 90), "p99": percentile(values, 99)}


def artifact_entry(path: Path) -> dict:
    """What the result row says of an artifact, from its manifest."""
    manifest = read_manifest(path)
    return {"artifact": str(path), "target": manifest["target"], "precision": manifest["precision"],
            "backbone": manifest["backbone"]["name"], "width": manifest["backbone"].get("width"),
            "layout": manifest["config"]["layout"], "batch": manifest["config"]["batch"],
            "input_size": manifest["config"]["input_size"], "intact": files_intact(manifest, path.parent),
            "size_bytes": sum(f["bytes"] for f in manifest["files"]), "files": [path.parent / f["path"] for f in
                                                                                manifest["files"]]}


def result_row(entry: dict, measured: dict, cpus: list[int] | None = None, profile: str | None = None) -> dict:
    # the runner returns every time; benchmark_model (adb) only its own summary, without percentiles
    latency = measured["summary_ms"] if "summary_ms" in measured else latency_summary(measured["times_ns"])
    return BenchRow(status="measured", error=None, **_identity(entry), exec_precision=measured["exec_precision"],
                    threads=measured["threads"], runs=measured["runs"], warmup=measured["warmup"],
                    batch=entry["batch"], latency_ms=latency, throughput_per_s=1000 * entry["batch"] / latency["mean"],
                    peak_rss_bytes=measured["peak_rss_bytes"], load_rss_bytes=measured["load_rss_bytes"],
                    device_file_bytes=measured.get("file_bytes"), runtime=measured["runtime"],
                    runtime_version=measured["runtime_version"], xnnpack=measured.get("xnnpack"), cpus=cpus,
                    profile=profile, state_before=measured.get("state_before"), state_after=measured.get("state_after"),
                    cooldown=measured.get("cooldown"),
                    sustained=sustained_summary(measured["times_ns"], measured["starts_ns"])
                    if "starts_ns" in measured else None).to_json()


def sustained_summary(times_ns: list[int], starts_ns: list[int]) -> dict:
    """p50/p90 of the first and of the last window (a minute; a third of a shorter run) and the
    least-squares slope of latency over time (ms per minute): how far a sustained load drifts."""
    span_s = (starts_ns[-1] + times_ns[-1]) / 1e9
    window = min(SUSTAINED_WINDOW_S, span_s / 3)
    minutes = [start / 60e9 for start in starts_ns]
    ms = [t / 1e6 for t in times_ns]

    def summary(selected: list[float]) -> dict:
        values = sorted(selected)
        return {"runs": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90)}

    first = summary([v for v, s in zip(ms, starts_ns) if s / 1e9 < window])
    last = summary([v for v, s in zip(ms, starts_ns) if s / 1e9 >= span_s - window])
    mean_t, mean_v = sum(minutes) / len(minutes), sum(ms) / len(ms)
    spread = sum((t - mean_t) ** 2 for t in minutes)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(minutes, ms)) / spread if spread else 0.0
    return {"seconds": span_s, "window_s": window, "first": first, "last": last, "slope_ms_per_min": slope,
            "last_over_first_p50": last["p50"] / first["p50"]}


def failed_row(entry: dict, error: str) -> dict:
    return failed(BenchRow, error, **_identity(entry))


def _identity(entry: dict) -> dict:
    """What a bench row says of its artifact, measured or not."""
    return {key: entry[key] for key in ("artifact", "target", "precision", "backbone", "size_bytes")}


def _sibling_key(entry: dict) -> tuple:
    """What an int8 artifact and its fp32 sibling share: the same network, input and target."""
    return (entry["backbone"], entry["width"], entry["target"], entry["input_size"], entry["batch"], entry["layout"])


EMULATED_WARNING = ("emulated device: the numbers are the ARM runtime's, the latency is qemu's (20-450x slower than "
                    "the board) and is never used for a speed-up or a recommendation; time it on the real board")


def add_warnings(rows: list[dict], entries: list[dict]) -> None:
    """The warnings users need: int8 no faster than its fp32 sibling measured in the same run,
    XNNPACK not applied to a TFLite model, a noisy device; on an emulated device only that its
    latency means nothing. Failed rows get none."""
    measured = [(entry, row) for entry, row in zip(entries, rows) if row.get("status", "measured") == "measured"]
    for _, row in measured:
        if row.get("device", {}).get("emulated"):
            row["warnings"].append(EMULATED_WARNING)
    measured = [(entry, row) for entry, row in measured if not row.get("device", {}).get("emulated")]
    fp32 = {_sibling_key(e): row for e, row in measured if e["precision"] == "fp32"}
    for entry, row in measured:
        latency = row["latency_ms"]
        sibling = fp32.get(_sibling_key(entry))
        if entry["precision"] == "int8" and sibling is not None:
            statistic = "p50" if latency["p50"] is not None else "mean"
            ratio = latency[statistic] / sibling["latency_ms"][statistic]
            if ratio >= 1.0:
                row["warnings"].append(f"int8 is not faster than fp32 here ({statistic} {ratio:.2f}x of "
                                       f"{Path(sibling['artifact']).name})")
        if row["xnnpack"] is not None and not row["xnnpack"]["applied"]:  # set by runtimes that use XNNPACK
            row["warnings"].append("the XNNPACK delegate was not applied: the reference CPU kernels are slow")
        if row["xnnpack"] is not None and row["xnnpack"].get("undelegated_convolutions"):
            row["warnings"].append(f"{row['xnnpack']['undelegated_convolutions']} convolutions run outside XNNPACK, on "
                                   "the runtime's reference kernels: slow")
        if row.get("state_before") is not None and row.get("state_after") is not None:
            row["warnings"].extend(state_notes(row["state_before"], row["state_after"]))
        row["warnings"].extend(affinity_notes(row))
        if row.get("cooldown") is not None and row["cooldown"]["reason"]:
            row["warnings"].append(f"cooldown: {row['cooldown']['reason']}")
        if latency["p50"] is not None and latency["p99"] > NOISY_SPREAD * latency["p50"]:
            row["warnings"].append(f"noisy device: p99/p50 = {latency['p99'] / latency['p50']:.2f} "
                                   f"(> {NOISY_SPREAD}); close other load, check cooling, add --min-time")


def affinity_notes(row: dict) -> list[str]:
    """--cpus: where the runtime's threads may run after it loaded, if that strays from the request."""
    allowed = (row.get("state_after") or {}).get("affinity")
    if row.get("cpus") is None or allowed is None or set(allowed) <= set(row["cpus"]):
        return []
    return [f"pinned to cpus {row['cpus']} but the runtime's threads may run on {allowed}"]


def bench(options: BenchOptions, progress=None) -> dict:
    """Benchmark every artifact on the device: {"device": {...}, "results": [...]}, one row per
    artifact, a failed one included (status "failed" and its error), in the order given, each with the
    device it ran on. `progress(step, done, total)` hears of a first-use device preparation."""
    from .devices import open_device, where_measured

    options.validate()
    entries = []
    for path in options.artifacts:
        path = Path(path).expanduser()
        if not path.is_file():
            raise BBDeployError(f"artifact {str(path)!r} does not exist; pass a file written by `bbdeploy export`")
        entries.append(artifact_entry(path))
    device = open_device(options, progress)
    for entry in entries:
        device.check(entry)  # e.g. adb takes TFLite only: refused before anything runs
    rows: list[dict | None] = [None] * len(entries)
    for index, entry in enumerate(entries):
        if not entry["intact"]:
            rows[index] = failed_row(entry, "the file differs from what its manifest recorded (sha256); export it again")
    runnable = [index for index, row in enumerate(rows) if row is None]
    facts = None
    cpus = check_cpus(options.cpus) if options.cpus is not None else None
    if runnable:
        outcomes, facts = device.run([entries[i] for i in runnable], options, step=progress)
        for index, outcome in zip(runnable, outcomes):
            entry = entries[index]
            rows[index] = result_row(entry, outcome["result"], cpus, options.profile) if "result" in outcome else failed_row(
                entry, outcome["error"])
    for row in rows:
        row["device"] = where_measured(options.device, facts)
    add_warnings(rows, entries)
    return {"device": {"name": options.device, **(facts or {})}, "results": rows}
