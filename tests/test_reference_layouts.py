"""Our parameter names and shapes equal torchvision's, timm's and Megvii's, from a fixture that
tools/verify_reference_models.py recorded against the real libraries (which also checked that
the loaded models give identical logits, and counted their parameters and multiply-accumulates with
torch's FlopCounterMode, independently of bbdeploy's counter)."""

from __future__ import annotations

import json

import pytest
import torch

import bbdeploy
from bbdeploy.backbones import resolve
from bbdeploy.backbones.complexity import measure
from bbdeploy.backbones.checkpoints import to_model_keys
from tests.conftest import FIXTURES

REFERENCE = json.loads((FIXTURES / "reference_state_dicts.json").read_text())
ENTRIES = REFERENCE["models"]


def test_fixture_covers_every_backbone():
    assert {e["backbone"] for e in ENTRIES} == set(bbdeploy.list_backbones())
    # identical logits; Megvii's ShuffleNetV1 differs by float rounding (1.6e-7 at most: its 7x7
    # average pool against our global one, and the BGR flip moved into conv1)
    assert all(e["max_abs_diff"] <= 2e-7 for e in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e['backbone']}-w{e['width']}-{e['reference']}")
def test_params_and_macs_equal_the_reference_models_counts(entry):
    """Within 2% (the issue's bound) of the reference model's counts at 224 px; measured equal."""
    spec = resolve(entry["backbone"])
    kwargs = {"width": entry["width"]} if entry["width"] is not None else {}
    params, macs = measure(lambda: spec.constructor(**kwargs), 224)
    assert abs(params / entry["params"] - 1) <= 0.02, (params, entry["params"])
    assert abs(macs / entry["macs_224"] - 1) <= 0.02, (macs, entry["macs_224"])


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e['backbone']}-w{e['width']}-{e['reference']}")
def test_state_dict_layout_equals_the_reference_library(entry):
    """The same names and shapes; for layouts renamed on load (timm's RegNets, Megvii's ShuffleNetV1),
    the same once renamed."""
    model = bbdeploy.create_backbone(entry["backbone"], width=entry["width"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    reference = {k: torch.empty(shape, device="meta") for k, shape in entry["state_dict"].items()}
    renamed = {k: list(v.shape) for k, v in to_model_keys(reference, model).items()}
    assert ours == renamed
    assert len(renamed) == len(reference)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["width"] in (None, 1.0)],
                         ids=lambda e: f"{e['backbone']}-{e['reference']}")
def test_a_checkpoint_in_the_reference_layout_loads_by_path(entry, tmp_path):
    """A state dict in the published key names (generated here from the reference definitions' shapes:
    the real files cannot be downloaded on this machine) loads; layouts that are renamed on load (timm's
    RegNets, Megvii's ShuffleNetV1, whose conv1 is also flipped from BGR) keep every tensor."""
    generator = torch.Generator().manual_seed(1)
    checkpoint = {k: torch.randn(shape, generator=generator) if shape else torch.tensor(0)
                  for k, shape in entry["state_dict"].items()}
    path = tmp_path / f"{entry['reference']}.pth"
    torch.save(checkpoint, path)
    model = bbdeploy.create_backbone(entry["backbone"], weights=str(path))
    loaded = model.state_dict()
    converted = to_model_keys(dict(checkpoint), model)
    assert all(torch.equal(loaded[k].float(), v.float()) for k, v in converted.items())
    assert sorted(round(float(v.double().sum()), 6) for v in converted.values()) == \
        sorted(round(float(v.double().sum()), 6) for v in checkpoint.values())
    assert model.weights_source == f"path {path}"
