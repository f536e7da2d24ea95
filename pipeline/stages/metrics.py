"""Drift metrics of one artifact against its float reference, accumulated batch by batch.

Only per-sample facts (top-1s, hits, cosine) and running sums are kept, never the logits, so memory
grows by a few bytes per image whatever the number of classes. Intervals are percentile bootstraps
over images (the images are the random part: another draw of data would move the numbers).
"""

from __future__ import annotations

import numpy as np

from bbdeploy.fidelity import cosine_per_sample, sqnr_db

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def top1_top5(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: is `labels` the top-1, is it among the top-5 (fewer classes: all of them)."""
    k = min(5, logits.shape[1])
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return logits.argmax(1) == labels, (top5 == labels[:, None]).any(1)


def no_figures(samples: int, nonfinite: int) -> dict:
    """Every figure of a drift row None (a failed artifact, NaN outputs, or a figure that does not apply)."""
    return {"samples": samples, "nonfinite_outputs": nonfinite, "accuracy_top1": None, "accuracy_top5": None,
            "accuracy_drop": None, "accuracy_drop_ci95": None, "agreement_top1": None, "agreement_top1_ci95": None,
            "agreement_top5": None, "cosine": None, "sqnr_db": None, "max_abs_diff": None}


class DriftAccumulator:
    """Everything `bbdeploy drift` reports for one artifact, fed (reference, artifact) logit batches."""

    def __init__(self):
        self.reference_top1: list[np.ndarray] = []
        self.agree_top1: list[np.ndarray] = []
        self.agree_top5: list[np.ndarray] = []
        self.cosine: list[np.ndarray] = []
        self.reference_hits: list[tuple[np.ndarray, np.ndarray]] = []
        self.artifact_hits: list[tuple[np.ndarray, np.ndarray]] = []
        self.signal = self.noise = 0.0
        self.max_abs_diff = 0.0
        self.nonfinite = 0  # NaN or infinite artifact logits: the row fails, no figure is reported

    def add(self, reference: np.ndarray, artifact: np.ndarray, labels: np.ndarray | None) -> None:
        reference, artifact = reference.astype(np.float64), artifact.astype(np.float64)
        self.nonfinite += int(artifact.size - np.count_nonzero(np.isfinite(artifact)))
        top1 = reference.argmax(1)
        agree1, agree5 = top1_top5(artifact, top1)
        self.reference_top1.append(top1)
        self.agree_top1.append(agree1)
        self.agree_top5.append(agree5)
        self.cosine.append(cosine_per_sample(reference, artifact))
        self.signal += float(np.sum(reference ** 2))
        self.noise += float(np.sum((reference - artifact) ** 2))
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(reference - artifact).max()))
        if labels is not None:
            self.reference_hits.append(top1_top5(reference, labels))
            self.artifact_hits.append(top1_top5(artifact, labels))

    def add_outputs(self, reference: list[np.ndarray], artifact: list[np.ndarray], labels: np.ndarray | None) -> None:
        """Every output of each side (a classifier's first is its logits)."""
        self.add(reference[0], artifact[0], labels)

    def add_reference(self, reference: list[np.ndarray], labels: np.ndarray | None) -> None:
        """The reference alone (its artifact failed): its own accuracy is still reported."""
        if labels is not None:
            self.reference_hits.append(top1_top5(reference[0].astype(np.float64), labels))

    def failed_result(self, samples: int) -> dict:
        """Every figure None: what a failed artifact, or one with NaN outputs, reports."""
        return no_figures(samples, self.nonfinite)

    def result(self) -> dict:
        agree1 = np.concatenate(self.agree_top1)
        labelled = bool(self.artifact_hits)
        if self.nonfinite:  # max(0, nan) is 0 and NaN compares false: every figure would lie
            return self.failed_result(int(agree1.size))
        result = {
            "samples": int(agree1.size),
            "nonfinite_outputs": 0,
            "accuracy_top1": None, "accuracy_top5": None, "accuracy_drop": None, "accuracy_drop_ci95": None,
            "agreement_top1": float(agree1.mean()),
            "agreement_top1_ci95": bootstrap_interval(agree1.astype(np.float64)),
            "agreement_top5": float(np.concatenate(self.agree_top5).mean()),
            "cosine": float(np.concatenate(self.cosine).mean()),
            "sqnr_db": sqnr_db(self.signal, self.noise),
            "max_abs_diff": self.max_abs_diff,
        }
        if labelled:
            reference1 = np.concatenate([hits[0] for hits in self.reference_hits])
            artifact1 = np.concatenate([hits[0] for hits in self.artifact_hits])
            result["accuracy_top1"] = float(artifact1.mean())
            result["accuracy_top5"] = float(np.concatenate([hits[1] for hits in self.artifact_hits]).mean())
            # in points: float accuracy minus artifact accuracy, per image paired
            drop = 100.0 * (reference1.astype(np.float64) - artifact1.astype(np.float64))
            result["accuracy_drop"] = float(drop.mean())
            result["accuracy_drop_ci95"] = bootstrap_interval(drop)
        return result

    def reference_accuracy(self) -> dict:
        """The float reference's own accuracy on the same images (None without labels)."""
        if not self.reference_hits:
            return {"accuracy_top1": None, "accuracy_top5": None}
        return {"accuracy_top1": float(np.concatenate([h[0] for h in self.reference_hits]).mean()),
                "accuracy_top5": float(np.concatenate([h[1] for h in self.reference_hits]).mean())}


class MapAccumulator:
    """What drift reports for an artifact of feature maps (`export --features`): per map, SQNR, cosine
    (per image over the whole map, averaged) and max |diff| against the float model's map; overall the
    worst of each. No top-1 or accuracy: these are not logits."""

    def __init__(self, names: list[str]):
        self.names = names
        self.signal, self.noise = [0.0] * len(names), [0.0] * len(names)
        self.cosine: list[list[np.ndarray]] = [[] for _ in names]
        self.max_abs_diff = [0.0] * len(names)
        self.nonfinite = [0] * len(names)
        self.samples = 0

    def add_outputs(self, reference: list[np.ndarray], artifact: list[np.ndarray], labels: np.ndarray | None) -> None:
        self.samples += len(reference[0])
        for index, (ref, got) in enumerate(zip(reference, artifact)):
            ref, got = ref.astype(np.float64).reshape(len(ref), -1), got.astype(np.float64).reshape(len(got), -1)
            self.nonfinite[index] += int(got.size - np.count_nonzero(np.isfinite(got)))
            self.cosine[index].append(cosine_per_sample(ref, got))
            self.signal[index] += float(np.sum(ref ** 2))
            self.noise[index] += float(np.sum((ref - got) ** 2))
            self.max_abs_diff[index] = max(self.max_abs_diff[index], float(np.abs(ref - got).max()))

    def add_reference(self, reference: list[np.ndarray], labels: np.ndarray | None) -> None:
        """The reference alone (its artifact failed): a map has no accuracy of its own."""

    def failed_result(self, samples: int) -> dict:
        return {**no_figures(samples, sum(self.nonfinite)), "outputs": []}

    def result(self) -> dict:
        if sum(self.nonfinite):
            return self.failed_result(self.samples)
        outputs = [{"name": name, "sqnr_db": sqnr_db(signal, noise), "cosine": float(np.concatenate(cosines).mean()),
                    "max_abs_diff": diff}
                   for name, signal, noise, cosines, diff in zip(self.names, self.signal, self.noise, self.cosine,
                                                                  self.max_abs_diff)]
        sqnrs = [o["sqnr_db"] for o in outputs if o["sqnr_db"] is not None]  # None: exact
        return {**no_figures(self.samples, 0), "outputs": outputs,
                "cosine": min(o["cosine"] for o in outputs), "sqnr_db": min(sqnrs) if sqnrs else None,
                "max_abs_diff": max(o["max_abs_diff"] for o in outputs)}

    def reference_accuracy(self) -> dict:
        return {"accuracy_top1": None, "accuracy_top5": None}


def bootstrap_interval(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> list[float]:
    """95% percentile-bootstrap interval of the mean of per-image `values`."""
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(1, values.size))  # resamples per step: bounded index memory
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        means[start:start + count] = values[rng.integers(0, values.size, size=(count, values.size))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]
