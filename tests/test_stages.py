"""`bbdeploy info MODEL --stages`: stage strides, sizes and channels, and receptive fields checked
against a brute-force measurement that shares no code with bbdeploy's arithmetic."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import bbdeploy
from bbdeploy.backbones.receptive_fields import describe_stages, trunk
from tests.conftest import run_cli

# no squeeze-excite: their receptive field is a number (one of each kind of block, branch and padding)
LOCAL_FIELD = ["mobilenet_v2", "mobilenet_v1", "efficientnet_lite0", "shufflenet_v2_x0_5", "shufflenet_v1_g8",
               "mnasnet0_5", "regnet_x_200mf"]
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU)


# the narrowest width where a family has several: the receptive field does not depend on channels, and
# float64 gradients at 500-900 px cost less
NARROWEST = {"mobilenet_v2": 0.35, "mobilenet_v1": 0.25}


def brute_force_model(name: str) -> nn.Module:
    """Activations and batch norm as identity, max pooling as average pooling, every convolution a
    positive constant: every input pixel inside the receptive field then has a positive gradient."""
    model = bbdeploy.create_backbone(name, width=NARROWEST.get(name)).double().eval()
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, (*ACTIVATIONS, nn.BatchNorm2d)):
                setattr(parent, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
    return model


def measured_field(model: nn.Module, end: str, size: int) -> tuple[int, int, int]:
    """(extent in rows, first row, last row) of the input pixels with a non-zero gradient of the
    centre location of module `end`'s output (summed over channels)."""
    captured = {}
    handle = model.get_submodule(end).register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    image = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    try:
        model(image)
    finally:
        handle.remove()
    out = captured["out"]
    out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    rows = (image.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
    return int(rows[-1] - rows[0] + 1), int(rows[0]), int(rows[-1])


@pytest.mark.parametrize("name", LOCAL_FIELD)
def test_receptive_fields_equal_the_brute_force_measurement(name):
    stages = describe_stages(bbdeploy.create_backbone(name), 224)["stages"]
    model = brute_force_model(name)
    for stage in stages:
        size = (stage["receptive_field"] // 32 + 3) * 32  # room on both sides of the field
        extent, first, last = measured_field(model, stage["end"], size)
        assert 0 < first and last < size - 1, (stage, first, last)  # not clipped by the border
        assert extent == stage["receptive_field"], (name, stage["index"], extent, stage["receptive_field"])
        assert not stage["global_context"]


def test_mobilenet_v2_last_feature_map_sees_491_pixels():
    """491 px: the figure the issue states for MobileNetV2's last feature map."""
    details = describe_stages(bbdeploy.create_backbone("mobilenet_v2"), 224)
    assert details["receptive_field"] == 491
    assert [(s["index"], s["stride"], s["size"], s["channels"]) for s in details["stages"]] == [
        (1, 2, [112, 112], 16), (2, 4, [56, 56], 24), (3, 8, [28, 28], 32), (4, 16, [14, 14], 96),
        (5, 32, [7, 7], 1280)]  # the channels of Table 2 of the paper
    assert details["stages_seeing_the_whole_input"] == [4, 5]  # 267 and 491 px against 224


def test_squeeze_excite_gives_global_context_as_the_gradient_shows():
    stages = describe_stages(bbdeploy.create_backbone("mobilenet_v3_small"), 224)["stages"]
    model = brute_force_model("mobilenet_v3_small")
    for stage in stages:
        size = (stage["receptive_field"] // 32 + 3) * 32
        extent, _, _ = measured_field(model, stage["end"], size)
        assert stage["global_context"] == (extent == size), (stage, extent, size)
    assert stages[-1]["global_context"] and not stages[0]["global_context"]


@pytest.mark.parametrize("name", bbdeploy.list_backbones())
def test_stage_costs_add_up_to_the_backbone(name):
    """Stages 1-5 at strides 2-32; their parameters and MACs are the trunk's: the backbone's, less the
    classifier after the global pooling."""
    model = bbdeploy.create_backbone(name)
    details = describe_stages(model, 224)
    assert [(s["index"], s["stride"]) for s in details["stages"]] == [(k, 2 ** k) for k in range(1, 6)]
    head = [m for path, m in model.named_children() if path not in {p.split(".")[0] for p, _ in trunk(model)}]
    head_params = sum(p.numel() for m in head for p in m.parameters())
    assert sum(s["params"] for s in details["stages"]) + head_params == sum(p.numel() for p in model.parameters())
    info = bbdeploy.backbone_info(name)
    head_macs = sum(m.in_features * m.out_features for h in head for m in h.modules() if isinstance(m, nn.Linear))
    if info["input_size"] == 224:
        assert sum(s["macs"] for s in details["stages"]) + head_macs == info["macs"]


def test_cli_info_stages_json_and_table(tmp_path):
    result = run_cli("info", "mobilenet_v2", "--stages", "--json")
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    assert details["stages"]["receptive_field"] == 491 and len(details["stages"]["stages"]) == 5
    table = run_cli("info", "mobilenet_v2", "--stages", "--input-size", "320")
    assert table.returncode == 0 and "receptive field" in table.stderr and "491" in table.stderr
    assert "10x10" in table.stderr  # the stride-32 map at 320 px


def test_cli_models_detail_lists_stage_channels_and_receptive_field():
    result = run_cli("models", "mobilenet_v2", "--detail", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["stages"]["receptive_field"] == 491
    assert [s["channels"] for s in row["stages"]["stages"]] == [16, 24, 32, 96, 1280]
