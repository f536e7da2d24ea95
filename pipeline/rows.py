"""What the stages answer per artifact: export, bench and drift rows, and the outcome of one artifact in
a job of `bbdeploy run`, each a dataclass with one `to_json` (the JSON the commands print and the
report reads). A failure is made by one constructor, `failed(Kind, error, **known)`: a failed row of
any kind has every key its kind has (None where nothing was measured) and its one-line reason in
`error`, so no reader meets a missing key, and a failure is never a row with figures in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar


@dataclass
class Row:
    status: str  # export: exported | cached | failed; bench: measured | failed; drift: ok | failed
    error: str | None  # one line: what went wrong and what to do

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ArtifactRow(Row):
    """A row about one artifact (export: None where nothing was converted)."""

    artifact: str | None = None
    target: str | None = None
    precision: str | None = None


# what an export row repeats of its manifest (None each where nothing was converted)
FROM_MANIFEST = ("input", "output", "preprocess", "parity", "ops", "timings")


@dataclass
class ExportRow(ArtifactRow):
    manifest: str | None = None  # its path
    bytes: int | None = None  # of all its files
    described: dict = field(default_factory=dict)  # the manifest's FROM_MANIFEST entries

    def to_json(self) -> dict:
        """The manifest's entries at the top level, as export has always printed them."""
        row = dataclasses.asdict(self)
        described = row.pop("described")
        return {**row, **{key: described.get(key) for key in FROM_MANIFEST}}


@dataclass
class BenchRow(ArtifactRow):
    backbone: str | None = None
    exec_precision: str | None = None
    threads: int | None = None
    runs: int | None = None
    warmup: int | None = None
    batch: int | None = None
    latency_ms: dict | None = None  # mean, std, min, p50, p90, p99
    throughput_per_s: float | None = None
    size_bytes: int | None = None
    peak_rss_bytes: int | None = None
    load_rss_bytes: int | None = None  # resident growth over the load; 0 where it reused freed pages
    device_file_bytes: int | None = None  # the size of the file the device ran
    runtime: str | None = None
    runtime_version: str | None = None
    xnnpack: dict | None = None  # runtimes that hand the graph to XNNPACK: whether it took it
    cpus: list[int] | None = None  # the cores it was pinned to (--cpus); None: not pinned
    profile: str | None = None  # --profile (mlperf: p90 is the headline statistic)
    state_before: dict | None = None  # the device's state before and after the timed runs (runner/device_state.py)
    state_after: dict | None = None
    cooldown: dict | None = None  # the wait before it (--cooldown / --max-temp)
    sustained: dict | None = None  # --sustained: the first and the last window, the slope
    warnings: list[str] = field(default_factory=list)


@dataclass
class DriftRow(ArtifactRow):
    backbone: str | None = None
    reference_accuracy_top1: float | None = None
    figures: dict = field(default_factory=dict)  # the comparison with the float model (drift's metrics)
    runtime: dict = field(default_factory=dict)  # what ran it: runtime, version, exec precision
    device: dict | None = None  # where it ran, as the device reported it

    def to_json(self) -> dict:
        """The figures and the runtime's keys at the top level, as drift has always printed them."""
        row = dataclasses.asdict(self)
        return {**{k: v for k, v in row.items() if k not in ("figures", "runtime", "device")},
                **row["figures"], **row["runtime"], "device": row["device"]}


@dataclass
class Outcome(Row):
    """One artifact's outcome in a drift or bench job of `bbdeploy run` (ran | cached | failed |
    unsupported); a result that ran is the stage's own JSON, kept beside it by the job."""


RowKind = TypeVar("RowKind", bound=Row)


def failed(kind: type[RowKind], error: str, **known) -> dict:
    """The failed row of `kind`: the reason, what is known of the artifact, None for the rest."""
    return kind(status="failed", error=error, **known).to_json()
