"""`drift --layers`: where the error enters, layer by layer, as the artifact's own runtime computes it.

For each conv/linear layer the runtime's tensors at the layer's input and output (its target's probe
plan, exporters/probes.py) are compared with the float model's at the same points (layer_points.py) on
the same images: `sqnr_db` and `cosine` of what the layer writes, and `delta_db`, the SQNR it loses
against what it reads (the error it adds, not the error it inherits). The layer that loses the most is
`worst`. The last layer's output is the artifact's output: its SQNR must agree with the logits' SQNR of
the unprobed artifact on the same images (CHECK_TOLERANCE_DB), or the two views disagree and the
result says so as a failure.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bbdeploy.exporters.probes import LayerProbe
from bbdeploy.exporters.registry import TARGETS, layer_prober
from bbdeploy.fidelity import cosine_from_sums, sqnr_db
from bbdeploy.stages.layer_points import float_points, layer_names, probe_model
from bbdeploy.targets.runner import load as load_runner
from bbdeploy.targets.runner.evaluate import normalize, probes_batched, run_batched

LAYER_BATCH = 4  # images per step: the float and runtime tensors of one step are all that is held
CHECK_TOLERANCE_DB = 0.5  # last layer's output against the artifact's output figure
EXACT_DB = 150.0  # an exact tensor counts as this for delta_db (float32 resolves about 144 dB)


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
            self.mismatch = f"the runtime's tensor has {candidate.shape[1]} values per image, the float one {reference.shape[1]}"
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


def layer_diff(artifact, reference: torch.nn.Module, crops: np.ndarray, exec_precision: str | None) -> dict:
    """The per-layer figures of one artifact on `crops` (uint8 N x H x W x 3, the network's input).

    Returns {"layers": [...], "worst": name | None, "check": {...}}; `check["error"]` is set where the
    last layer's figure and the output's disagree, or where no layer could be matched."""
    manifest = artifact.manifest
    model = probe_model(reference)
    layers = layer_names(model)
    target = TARGETS[manifest["target"]]
    layout, batch = manifest["input"]["layout"].lower(), manifest["config"]["batch"]
    inputs = normalize(crops, manifest["preprocess"]["mean"], manifest["preprocess"]["std"])
    with tempfile.TemporaryDirectory(prefix="bbdeploy-layers-") as folder:
        plan = layer_prober(target).layer_probes(artifact.path, layers, Path(folder))
        probed = load_runner(plan.file, exec_precision=exec_precision, probes=[p.name for p in plan.probes])
        plain = load_runner(artifact.path, exec_precision=exec_precision)
        figures = {(row.layer, role): _Closeness() for row in plan.layers for role in ("input", "output")}
        output = _Closeness()
        for start in range(0, len(inputs), LAYER_BATCH):
            images = inputs[start:start + LAYER_BATCH]
            floats, float_logits = float_points(model, images, layers)
            raw = probes_batched(probed, images, layout, batch)
            compared = {}  # (probe, float tensor) -> its figures: a layer's output is the next one's input
            for row in plan.layers:
                for role, index in (("input", row.input), ("output", row.output)):
                    if index is not None and row.layer in floats:
                        tensor = floats[row.layer][0 if role == "input" else 1]
                        key = (index, tensor.__array_interface__["data"][0], tensor.shape)
                        if key not in compared:
                            compared[key] = _Closeness()
                            compared[key].add(tensor, plan.probes[index].to_float(raw[index]))
                        figures[(row.layer, role)].merge(compared[key])
            output.add(float_logits, run_batched(plain, images, layout, batch).reshape(len(images), -1))
    rows = [_row(row, figures) for row in plan.layers]
    return {"samples": int(len(crops)), "layers": rows, "worst": _worst(rows),
            "check": _check(rows, output)}


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
