"""`drift --layers`: where the error enters, layer by layer, as the artifact's own runtime computes it.

For each conv/linear layer the runtime's tensors at the layer's input and output (its target's probe
plan, exporters/probes.py) are compared with the float model's at the same points (layer_points.py) on
the same images: `sqnr_db` and `cosine` of what the layer writes, and `delta_db`, the SQNR it loses
against what it reads (the error it adds, not the error it inherits). The layer that loses the most is
`worst`. The last layer's output is the artifact's output: its SQNR must agree with the logits' SQNR of
the unprobed artifact on the same images (CHECK_TOLERANCE_DB), or the two views disagree and the
result says so as a failure.

The probe plans and probed copies are made here; the probed artifact runs where drift runs its
artifacts (this process, or the device of --device), which sends back each tensor at the same
PROBE_POSITIONS positions per image the float side takes (targets/runner/evaluate.py): a few KB per
image and tensor however large the feature map, and the same figures on the host and on a board.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bbdeploy.exporters.probes import LayerProbe, ProbePlan
from bbdeploy.exporters.registry import TARGETS, layer_prober
from bbdeploy.fidelity import cosine_from_sums, sqnr_db
from bbdeploy.stages.layer_points import float_points, layer_names, probe_model
from bbdeploy.targets.runner import load as load_runner
from bbdeploy.targets.runner.errors import one_line
from bbdeploy.targets.runner.evaluate import sample_positions, sampled_probes

LAYER_BATCH = 4  # images per step of the float side: its tensors of one step are all that is held
CHECK_TOLERANCE_DB = 0.5  # last layer's output against the artifact's output figure
EXACT_DB = 150.0  # an exact tensor counts as this for delta_db (float32 resolves about 144 dB)


@dataclass
class ProbedArtifact:
    """An artifact with its probe plan, and the float model (deploy form) whose layers it names."""

    artifact: object  # stages.drift.Artifact
    model: torch.nn.Module
    layers: list[str]
    plan: ProbePlan

    @property
    def job_probes(self) -> list[dict]:
        return [probe.as_job() for probe in self.plan.probes]

    @property
    def files(self) -> list[Path]:
        """What the runner loads for the probes: the probed copy, or the artifact's own files."""
        if self.plan.file == self.artifact.path:
            return [self.artifact.path.parent / entry["path"] for entry in self.artifact.manifest["files"]]
        return [self.plan.file]


class ProbedArtifacts:
    """The probe plan of every artifact of a drift (an error line where one cannot be made), its probed
    copies in a temp folder that `close` removes."""

    def __init__(self, artifacts: list, references: dict, samples: int):
        self._folder = tempfile.TemporaryDirectory(prefix="bbdeploy-layers-")
        self.samples = samples  # the first images of the data
        self.items: list[ProbedArtifact | str] = []
        for index, artifact in enumerate(artifacts):
            folder = Path(self._folder.name) / str(index)
            folder.mkdir()
            try:
                self.items.append(probe_artifact(artifact, references[artifact.reference_key], folder))
            except Exception as exc:  # a graph the probes cannot handle: this artifact says so
                self.items.append(f"its layers could not be probed: {one_line(exc)}")

    def close(self) -> None:
        self._folder.cleanup()


def probe_artifact(artifact, reference: torch.nn.Module, folder: Path) -> ProbedArtifact:
    model = probe_model(reference)
    layers = layer_names(model)
    plan = layer_prober(TARGETS[artifact.manifest["target"]]).layer_probes(artifact.path, layers, folder)
    return ProbedArtifact(artifact, model, layers, plan)


def run_probes_here(probed: ProbedArtifact, inputs: np.ndarray, exec_precision: str | None) -> list[tuple]:
    """The probed artifact run in this process: (values per image, sampled values) of each probe."""
    manifest = probed.artifact.manifest
    runner = load_runner(probed.plan.file, exec_precision=exec_precision, probes=[p.name for p in probed.plan.probes])
    return sampled_probes(runner, inputs, manifest["input"]["layout"].lower(), manifest["config"]["batch"],
                          probed.job_probes)


@dataclass
class _Closeness:
    """Running sums of one tensor against its float counterpart."""

    signal: float = 0.0
    noise: float = 0.0
    cosines: list = field(default_factory=list)
    nonfinite: int = 0
    mismatch: str | None = None

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        if reference.shape != candidate.shape:
            self.mismatched(candidate.shape[1], reference.shape[1])
            return
        finite = np.isfinite(candidate)
        self.nonfinite += int(candidate.size - np.count_nonzero(finite))
        if self.nonfinite:
            return
        # float32 tensors, float64 sums (one dot product per sample each)
        error = reference - candidate
        signal = np.einsum("ij,ij->i", reference, reference, dtype=np.float64)
        self.signal += float(signal.sum())
        self.noise += float(np.einsum("ij,ij->i", error, error, dtype=np.float64).sum())
        dot = np.einsum("ij,ij->i", reference, candidate, dtype=np.float64)
        power = np.einsum("ij,ij->i", candidate, candidate, dtype=np.float64)
        self.cosines.append(cosine_from_sums(dot, signal, power))

    def mismatched(self, runtime_values: int, float_values: int) -> None:
        self.mismatch = f"the runtime's tensor has {runtime_values} values per image, the float one {float_values}"

    def merge(self, other: "_Closeness") -> None:
        self.signal += other.signal
        self.noise += other.noise
        self.cosines += other.cosines
        self.nonfinite += other.nonfinite
        self.mismatch = self.mismatch or other.mismatch

    @property
    def sqnr_db(self) -> float | None:
        return sqnr_db(self.signal, self.noise)

    @property
    def failure(self) -> str | None:
        if self.mismatch:
            return self.mismatch
        return f"{self.nonfinite} NaN or infinite values" if self.nonfinite else None


def _capped(sqnr: float | None) -> float:
    return EXACT_DB if sqnr is None else min(sqnr, EXACT_DB)


def layer_diff(probed: ProbedArtifact, inputs: np.ndarray, sampled: list[tuple], logits: np.ndarray) -> dict:
    """The per-layer figures of one artifact on `inputs` (float32 NCHW, normalised): `sampled` is what the
    runner sent of each probe on them, `logits` the unprobed artifact's outputs on them.

    Returns {"layers": [...], "worst": name | None, "check": {...}}; `check["error"]` is set where the
    last layer's figure and the output's disagree, or where no layer could be matched."""
    plan = probed.plan
    figures = {(row.layer, role): _Closeness() for row in plan.layers for role in ("input", "output")}
    output = _Closeness()
    for start in range(0, len(inputs), LAYER_BATCH):
        images = inputs[start:start + LAYER_BATCH]
        floats, float_logits = float_points(probed.model, images, probed.layers)
        compared = {}  # (probe, float tensor) -> its figures: a layer's output is the next one's input
        for row in plan.layers:
            for role, index in (("input", row.input), ("output", row.output)):
                if index is not None and row.layer in floats:
                    tensor = floats[row.layer][0 if role == "input" else 1]
                    key = (index, tensor.__array_interface__["data"][0], tensor.shape)
                    if key not in compared:
                        compared[key] = _compare(tensor, plan.probes[index], *sampled[index], start)
                    figures[(row.layer, role)].merge(compared[key])
        output.add(float_logits, logits[start:start + len(images)].reshape(len(images), -1))
    rows = [_row(row, figures) for row in plan.layers]
    return {"samples": int(len(inputs)), "layers": rows, "worst": _worst(rows), "check": _check(rows, output)}


def _compare(tensor: np.ndarray, probe, size: int, values: np.ndarray, start: int) -> "_Closeness":
    """The float tensor of a step against the runtime's at the same sampled positions."""
    closeness = _Closeness()
    if size != tensor.shape[1]:
        closeness.mismatched(size, tensor.shape[1])
        return closeness
    closeness.add(tensor[:, sample_positions(size)], probe.to_float(values[start:start + len(tensor)]))
    return closeness


def _row(probe: LayerProbe, figures: dict) -> dict:
    read, written = figures[(probe.layer, "input")], figures[(probe.layer, "output")]
    note = probe.note or (f"output: {written.failure}" if written.failure else None) or (
        f"input: {read.failure}" if read.failure else None)
    if probe.output is None or not written.cosines or written.failure:
        return {"layer": probe.layer, "fused_with": list(probe.fused_with), "sqnr_db": None, "cosine": None,
                "input_sqnr_db": None, "delta_db": None, "note": note or "no float tensor at this point"}
    input_sqnr = read.sqnr_db if read.cosines and not read.failure else None
    delta = (_capped(input_sqnr) - _capped(written.sqnr_db)) if read.cosines and not read.failure else None
    return {"layer": probe.layer, "fused_with": list(probe.fused_with), "sqnr_db": written.sqnr_db,
            "cosine": float(np.concatenate(written.cosines).mean()), "input_sqnr_db": input_sqnr,
            "delta_db": delta, "note": note}


def _worst(rows: list[dict]) -> str | None:
    """The layer that loses the most SQNR against its input (first in network order on a tie)."""
    ranked = [row for row in rows if row["delta_db"] is not None]
    return max(ranked, key=lambda row: row["delta_db"])["layer"] if ranked else None


def _check(rows: list[dict], output: _Closeness) -> dict:
    """The last layer's output is the artifact's output: the two figures must agree."""
    output_sqnr = output.sqnr_db
    last = rows[-1] if rows else None
    check = {"output_sqnr_db": output_sqnr, "last_layer": last and last["layer"],
             "last_sqnr_db": last and last["sqnr_db"], "tolerance_db": CHECK_TOLERANCE_DB, "error": None}
    if last is None or last["cosine"] is None:
        why = last and last["note"]
        check["error"] = ("the last layer has no tensor in the artifact, so the per-layer view cannot be checked"
                          + (f" ({why})" if why else ""))
    elif abs(_capped(last["sqnr_db"]) - _capped(output_sqnr)) > CHECK_TOLERANCE_DB:
        check["error"] = (f"the last layer's SQNR ({_capped(last['sqnr_db']):.2f} dB) differs from the output's "
                          f"({_capped(output_sqnr):.2f} dB) by more than {CHECK_TOLERANCE_DB} dB: the per-layer view "
                          "does not describe the artifact")
    return check
