"""How close a deployed artifact's logits are to the float PyTorch model's, on the same inputs."""

from __future__ import annotations

import numpy as np

from bbdeploy.targets.runner.evaluate import run_batched  # noqa: F401 - one implementation, host and device

from bbdeploy.fidelity import cosine_per_sample, sqnr_db


CONFIDENT_MARGIN = 0.1  # top-1 minus top-2 softmax probability above which a prediction is not a near-tie
FLOAT_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-1}  # max |logit diff| a float export may show, per precision
# The int8 floor on mean logit cosine with PyTorch (`--min-cosine`). Measured: EfficientNet-Lite0
# with ImageNet weights 0.996-0.997 on every target; every backbone of the zoo at 64 px with random
# weights well above PLUMBING_MIN_COSINE (tests/conftest.py, tests/test_export.py); a broken int8 TFLite of MobileNetV3-Small 0.37.
DEFAULT_MIN_COSINE = 0.95


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """How close two (N, classes) logit arrays are.

    Top-1 agreement is also given on the confident samples alone: where the reference's top-2
    probabilities are within 0.1, any perturbation (fp16 included) can flip the top-1, so that part
    of the agreement measures the data more than the artifact. SQNR is 10 log10 of signal power over
    error power, over all logits.
    """
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    nonfinite = int(np.size(candidate) - np.count_nonzero(np.isfinite(candidate)))
    if nonfinite:  # NaN compares false with everything: no figure below would be true
        return {"samples": int(reference.shape[0]), "nonfinite_outputs": nonfinite, "max_abs_diff": None,
                "mean_abs_diff": None, "top1_agreement": None, "confident_samples": None,
                "confident_top1_agreement": None, "cosine": None, "sqnr_db": None}
    diff = np.abs(reference - candidate)
    cosine = cosine_per_sample(reference, candidate)
    agree = reference.argmax(1) == candidate.argmax(1)
    probabilities = np.exp(reference - reference.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > CONFIDENT_MARGIN
    error_power = float(np.mean((reference - candidate) ** 2))
    return {
        "samples": int(reference.shape[0]),
        "nonfinite_outputs": 0,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(agree)),
        "confident_samples": int(confident.sum()),
        "confident_top1_agreement": float(np.mean(agree[confident])) if confident.any() else None,
        "cosine": float(cosine.mean()),
        # identical logits have no finite SQNR: None, drawn and printed as "exact"
        "sqnr_db": sqnr_db(float(np.mean(reference ** 2)), error_power),
    }


def nonfinite_failure(count: int) -> str | None:
    """Why logits with `count` NaN or infinite values fail, in export and drift alike."""
    return f"{count} of the artifact's logits are NaN or infinite" if count else None


def parity_failure(parity: dict, precision: str, min_cosine: float = DEFAULT_MIN_COSINE) -> str | None:
    """Why an artifact with these parity figures must not be shipped, or None when it may.

    Float artifacts must match PyTorch to a tolerance; int8 ones must keep a mean logit cosine of
    at least `min_cosine`. NaN or infinite logits fail at any precision.
    """
    if parity["nonfinite_outputs"]:
        return nonfinite_failure(parity["nonfinite_outputs"])
    if precision in FLOAT_TOLERANCE:
        if parity["max_abs_diff"] > FLOAT_TOLERANCE[precision]:
            return (f"max |logit diff| {parity['max_abs_diff']:.3g} vs PyTorch exceeds {FLOAT_TOLERANCE[precision]:g} "
                    f"for {precision}")
        return None
    if parity["cosine"] < min_cosine:
        agreement = "" if parity["top1_agreement"] is None else f" (top-1 agreement {parity['top1_agreement']:.0%})"
        what = "logit cosine" if parity.get("outputs") is None else "feature cosine (worst output)"
        return (f"{precision} {what} {parity['cosine']:.4f} with PyTorch is below --min-cosine {min_cosine:g}"
                f"{agreement}; try --keep-float on the layers `bbdeploy drift --layers` ranks worst, or more "
                "--calib-data")
    return None
