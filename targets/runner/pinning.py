"""Pinning the runner to some cores (`bench --cpus 2,3`), as `taskset -a` would: the affinity of every
thread of the process is set before any runtime starts its own threads, which inherit it."""

from __future__ import annotations

import os

from .device_state import Source, cpu_list

STEP = "bbdeploy-step"  # `bbdeploy-step DONE TOTAL LABEL` on stderr: a wait the host shows (cooling)


def _threads() -> list[int]:
    try:
        return [int(task) for task in os.listdir("/proc/self/task")]
    except OSError:
        return [0]  # this thread; its later threads inherit the mask


class PinningRefused(Exception):
    """This device cannot run on the cores asked for."""


def pin(cpus: list[int]) -> None:
    online = cpu_list(Source().read("/sys/devices/system/cpu/online"))
    if online is not None and not set(cpus) <= set(online):
        raise PinningRefused(f"cannot pin to cpus {','.join(map(str, cpus))}: this device's online cpus are "
                             f"{','.join(map(str, online))}")
    if not hasattr(os, "sched_setaffinity"):
        raise PinningRefused("cannot pin to cpus here: this platform has no sched_setaffinity (Linux only)")
    try:  # every thread there is (numpy's BLAS pool starts at import), as `taskset -a` does
        for thread in _threads():
            os.sched_setaffinity(thread, cpus)
    except OSError as exc:
        raise PinningRefused(f"cannot pin to cpus {','.join(map(str, cpus))}: {exc.strerror}") from None
