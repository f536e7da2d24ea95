"""The timing loop: several artifacts in one process, interleaved, and this process's memory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from . import artifact
from .errors import one_line


ROUNDS = 10  # timed runs are spread over at least this many rounds of A, B, C, A, B, C, ...


def measure(paths: list[str | Path], *, threads: int = 1, warmup: int = 10, runs: int = 50, min_time: float = 1.0,
            exec_precision: str | None = None, seed: int = 0) -> list[dict]:
    """Latency of several artifacts in one process, interleaved: after `warmup` untimed runs each,
    rounds of a few timed runs of every artifact in turn, until each has both `runs` runs and
    `min_time` seconds. Artifacts then share the device's state (load, heat, frequency) alike, so
    "int8 is not faster" compares like with like. Times are `perf_counter_ns` around the runtime
    call alone, on an input of the artifact's own dtype and shape (quantized with its scale and zero
    point). One entry per path: {"result": {...}} or {"error": "...", ["module": missing runtime]};
    an artifact that cannot load or run does not stop the others."""
    outcomes: list[dict] = [{} for _ in paths]
    active = []
    for index, path in enumerate(paths):
        before = current_rss_bytes()
        started = time.perf_counter()
        try:
            runner = artifact.load(path, threads, exec_precision)
            load_s = time.perf_counter() - started
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in runner.input.shape]
            sample = runner._to_input(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
            for _ in range(warmup):
                runner._invoke(sample)
        except ImportError as exc:
            outcomes[index] = {"error": f"no runtime module {exc.name or exc}", "module": exc.name or str(exc)}
            continue
        except Exception as exc:  # an artifact its runtime refuses: this row fails, the others run
            outcomes[index] = {"error": one_line(exc)}
            continue
        after = current_rss_bytes()
        outcomes[index] = {"result": {
            "runtime": runner.runtime, "runtime_version": runner.runtime_version,
            "exec_precision": runner.exec_precision, "threads": threads, "warmup": warmup, "load_s": load_s,
            "times_ns": [], "input": runner.input.as_dict(), "xnnpack": runner.xnnpack,
            "load_rss_bytes": None if before is None or after is None else after - before,
            "file_bytes": os.path.getsize(path)}}
        active.append((index, runner, sample))
    block = max(1, -(-runs // ROUNDS))
    min_ns = int(min_time * 1e9)

    def wanting(index: int) -> bool:  # fewer runs than asked, or less timed time
        times_ns = outcomes[index]["result"]["times_ns"]
        return len(times_ns) < runs or sum(times_ns) < min_ns

    while active and any(wanting(index) for index, _, _ in active):
        for entry in list(active):
            index, runner, sample = entry
            times_ns = outcomes[index]["result"]["times_ns"]
            try:
                for _ in range(block):
                    begin = time.perf_counter_ns()
                    runner._invoke(sample)
                    times_ns.append(time.perf_counter_ns() - begin)
            except Exception as exc:
                outcomes[index] = {"error": one_line(exc)}
                active.remove(entry)
    for outcome in outcomes:
        if "result" in outcome:
            outcome["result"]["runs"] = len(outcome["result"]["times_ns"])
    return outcomes


def current_rss_bytes() -> int | None:
    """Resident memory of this process now (Linux), to attribute the growth to each artifact."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process (Linux reports kilobytes, macOS bytes)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
