"""`export --features 3,4,5`: the backbone without its classifier, returning the feature maps of the
chosen stages (strides 8/16/32 for 3,4,5), the way detection and segmentation necks consume them.

The extractor keeps the backbone's own top-level module names, so its parameters, `--keep-float` layer
names and checkpoints are the backbone's, and runs the trunk (stages.trunk) in order, tapping the end
of each chosen stage. That is only the backbone's function when its forward runs its modules in that
order; it is checked on an image before anything is exported.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbdeploy.errors import BBDeployError
from bbdeploy.fidelity import cosine_per_sample, sqnr_db
from bbdeploy.backbones.receptive_fields import stage_by_index, stage_table, trunk


class FeatureExtractor(nn.Module):
    def __init__(self, model: nn.Module, ends: list[str]):
        super().__init__()
        paths = [path for path, _ in trunk(model)]
        self.paths = paths[:max(paths.index(end) for end in ends) + 1]
        self.taps = list(ends)
        self.output_names = [f"features_{i}" for i in range(len(ends))]
        self._deploy: tuple = ()  # the extractor of the converter-friendly form, where extractor() took it
        used = {path.split(".")[0] for path in self.paths}
        for name, child in model.named_children():
            if name in used:
                self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for path in self.paths:
            x = self.get_submodule(path)(x)
            if path in self.taps:
                outputs.append(x)
        return tuple(outputs)

    def deploy_form(self) -> "FeatureExtractor":
        """The extractor the artifacts were converted from (the deploy form's, or this one): the layers
        that drift --layers matches to an artifact's tensors."""
        return self._deploy[0] if self._deploy else self


def parse_features(text: str) -> tuple[int, ...]:
    """`3,4,5` -> (3, 4, 5); one line for anything else."""
    try:
        indices = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        indices = ()
    if not indices:
        raise BBDeployError(f"--features {text!r} is not a list of stage indices; pass e.g. 3,4,5 (stage k has "
                            "output stride 2^k)")
    return indices


def stage_ends(model: nn.Module, indices: tuple[int, ...], size: int, name: str) -> list[str]:
    """Module paths ending the chosen stages; an index the backbone has not is one line."""
    stages = stage_table(model, size)
    return [stage_by_index(stages, index, name).end for index in indices]


def extractor(model: nn.Module, deploy_model: nn.Module, ends: list[str], sample: torch.Tensor,
              name: str) -> tuple[FeatureExtractor, FeatureExtractor]:
    """(reference, deploy) extractors, each checked against the backbone's own forward on `sample`.

    The deploy form is used where its trunk has the same stage ends and gives the same maps (ShuffleNet
    V1's does); otherwise the converters get the backbone as it is."""
    reference = FeatureExtractor(model, ends)
    expected = _tapped(model, ends, sample)
    if not _same(reference(sample), expected):
        raise BBDeployError(f"--features needs a backbone whose forward runs its modules in order; {name}'s does "
                            "not, so its stage outputs cannot be exported on their own")
    deploy = reference
    if deploy_model is not model and all(end in {p for p, _ in trunk(deploy_model)} for end in ends):
        candidate = FeatureExtractor(deploy_model, ends)
        with torch.no_grad():
            if _close(candidate(sample), expected):
                deploy = candidate
    if deploy is not reference:
        reference._deploy = (deploy.eval(),)  # a tuple: not a submodule of the reference
    return reference.eval(), deploy.eval()


def recorded_extractor(model: nn.Module, features: dict, size: int, name: str) -> FeatureExtractor:
    """The float reference of a feature-map artifact, rebuilt from its manifest's `features` record
    (checked against the backbone's own forward as at export)."""
    deploy_model = model.deploy_form() if hasattr(model, "deploy_form") else model
    return extractor(model, deploy_model, features["ends"], check_sample(size), name)[0]


def check_sample(size: int) -> torch.Tensor:
    """The seeded image the extractors are checked on, at export and when drift rebuilds them."""
    return torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32))


def _tapped(model: nn.Module, ends: list[str], sample: torch.Tensor) -> list[torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(end).register_forward_hook(
        lambda _m, _i, output, end=end: captured.setdefault(end, output)) for end in ends]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return [captured[end] for end in ends]


def _same(got, expected) -> bool:
    with torch.no_grad():
        return len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))


def _close(got, expected) -> bool:
    return len(got) == len(expected) and all(
        float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max())) for a, b in zip(got, expected))


def compare_features(reference: list[np.ndarray], candidate: list[np.ndarray], names: list[str]) -> dict:
    """Per output: max |diff|, cosine (per sample over the whole map, then averaged) and SQNR; overall the
    worst of each, which the float tolerance and the int8 floor judge. No top-1: these are not logits."""
    per_output = []
    for name, ref, got in zip(names, reference, candidate):
        ref, got = ref.astype(np.float64).reshape(len(ref), -1), got.astype(np.float64).reshape(len(got), -1)
        nonfinite = int(got.size - np.count_nonzero(np.isfinite(got)))
        if nonfinite:
            per_output.append({"name": name, "nonfinite_outputs": nonfinite, "max_abs_diff": None, "cosine": None,
                               "sqnr_db": None})
            continue
        error_power = float(np.mean((ref - got) ** 2))
        per_output.append({"name": name, "nonfinite_outputs": 0, "max_abs_diff": float(np.abs(ref - got).max()),
                           "cosine": float(cosine_per_sample(ref, got).mean()),
                           "sqnr_db": sqnr_db(float(np.mean(ref ** 2)), error_power)})
    finite = [o for o in per_output if not o["nonfinite_outputs"]]
    sqnrs = [o["sqnr_db"] for o in finite if o["sqnr_db"] is not None]
    return {
        "samples": int(len(reference[0])), "outputs": per_output,
        "nonfinite_outputs": sum(o["nonfinite_outputs"] for o in per_output),
        "max_abs_diff": max((o["max_abs_diff"] for o in finite), default=None),
        "mean_abs_diff": None, "top1_agreement": None, "confident_samples": None, "confident_top1_agreement": None,
        "cosine": min((o["cosine"] for o in finite), default=None),
        "sqnr_db": min(sqnrs) if sqnrs else None,
    }
