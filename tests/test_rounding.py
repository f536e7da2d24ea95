"""GPTQ weight rounding: lower output error than nearest rounding, on a grid the toolchain keeps."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbdeploy.quantization.bias_correction import rounded
from bbdeploy.quantization.rounding import gptq_round, gptq_rounded, input_correlations


def _output_error(weight, reference, hessian) -> float:
    delta = (weight - reference).double()
    return torch.einsum("oi,ij,oj->", delta, hessian, delta).item()


def test_gptq_halves_the_output_error_of_nearest_rounding_on_correlated_inputs():
    torch.manual_seed(0)
    inputs = torch.randn(4096, 8) @ torch.randn(8, 32)  # 32 inputs spanning 8 directions: correlated
    hessian = (inputs.T @ inputs).double()
    weight = torch.randn(16, 32)
    nearest, gptq = rounded(weight, 7), gptq_round(weight, hessian, 7)
    assert _output_error(gptq, weight, hessian) < 0.5 * _output_error(nearest, weight, hessian)
    # on the same grid: per row scale max|w| / 7, integer steps, the extreme weight kept
    scale = weight.abs().amax(dim=1, keepdim=True) / 7
    steps = gptq / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 7 + 1e-4
    assert torch.allclose(gptq.abs().amax(dim=1), weight.abs().amax(dim=1))


def test_depthwise_layers_get_one_correlation_matrix_per_channel():
    layer = nn.Conv2d(4, 4, 3, groups=4)
    batches = [np.random.default_rng(0).random((2, 4, 6, 6), dtype=np.float32)]
    ((hessian, columns),) = input_correlations(layer, batches, {"": layer}).values()
    assert hessian.shape == (4, 9, 9) and columns == 2 * 16
    x = torch.from_numpy(batches[0]).double()
    patches = torch.nn.functional.unfold(x[:, 1:2], 3)  # channel 1's 3x3 windows
    expected = torch.einsum("nil,njl->ij", patches, patches)
    torch.testing.assert_close(hessian[1], expected, rtol=1e-6, atol=0)  # summed in float32


def test_error_aware_rounding_lowers_the_network_output_error():
    """Each layer rounded for the inputs it gets after its predecessors were rounded: measured 16%
    (plain convs) and 19% (depthwise) less output error than GPTQ layer by layer, on the same grid."""
    torch.manual_seed(0)
    for groups in (1, 16):
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(), nn.Conv2d(16, 16, 3, padding=1, groups=groups),
                              nn.ReLU6(), nn.Conv2d(16, 8, 1)).eval()
        batches = [np.random.default_rng(i).random((4, 3, 16, 16), dtype=np.float32) for i in range(8)]
        x = torch.from_numpy(np.concatenate(batches))
        with torch.no_grad():
            errors = [((gptq_rounded(model, lambda: batches, levels=7, error_aware=aware)(x) - model(x)) ** 2).mean()
                      for aware in (False, True)]
        assert errors[1] < 0.9 * errors[0], (groups, errors)


def _reference_correlation(layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, int]:
    """sum of a b^T over the layer's input columns, the plain way (F.unfold, float64): (k, k), or
    (C, kk, kk) for a depthwise layer; and how many columns."""
    def columns(x):
        x = x.double()
        if isinstance(layer, nn.Linear):
            return x.T.unsqueeze(0)  # (1, k, N)
        cols = torch.nn.functional.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)
        if layer.groups > 1:  # (C, kk, N * positions)
            n, _, positions = cols.shape
            return cols.view(n, layer.groups, -1, positions).permute(1, 2, 0, 3).reshape(layer.groups, -1, n * positions)
        return cols.transpose(0, 1).reshape(cols.shape[1], -1).unsqueeze(0)
    left, right = columns(a), columns(b)
    total = left @ right.transpose(1, 2)
    return (total if getattr(layer, "groups", 1) > 1 else total[0]), right.shape[-1]


def test_the_stepped_error_aware_pass_equals_rounding_layer_after_layer_with_full_passes(monkeypatch):
    """The error-aware pass steps both models through one forward pass each (linear in depth). The
    plain way, for comparison: before each layer, run the float model and the partly rounded model
    from the input again and take that layer's two inputs, correlate them with F.unfold in float64.
    Both must give the same weights. With 6 error-aware images the classifier (8 inputs, one column
    per image) is seen too few times there and takes H from all 40 images, the other branch."""
    from bbdeploy.quantization import rounding
    from bbdeploy.quantization.bias_correction import fold_batchnorm

    monkeypatch.setattr(rounding, "ERROR_AWARE_IMAGES", 6)
    torch.manual_seed(0)

    class Residual(nn.Module):  # a shortcut, so that execution order is not module order
        def __init__(self):
            super().__init__()
            self.expand, self.depthwise = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.project = nn.Conv2d(16, 8, 1)

        def forward(self, x):
            return x + self.project(torch.relu(self.depthwise(torch.relu(self.expand(x)))))

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), Residual(), Residual(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    batches = [np.random.default_rng(i).random((8, 3, 12, 12), dtype=np.float32) for i in range(5)]
    stepped = gptq_rounded(model, lambda: batches, levels=7)

    folded = fold_batchnorm(model)
    layers = rounding.roundable_layers(folded)
    expected = fold_batchnorm(model)
    hessians = input_correlations(folded, batches, layers)
    images = torch.from_numpy(np.concatenate(batches)[:rounding.ERROR_AWARE_IMAGES])
    with torch.no_grad():
        for name, (hessian, columns) in hessians.items():
            seen = {}
            for key, m in (("exact", folded), ("shifted", expected)):
                hook = m.get_submodule(name).register_forward_pre_hook(lambda _m, i, key=key: seen.setdefault(key, i[0]))
                m(images)
                hook.remove()
            weight = layers[name].weight
            flat = weight.reshape(weight.shape[0], -1).double()
            h, count = _reference_correlation(layers[name], seen["shifted"], seen["shifted"])
            c, _ = _reference_correlation(layers[name], seen["exact"], seen["shifted"])
            if columns >= rounding.MIN_COLUMNS_PER_INPUT * flat.shape[1] <= count:
                flat, hessian, columns = flat + rounding._error_correction(flat, h, c), h, count
            target = flat.reshape(weight.shape).to(weight.dtype)
            expected.get_submodule(name).weight.copy_(rounding.rounded_weight(target, hessian, columns, 7))
    for name in hessians:  # float32 sums against float64 ones: equal to 1e-4, far below one grid step (~0.05)
        torch.testing.assert_close(stepped.get_submodule(name).weight, expected.get_submodule(name).weight,
                                   rtol=1e-4, atol=1e-4)
    assert len(hessians) == 8  # stem, 2 x (expand, depthwise, project), classifier
    measured = rounding.measure_float(model, lambda: batches)
    assert set(hessians) - measured.remeasured == {"7"}  # the classifier
