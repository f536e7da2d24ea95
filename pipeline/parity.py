"""How close a deployed artifact's logits are to the float PyTorch model's, on the same inputs."""

from __future__ import annotations

import numpy as np


CONFIDENT_MARGIN = 0.1  # top-1 minus top-2 softmax probability above which a prediction is not a near-tie


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """How close two (N, classes) logit arrays are.

    Top-1 agreement is also given on the confident samples alone: where the reference's top-2
    probabilities are within 0.1, any perturbation (fp16 included) can flip the top-1, so that part
    of the agreement measures the data more than the artifact. SQNR is 10 log10 of signal power over
    error power, over all logits.
    """
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    diff = np.abs(reference - candidate)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)
    agree = reference.argmax(1) == candidate.argmax(1)
    probabilities = np.exp(reference - reference.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > CONFIDENT_MARGIN
    error_power = float(np.mean((reference - candidate) ** 2))
    return {
        "samples": int(reference.shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(agree)),
        "confident_samples": int(confident.sum()),
        "confident_top1_agreement": float(np.mean(agree[confident])) if confident.any() else None,
        "cosine": float(cosine.mean()),
        "sqnr_db": float(10 * np.log10(np.mean(reference ** 2) / error_power)) if error_power > 0 else None,
    }


def run_batched(runner, images_nchw: np.ndarray, layout: str, batch: int) -> np.ndarray:
    """Logits of `runner` for every image, fed `batch` at a time in the artifact's layout.

    A static-batch artifact needs full batches: the last one is padded by repeating its final image
    and the padding's outputs are dropped.
    """
    outputs = []
    for start in range(0, len(images_nchw), batch):
        chunk = images_nchw[start:start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        if layout == "nhwc":
            chunk = chunk.transpose(0, 2, 3, 1)
        outputs.append(runner(np.ascontiguousarray(chunk, dtype=np.float32))[:real])
    return np.concatenate(outputs)
