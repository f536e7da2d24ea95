"""Our parameter names and shapes equal torchvision's and timm's, from a fixture that
tools/verify_reference_models.py recorded against the real libraries (which also checked that
the loaded models give identical logits)."""

from __future__ import annotations

import json

import pytest
import torch

import bbdeploy
from tests.conftest import FIXTURES

REFERENCE = json.loads((FIXTURES / "reference_state_dicts.json").read_text())
ENTRIES = REFERENCE["models"]


def test_fixture_covers_every_backbone():
    assert {e["backbone"] for e in ENTRIES} == set(bbdeploy.list_backbones())
    assert all(e["max_abs_diff"] == 0.0 for e in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e['backbone']}-w{e['width']}-{e['reference']}")
def test_state_dict_layout_equals_the_reference_library(entry):
    model = bbdeploy.create_backbone(entry["backbone"], width=entry["width"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == entry["state_dict"]


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["width"] in (None, 1.0)][:6],
                         ids=lambda e: e["reference"])
def test_a_checkpoint_in_the_reference_layout_loads_by_path(entry, tmp_path):
    generator = torch.Generator().manual_seed(1)
    checkpoint = {k: torch.randn(shape, generator=generator) if shape else torch.tensor(0)
                  for k, shape in entry["state_dict"].items()}
    path = tmp_path / f"{entry['reference']}.pth"
    torch.save(checkpoint, path)
    model = bbdeploy.create_backbone(entry["backbone"], weights=str(path))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k].float(), v.float()) for k, v in checkpoint.items())
    assert model.weights_source == f"path {path}"
