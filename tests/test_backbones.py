"""The zoo: every registered backbone builds, trains a step, and has the published size."""

from __future__ import annotations

import pytest
import torch

import bbdeploy
from bbdeploy.backbones import all_specs
from bbdeploy.errors import BBDeployError

ALL = bbdeploy.list_backbones()
TINY = 64  # pixels; enough for five stride-2 stages to leave a 2x2 map

# Published parameter counts (millions) at width 1.0 with 1000 classes; the issue allows 2%.
PUBLISHED_PARAMS_M = {
    "mobilenet_v1": 4.23,
    "mobilenet_v2": 3.50,
    "mobilenet_v3_large": 5.48,
    "mobilenet_v3_small": 2.54,
    "shufflenet_v2_x1_0": 2.28,
    "efficientnet_lite0": 4.65,
    "efficientnet_lite4": 13.0,
    # torchvision's weights metadata (num_params)
    "mnasnet0_5": 2.219,  # torchvision counts its new 16-channel stem; ours is the published file's 32 (2.221)
    "mnasnet0_75": 3.170, "mnasnet1_0": 4.383, "mnasnet1_3": 6.282,
    "regnet_x_400mf": 5.496, "regnet_x_800mf": 7.260, "regnet_y_400mf": 4.344, "regnet_y_800mf": 6.433,
    # pycls' model zoo (the RegNet authors'), for the checkpoints timm republishes
    "regnet_x_200mf": 2.7, "regnet_x_600mf": 6.2, "regnet_y_200mf": 3.2, "regnet_y_600mf": 6.1,
    # Megvii's ShuffleNet-Series README (1.0x)
    "shufflenet_v1_g3": 1.9, "shufflenet_v1_g8": 2.4,
}
# Published multiply-adds (millions) at 224px: the papers' tables (V1 569, V2 300, V3-L 219,
# V3-S 56, ShuffleNetV2 1.0x 146).
PUBLISHED_MACS_M = {
    "mobilenet_v1": 569,
    "mobilenet_v2": 300,
    "mobilenet_v3_large": 219,
    "mobilenet_v3_small": 56,
    "shufflenet_v2_x1_0": 146,
    # torchvision's weights metadata (_ops, GFLOPS as multiply-adds); mnasnet0_5 is left out: torchvision's
    # 104 M counts its new 16-channel stem, which its published checkpoint does not have (ours: 126 M)
    "mnasnet0_75": 215, "mnasnet1_0": 314, "mnasnet1_3": 526,
    "regnet_x_400mf": 414, "regnet_x_800mf": 800, "regnet_y_400mf": 402, "regnet_y_800mf": 834,
    # the RegNet names are their flops (pycls: 0.2 and 0.6 GF)
    "regnet_x_200mf": 200, "regnet_x_600mf": 600, "regnet_y_200mf": 200, "regnet_y_600mf": 600,
    # Megvii's README (1.0x)
    "shufflenet_v1_g3": 138, "shufflenet_v1_g8": 138,
}


def test_registry_holds_the_whole_zoo():
    assert set(ALL) == {
        "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
        "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
        *(f"efficientnet_lite{i}" for i in range(5)),
        "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
        *(f"regnet_{kind}_{flops}mf" for kind in "xy" for flops in (200, 400, 600, 800)),
        "shufflenet_v1_g3", "shufflenet_v1_g8",
    }


@pytest.mark.parametrize("name", ALL)
def test_forward_and_backward_at_tiny_resolution(name):
    model = bbdeploy.create_backbone(name, num_classes=7)
    assert not model.training, "backbones come in eval mode"
    model.train()
    x = torch.randn(2, 3, TINY, TINY)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.logsumexp(1).mean().backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without_grad == []


@pytest.mark.parametrize("name, millions", PUBLISHED_PARAMS_M.items())
def test_parameter_count_matches_the_published_one(name, millions):
    params = bbdeploy.backbone_info(name)["params"]
    assert abs(params / 1e6 - millions) / millions <= 0.02, params


@pytest.mark.parametrize("name, millions", PUBLISHED_MACS_M.items())
def test_macs_match_the_published_ones(name, millions):
    macs = bbdeploy.backbone_info(name)["macs"]
    assert abs(macs / 1e6 - millions) / millions <= 0.02, macs


@pytest.mark.parametrize("groups, width, params_m, macs_m", [
    (3, 0.5, 0.7, 38), (3, 1.5, 3.4, 292), (3, 2.0, 5.4, 524),
    (8, 0.5, 1.0, 40), (8, 1.5, 4.3, 290), (8, 2.0, 6.5, 522)])
def test_shufflenet_v1_widths_match_megvii(groups, width, params_m, macs_m):
    """Megvii's ShuffleNet-Series README: parameters (millions, 1 decimal) and FLOPs (mult-adds) at 224px."""
    info = bbdeploy.backbone_info(f"shufflenet_v1_g{groups}", width=width)
    assert round(info["params"] / 1e6, 1) == params_m
    assert abs(info["macs"] / 1e6 / macs_m - 1) <= 0.02, info["macs"]


@pytest.mark.parametrize("width, params_m, macs_m", [(0.25, 0.5, 41), (0.5, 1.3, 149), (0.75, 2.6, 325)])
def test_mobilenet_v1_widths_match_the_paper(width, params_m, macs_m):
    """Table 6 of the MobileNetV1 paper: parameters (millions, 1 decimal) and mult-adds at 224px."""
    info = bbdeploy.backbone_info("mobilenet_v1", width=width)
    assert round(info["params"] / 1e6, 1) == params_m
    assert round(info["macs"] / 1e6) == macs_m


@pytest.mark.parametrize("width, params", [(0.35, 1_677_128), (1.4, 6_108_776)])
def test_mobilenet_v2_widths_match_torchvision(width, params):
    """Counts of torchvision's mobilenet_v2(width_mult=...)."""
    model = bbdeploy.create_backbone("mobilenet_v2", width=width)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(1, 3, TINY, TINY)).shape == (1, 1000)


@pytest.mark.parametrize("alias, name", [
    ("mobilenetv1", "mobilenet_v1"), ("mobilenetv2", "mobilenet_v2"), ("mobilenetv3", "mobilenet_v3_large"),
    ("MobileNet-V3-Small", "mobilenet_v3_small"), ("shufflenet", "shufflenet_v2_x1_0"),
    ("efficientnet-lite0", "efficientnet_lite0"), ("efficientnet-lite4", "efficientnet_lite4"),
    ("mnasnet", "mnasnet1_0"), ("regnetx_002", "regnet_x_200mf"), ("RegNetY-006", "regnet_y_600mf"),
    ("shufflenet_v1", "shufflenet_v1_g3"),
])
def test_aliases_that_users_type(alias, name):
    assert bbdeploy.backbone_info(alias)["name"] == name


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BBDeployError, match=r"unknown backbone 'mobilnet_v2' \(did you mean 'mobilenet_v2'\?\)"):
        bbdeploy.create_backbone("mobilnet_v2")


def test_width_is_validated():
    with pytest.raises(BBDeployError, match=r"width 0.6 is not available for mobilenet_v2; pass one of 0.35"):
        bbdeploy.create_backbone("mobilenet_v2", width=0.6)
    with pytest.raises(BBDeployError, match="efficientnet_lite0 has a fixed width"):
        bbdeploy.create_backbone("efficientnet_lite0", width=1.4)


def test_list_backbones_filters_by_pattern():
    assert bbdeploy.list_backbones("lite") == [f"efficientnet_lite{i}" for i in range(5)]
    assert bbdeploy.list_backbones("shufflenet*x1*") == ["shufflenet_v2_x1_0", "shufflenet_v2_x1_5"]


@pytest.mark.parametrize("spec", all_specs(), ids=lambda s: s.name)
def test_every_backbone_describes_its_preprocessing(spec):
    info = bbdeploy.backbone_info(spec.name)
    assert info["paper"].startswith("https://arxiv.org/abs/")
    pre = info["preprocess"]
    assert pre["size"] == info["input_size"] >= 224
    assert pre["interpolation"] in ("bilinear", "bicubic")
    assert pre["resize"] == round(pre["size"] / pre["crop_pct"])
    assert len(pre["mean"]) == len(pre["std"]) == 3
    assert info["macs"] > info["params"] > 1e6


def test_efficientnet_lite_has_no_squeeze_excite_and_only_relu6():
    model = bbdeploy.create_backbone("efficientnet_lite2")
    activations = {type(m).__name__ for m in model.modules()
                   if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.Hardswish,
                                     torch.nn.Sigmoid, torch.nn.Hardsigmoid))}
    assert activations == {"ReLU6"}
    # stem and head stay fixed across the Lite family
    lite4 = bbdeploy.create_backbone("efficientnet_lite4")
    assert lite4.conv_stem.out_channels == model.conv_stem.out_channels == 32
    assert lite4.conv_head.out_channels == model.conv_head.out_channels == 1280


def test_mobilenet_v3_uses_hard_swish_and_hard_sigmoid_squeeze_excite():
    model = bbdeploy.create_backbone("mobilenet_v3_small")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Hardswish", "Hardsigmoid", "SqueezeExcite"} <= kinds
