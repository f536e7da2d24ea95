"""The two closeness figures every comparison of outputs reports, in one place: the cosine of each
sample's output with the reference's, and the signal-to-quantization-noise ratio (SQNR). Parity
(export), feature maps, drift and QAT's progress all use these, so a figure means the same everywhere.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_per_sample(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine of each sample's output (every value of it, flattened) with the reference's, in float64."""
    reference = reference.astype(np.float64).reshape(len(reference), -1)
    candidate = candidate.astype(np.float64).reshape(len(candidate), -1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)


def cosine_from_sums(dot: np.ndarray, reference_power: np.ndarray, candidate_power: np.ndarray) -> np.ndarray:
    """The same per-sample cosine from sums already taken (a caller that also needs the powers)."""
    return dot / np.maximum(np.sqrt(reference_power * candidate_power), 1e-12)


def sqnr_db(signal_power: float, noise_power: float) -> float | None:
    """10 log10(signal / noise), from sums or means of squares alike; identical outputs have no finite
    SQNR: None (shown as "exact")."""
    return float(10 * math.log10(signal_power / noise_power)) if noise_power > 0 else None
