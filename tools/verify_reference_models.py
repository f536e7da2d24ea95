"""Check our backbones against torchvision and timm, and write the key/shape fixture the tests use.

torchvision and timm are not dependencies of bbdeploy, so this runs once, by hand, in a throwaway
environment that has them (PyPI's torchvision needs its matching torch build):

    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    /tmp/refenv/bin/pip install --no-deps -e .
    /tmp/refenv/bin/python tools/verify_reference_models.py [MEGVII_SHUFFLENET_V1_FOLDER]

For every pair it loads the reference model's state_dict (random weights, randomised BN statistics)
into ours and compares logits, then records each reference key and shape, its parameter count and
its multiply-accumulates at 224 px (counted by torch's FlopCounterMode on the reference model, a
counter independent of bbdeploy's) in tests/fixtures/reference_state_dicts.json.

ShuffleNet V1 is in neither library: its reference is the authors' own code, the `ShuffleNetV1`
folder of github.com/megvii-model/ShuffleNet-Series, passed as the argument (it is not part of this
repository). Megvii's network reads BGR 0..255, ours RGB 0..255, so its input is flipped.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import timm
import torch
import torchvision
from torchvision import models as tvm

import bbdeploy
from bbdeploy.backbones.checkpoints import load_into

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reference_state_dicts.json"

# (our name, our width, library, reference constructor name, reference kwargs)
PAIRS = [
    ("mobilenet_v1", None, "timm", "mobilenetv1_100", {}),
    *[("mobilenet_v2", w, "torchvision", "mobilenet_v2", {"width_mult": w}) for w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)],
    *[("mobilenet_v3_large", w, "torchvision", "mobilenet_v3_large", {"width_mult": w}) for w in (0.75, 1.0)],
    *[("mobilenet_v3_small", w, "torchvision", "mobilenet_v3_small", {"width_mult": w}) for w in (0.75, 1.0)],
    *[(f"shufflenet_v2_{s}", None, "torchvision", f"shufflenet_v2_{s}", {}) for s in ("x0_5", "x1_0", "x1_5", "x2_0")],
    *[(f"efficientnet_lite{i}", None, "timm", f"tf_efficientnet_lite{i}", {}) for i in range(5)],
    *[(f"mnasnet{s}", None, "torchvision", f"mnasnet{s}", {}) for s in ("0_5", "0_75", "1_0", "1_3")],
    *[(f"regnet_{k}_{f}mf", None, "torchvision", f"regnet_{k}_{f}mf", {}) for k in "xy" for f in (400, 800)],
    *[(f"regnet_{k}_{f}mf", None, "timm", f"regnet{k}_00{f // 100}", {}) for k in "xy" for f in (200, 600)],
    *[(f"shufflenet_v1_g{g}", w, "megvii", "ShuffleNetV1", {"group": g, "model_size": f"{w}x"})
      for g in (3, 8) for w in (0.5, 1.0, 1.5, 2.0)],
]


def reference(library: str, name: str, kwargs: dict) -> torch.nn.Module:
    if library == "timm":
        return timm.create_model(name, **kwargs)
    if library == "megvii":
        return importlib.import_module("network").ShuffleNetV1(**kwargs)
    model = getattr(tvm, name)(**kwargs)
    if name == "mnasnet0_5":
        # torchvision's published mnasnet0_5 checkpoint is its first version (32/16-channel stem,
        # unscaled): torchvision patches a new model into that form when it loads the file
        model._load_from_state_dict({}, "", {"version": 1}, False, [], [], [])
    return model


def reference_input(library: str, x: torch.Tensor) -> torch.Tensor:
    return x.flip(1) if library == "megvii" else x


def reference_macs(model: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


def randomise_bn(model: torch.nn.Module, generator: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def main() -> None:
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])  # Megvii's ShuffleNetV1 folder: `network`, `blocks`
    generator = torch.Generator().manual_seed(0)
    fixture = {"versions": {"torchvision": torchvision.__version__, "timm": timm.__version__}, "models": []}
    for ours, width, library, ref_name, kwargs in PAIRS:
        ref = reference(library, ref_name, kwargs).eval()
        randomise_bn(ref, generator)
        model = bbdeploy.create_backbone(ours, width=width)
        state = ref.state_dict()
        load_into(model, dict(state), f"{library}:{ref_name}")
        size = bbdeploy.backbone_info(ours)["input_size"]
        x = torch.randn(2, 3, size, size, generator=generator)
        with torch.no_grad():
            diff = (model(x) - ref(reference_input(library, x))).abs().max().item()
        status = "ok" if diff < 1e-4 else "MISMATCH"
        print(f"{status:8s} {ours:20s} width={width} vs {library}.{ref_name}: max|diff| {diff:.2e}")
        assert diff < 1e-4, ours
        fixture["models"].append({
            "backbone": ours, "width": width, "library": library, "reference": ref_name, "kwargs": kwargs,
            "max_abs_diff": diff, "params": sum(p.numel() for p in ref.parameters()),
            "macs_224": reference_macs(ref, 224), "state_dict": {k: list(v.shape) for k, v in state.items()},
        })
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
