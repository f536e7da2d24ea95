"""`drift --device`: the artifacts run on the device's own runtime, the float reference here.

The images are decoded and cropped here once (uint8, the network's input size: never more bytes than
the image itself), written to one file per distinct preprocessing, and sent with the artifacts; the
device normalises and runs them (targets/runner/evaluate.py) and sends back every output, which the drift
stage compares with the reference's on the same crops, exactly as for a local run. With
--layers, each artifact's probed copy runs there too, on the first images of the same file, in the same
session (stages/layer_diff.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bbdeploy.errors import BBDeployError
from bbdeploy.targets.runner.evaluate import decode

from bbdeploy.stages.drift import DECODE_BATCH, Crops, DriftOptions, DriftPlan


def open_drift_device(options: DriftOptions):
    """The device of `--device`, checked to be one that can send outputs back."""
    from bbdeploy.targets.bench import BenchOptions
    from bbdeploy.targets.devices import check_returns_outputs, open_device

    check_returns_outputs(options.device)
    return open_device(BenchOptions(artifacts=[], device=options.device, ssh_options=list(options.ssh_options),
                                    remote_python=options.remote_python, timeout=options.timeout))


class DeviceOutputs:
    """Every artifact's outputs on the device, fetched in one session before the comparison."""

    def __init__(self, plan: DriftPlan, pinned: str | None, progress, probed=None):
        self._folder = tempfile.TemporaryDirectory(prefix="bbdeploy-drift-")
        folder = Path(self._folder.name)
        artifacts, count = plan.artifacts, len(plan.data)
        source = Crops(plan.data, artifacts)
        files = {key: folder / f"images-{index}.npy" for index, key in enumerate(source.preprocess)}
        self.images = {key: np.lib.format.open_memmap(files[key], "w+", np.uint8,
                                                      (count, pre.input_size, pre.input_size, 3))
                       for key, pre in source.preprocess.items()}
        for start in range(0, count, DECODE_BATCH):
            for key, crops in source.batch(start).items():
                self.images[key][start:start + len(crops)] = crops
            progress(min(start + DECODE_BATCH, count), count)
        for images in self.images.values():
            images.flush()
        jobs = [{"artifact": str(a.path), "images": str(files[a.preprocess_key]),
                 "mean": a.manifest["preprocess"]["mean"], "std": a.manifest["preprocess"]["std"],
                 "layout": a.manifest["input"]["layout"].lower(), "batch": a.manifest["config"]["batch"]}
                for a in artifacts]
        entries = [{"artifact": str(a.path), "target": a.manifest["target"],
                    "files": [a.path.parent / f["path"] for f in a.manifest["files"]]} for a in artifacts]
        probe_jobs = _probe_jobs(probed, jobs) if probed is not None else []
        for job, index in probe_jobs:  # a probed copy, or the artifact itself where its runtime adds the outputs
            probed_copy = job["artifact"] != jobs[index]["artifact"]
            entries.append({"artifact": job["artifact"], "target": entries[index]["target"],
                            "files": probed.items[index].files if probed_copy else []})
        settings = {"threads": None, "exec_precision": pinned}
        all_jobs = jobs + [job for job, _ in probe_jobs]
        try:
            outcomes, self.facts = plan.device.evaluate(entries, all_jobs, settings, progress)
        except BBDeployError as error:  # the device as a whole: unreachable, or its runner crashed
            outcomes, self.facts = [{"error": str(error)} for _ in all_jobs], None
        self.outcomes = outcomes[:len(jobs)]
        self.outputs = [[decode(output) for output in o["result"]["outputs"]] if "result" in o else None
                        for o in self.outcomes]
        self.probe_outcomes = {index: outcome for (_, index), outcome in zip(probe_jobs, outcomes[len(jobs):])}

    def crops(self, start: int) -> dict[str, np.ndarray]:
        return {key: np.asarray(images[start:start + DECODE_BATCH]) for key, images in self.images.items()}

    def error(self, index: int) -> str | None:
        return self.outcomes[index].get("error")

    def all_outputs(self, index: int, inputs: np.ndarray, start: int) -> list[np.ndarray]:
        return [output[start:start + len(inputs)] for output in self.outputs[index]]

    def runtime(self, index: int) -> dict:
        result = self.outcomes[index].get("result", {})
        return {key: result.get(key) for key in ("runtime", "runtime_version", "exec_precision", "threads")}

    def probes(self, index: int, probed, inputs: np.ndarray) -> list[tuple]:
        """What the device sent of each probe of artifact `index` (drift --layers), run in the session."""
        outcome = self.probe_outcomes.get(index, {"error": "its probed copy was not run on the device"})
        if "error" in outcome:
            raise BBDeployError(f"its probed copy failed on the device: {outcome['error']}")
        return [(probe["size"], decode(probe["values"])) for probe in outcome["result"]["probes"]]

    def close(self) -> None:
        self.images = {}
        self._folder.cleanup()


def _probe_jobs(probed, jobs: list[dict]) -> list[tuple[dict, int]]:
    """(the runner's job for the probed copy, the index of its artifact) of each artifact with a probe
    plan: its first `probed.samples` images of the artifact's own image file."""
    from bbdeploy.stages.layer_diff import ProbedArtifact

    return [({**jobs[index], "artifact": str(item.plan.file), "count": probed.samples, "probes": item.job_probes}, index)
            for index, item in enumerate(probed.items) if isinstance(item, ProbedArtifact)]
