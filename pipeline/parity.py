"""How close a deployed artifact's logits are to the float PyTorch model's, on the same inputs."""

from __future__ import annotations

import numpy as np


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """max/mean |diff|, top-1 agreement and mean per-sample cosine of two (N, classes) arrays."""
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    diff = np.abs(reference - candidate)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)
    return {
        "samples": int(reference.shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        "cosine": float(cosine.mean()),
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
