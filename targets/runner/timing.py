"""The timing loop: several artifacts in one process (interleaved, or one after another around a
cool-down wait or for a sustained run), the device's state around it, and this process's memory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from . import artifact
from .device_state import Source, hottest_c, read_state
from .errors import one_line


ROUNDS = 10  # timed runs are spread over at least this many rounds of A, B, C, A, B, C, ...
COOLDOWN_LIMIT_S = 300.0  # --max-temp without --cooldown: the longest wait before one artifact
POLL_S = 1.0  # how often a cooling device is read


def measure(paths: list[str | Path], *, threads: int = 1, warmup: int = 10, runs: int = 50, min_time: float = 1.0,
            exec_precision: str | None = None, seed: int = 0, sustained: float | None = None,
            cooldown: float | None = None, max_temp: float | None = None, cpus: list[int] | None = None,
            step=None, source: Source | None = None) -> list[dict]:
    """Latency of several artifacts in one process. After `warmup` untimed runs each, rounds of a few
    timed runs of every artifact in turn, until each has both `runs` runs and `min_time` seconds:
    interleaved, artifacts share the device's state (load, heat, frequency) alike, so "int8 is not
    faster" compares like with like. With `cooldown`/`max_temp` (a wait before each artifact) or
    `sustained` (each runs that many seconds, its time stamps kept) the artifacts run one after
    another instead. Times are `perf_counter_ns` around the runtime call alone, on an input of the
    artifact's own dtype and shape (quantized with its scale and zero point). Every result carries
    the device's state before and after its timed runs (`device_state.read_state`). One entry per
    path: {"result": {...}} or {"error": "...", ["module": missing runtime]}; an artifact that
    cannot load or run does not stop the others. `step(label, done, total)` hears of a wait."""
    source = source or Source()
    started_at = hottest_c(read_state(source, cpus, own_process=False))  # before any load heats the device
    outcomes, active = _load(paths, threads, warmup, exec_precision, seed)
    block = max(1, -(-runs // ROUNDS))
    if sustained is None and cooldown is None and max_temp is None:
        before = read_state(source, cpus)
        _time_rounds(active, outcomes, block, runs, min_time)
        after = read_state(source, cpus)
        for index, _, _ in active:
            _add_state(outcomes[index], before, after)
    else:
        target = max_temp if max_temp is not None else started_at
        limit = cooldown if cooldown is not None else COOLDOWN_LIMIT_S
        for entry in active:
            waited = None
            if cooldown is not None or max_temp is not None:
                waited = cool_down(lambda: hottest_c(read_state(source, cpus, own_process=False)), target, limit, step)
            before = read_state(source, cpus)
            _time_rounds([entry], outcomes, block, runs, min_time, sustained)
            after = read_state(source, cpus)
            _add_state(outcomes[entry[0]], before, after, cooldown=waited)
    for outcome in outcomes:
        if "result" in outcome:
            outcome["result"]["runs"] = len(outcome["result"]["times_ns"])
    return outcomes


def _load(paths, threads, warmup, exec_precision, seed) -> tuple[list[dict], list[tuple]]:
    """Every artifact loaded and warmed up: (outcomes, [(index, runner, sample)] of those that run)."""
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
    return outcomes, active


def _time_rounds(active: list[tuple], outcomes: list[dict], block: int, runs: int, min_time: float,
                 sustained: float | None = None) -> None:
    """Rounds of `block` timed runs of each artifact in turn until each has `runs` runs and
    `min_time` seconds of them (`sustained`: and that many seconds of wall time, each run's start kept)."""
    active = list(active)
    min_ns = int(min_time * 1e9)
    begin = time.perf_counter_ns()
    if sustained is not None:
        for index, _, _ in active:
            outcomes[index]["result"]["starts_ns"] = []

    def wanting(index: int) -> bool:  # fewer runs than asked, or less timed time
        times_ns = outcomes[index]["result"]["times_ns"]
        if sustained is not None and time.perf_counter_ns() - begin < sustained * 1e9:
            return True
        return len(times_ns) < runs or sum(times_ns) < min_ns

    while active and any(wanting(index) for index, _, _ in active):
        for entry in list(active):
            index, runner, sample = entry
            result = outcomes[index]["result"]
            times_ns, starts_ns = result["times_ns"], result.get("starts_ns")
            try:
                for _ in range(block):
                    start = time.perf_counter_ns()
                    runner._invoke(sample)
                    times_ns.append(time.perf_counter_ns() - start)
                    if starts_ns is not None:
                        starts_ns.append(start - begin)
            except Exception as exc:
                outcomes[index] = {"error": one_line(exc)}
                active.remove(entry)


def _add_state(outcome: dict, before: dict, after: dict, *, cooldown: dict | None = None) -> None:
    if "result" in outcome:
        outcome["result"].update(state_before=before, state_after=after, cooldown=cooldown)


def cool_down(hottest, target_c: float | None, limit_s: float, step=None) -> dict:
    """Wait (at most `limit_s`) until `hottest()`, the hottest thermal zone's °C, is at or under
    `target_c`; what the wait was. A device without a temperature sensor is not waited for, and says so."""
    now = hottest()
    record = {"target_c": target_c, "limit_s": limit_s, "start_c": now, "end_c": now, "waited_s": 0.0,
              "reached": None, "reason": None}
    if now is None or target_c is None:
        record["reason"] = "no temperature sensor on this device: not waited"
        return record
    begin = time.monotonic()
    while now > target_c and time.monotonic() - begin < limit_s:
        if step is not None:
            step(f"cooling: {now:.1f} °C, waiting for {target_c:.1f} °C", int(time.monotonic() - begin), int(limit_s))
        time.sleep(POLL_S)
        now = hottest()
        if now is None:
            break
    record.update(end_c=now, waited_s=round(time.monotonic() - begin, 2),
                  reached=now is not None and now <= target_c)
    if not record["reached"]:
        record["reason"] = f"still {now} °C after {limit_s:g} s"
    return record


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
