"""Where the jobs of `bbdeploy run` execute: worker processes on this machine, or a Ray cluster.

Both give back `concurrent.futures.Future`s, so the driver (run.py) is the same for both. What
differs is who keeps two benchmarks off one device: here, the driver (it submits one bench job per
device at a time); on Ray, Ray itself, through a custom resource `device:NAME` of capacity 1 that
every bench job on that device asks for, so the guarantee holds across every client of the cluster.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
from concurrent.futures import Future, ProcessPoolExecutor

from bbdeploy.errors import BBDeployError

EXECUTORS = ("local", "ray")


def keep_local_ray_to_itself() -> None:
    """Before bbdeploy starts a Ray instance of its own (the processes Ray starts inherit this process's
    environment): an authentication token of this run instead of the one Ray would generate and save
    in `~/.ray/auth_token`, and usage statistics off (Ray's own switch); a token or setting the user
    exported is kept. Ray binds the instance to this machine's own address (it refuses loopback). Its
    dashboard process still probes cloud metadata endpoints when it starts (169.254.169.254,
    metadata.google.internal: Ray 2.60 does that before it reads the switch), which no Ray setting
    stops: see README "What bbdeploy never does"."""
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def device_resource(name: str) -> str:
    return f"device:{name}"


class InlineExecutor:
    """`--jobs 1`: each job runs in this process when submitted (no worker to start and import torch
    again: a fully cached run is then about the time of reading its results)."""

    serializes_devices = False

    def submit(self, function, job, device: str | None = None) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(job))
        except BaseException as error:  # noqa: BLE001 - the driver turns it into failed rows
            future.set_exception(error)
        return future

    def close(self) -> None:
        pass


class LocalExecutor:
    """`jobs` worker processes (spawned: no torch or converter state is inherited from the driver)."""

    serializes_devices = False  # the driver must not submit two bench jobs of one device at once

    def __init__(self, jobs: int):
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, function, job, device: str | None = None) -> Future:
        return self._pool.submit(function, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Jobs as Ray tasks. Without `address`, starts a Ray instance on this machine whose resources
    include one `device:NAME` per device; with one, joins that cluster, which must declare them
    (`ray start --resources='{"device:pi5-a": 1}'` on the node that reaches the board)."""

    serializes_devices = True

    def __init__(self, address: str | None, devices: list[str], jobs: int):
        try:
            import ray
        except ImportError:
            raise BBDeployError("--executor ray needs Ray; install bbdeploy[ray] (pip install 'bbdeploy[ray]')") from None
        self._ray = ray
        resources = {device_resource(name): 1 for name in devices}
        try:
            if address is None:
                keep_local_ray_to_itself()
                ray.init(num_cpus=jobs, resources=resources, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as error:  # noqa: BLE001 - Ray's own message says what it could not reach
            raise BBDeployError(f"could not start or join Ray ({type(error).__name__}: "
                                f"{str(error).splitlines()[0][:200]}); pass --address HOST:PORT of a running "
                                "cluster, or none to start one here") from None
        available = ray.cluster_resources()
        self.missing_devices = [name for name in devices if available.get(device_resource(name), 0) < 1]

    def submit(self, function, job, device: str | None = None) -> Future:
        """A bench job holds its device (and no CPU slot: the device does the work); the others hold
        one CPU each."""
        if device is None:
            options = {"num_cpus": 1}
        else:
            options = {"num_cpus": 0, "resources": {device_resource(device): 1}}
        task = self._ray.remote(function).options(max_retries=0, **options)
        return task.remote(job).future()

    def close(self) -> None:
        self._ray.shutdown()
