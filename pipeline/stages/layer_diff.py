"""`drift --layers`: where the error enters, layer by layer, as the artifact's own runtime computes it.

For each conv/linear layer the runtime's tensors at the layer's input and output (its target's probe
plan, exporters/probes.py) are compared with the float model's at the same points (layer_points.py) on
the same images: `sqnr_db` and `cosine` of what the layer writes, and `delta_db`, the SQNR it loses
against what it reads (the error it adds, not the error it inherits). The layer that loses the most is
`worst`. The last layer's output is the artifact's output: its SQNR must agree with the logits' SQNR of
the unprobed artifact on the same images (CHECK_TOLERANCE_DB), or the two views disagree and the
result says so as a failure. A feature-map artifact (`export --features`) is checked map by map, each at
the layer that writes (or, for a map ending in an addition, the layer that next reads) it.

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


def layer_diff(probed: ProbedArtifact, inputs: np.ndarray, sampled: list[tuple], outputs: list[np.ndarray]) -> dict:
    """The per-layer figures of one artifact on `inputs` (float32 NCHW, normalised): `sampled` is what the
    runner sent of each probe on them, `outputs` every output of the unprobed artifact on them.

    Returns {"layers": [...], "worst": name | None, "check": {...}}; `check["error"]` is set where a
    layer's figure and the output it writes disagree, or where no output could be matched."""
    plan = probed.plan
    figures = {(row.layer, role): _Closeness() for row in plan.layers for role in ("input", "output")}
    closeness = [_Closeness() for _ in outputs]  # each output at the positions a probe of its size takes
    sources: dict = {}
    for start in range(0, len(inputs), LAYER_BATCH):
        images = inputs[start:start + LAYER_BATCH]
        floats, float_outputs, sources = float_points(probed.model, images, probed.layers)
        compared = {}  # (probe, float tensor) -> its figures: a layer's output is the next one's input
        for row in plan.layers:
            for role, index in (("input", row.input), ("output", row.output)):
                if index is not None and row.layer in floats:
                    tensor = floats[row.layer][0 if role == "input" else 1]
                    key = (index, tensor.__array_interface__["data"][0], tensor.shape)
                    if key not in compared:
                        compared[key] = _compare(tensor, plan.probes[index], *sampled[index], start)
                    figures[(row.layer, role)].merge(compared[key])
        for output, expected, got in zip(closeness, float_outputs, outputs):
            positions = sample_positions(expected.shape[1])
            output.add(expected[:, positions], got[start:start + len(images)].reshape(len(images), -1)[:, positions])
    rows = [_row(row, figures) for row in plan.layers]
    features = probed.artifact.features
    if features:
        points = [(name, output, *sources.get(index, (None, None)))
                  for index, (name, output) in enumerate(zip(features["names"], closeness))]
    else:
        points = [("the output", closeness[0], rows[-1]["layer"] if rows else None, "output")]
    return {"samples": int(len(inputs)), "layers": rows, "worst": _worst(rows), "check": _check(rows, points)}


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


def _check(rows: list[dict], points: list[tuple]) -> dict:
    """Each output (name, its closeness, the layer whose tensor it is, "output" | "input" of that layer)
    must agree with the layer's figure: the logits with the last layer's output, a feature map with the
    layer that writes or reads it. `last_*` and `output_sqnr_db` are the deepest point checked."""
    by_layer = {row["layer"]: row for row in rows}
    checked, error = [], None
    for name, output, layer, role in points:
        row = by_layer.get(layer)
        seen = row is not None and row["cosine"] is not None and (role == "output" or row["delta_db"] is not None)
        figure = (row["sqnr_db"] if role == "output" else row["input_sqnr_db"]) if seen else None
        checked.append({"output": name, "output_sqnr_db": output.sqnr_db, "layer": layer, "point": role,
                        "layer_sqnr_db": figure, "seen": seen})
        if seen and error is None and abs(_capped(figure) - _capped(output.sqnr_db)) > CHECK_TOLERANCE_DB:
            error = (f"the SQNR at {layer}'s {role} ({_capped(figure):.2f} dB) differs from {name}'s "
                     f"({_capped(output.sqnr_db):.2f} dB) by more than {CHECK_TOLERANCE_DB} dB: the per-layer view "
                     "does not describe the artifact")
    seen = [point for point in checked if point["seen"]]
    if not seen:
        why = next((by_layer[p["layer"]]["note"] for p in checked if p["layer"] in by_layer), None)
        error = ("no output of the artifact is a tensor the per-layer view has (the last layer's, or a layer's that "
                 "writes or reads a feature map), so it cannot be checked" + (f" ({why})" if why else ""))
    last = seen[-1] if seen else checked[-1]
    return {"output_sqnr_db": last["output_sqnr_db"], "last_layer": last["layer"], "last_sqnr_db": last["layer_sqnr_db"],
            "tolerance_db": CHECK_TOLERANCE_DB, "error": error, "points": checked}
