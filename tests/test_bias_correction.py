"""bbdeploy's bias correction: what it promises on a layer it can check exactly."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbdeploy.quantization.bias_correction import correct_biases, fold_batchnorm, rounded


def _with_rounded_weights(model: nn.Module, levels: int) -> nn.Module:
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.copy_(rounded(layer.weight, levels))
    return model


def test_corrected_layer_has_no_mean_error_on_the_calibration_data():
    torch.manual_seed(0)
    depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8)).eval()
    with torch.no_grad():
        depthwise[1].running_mean.uniform_(-1, 1)
        depthwise[1].running_var.uniform_(0.5, 2)
    batches = [np.random.default_rng(i).random((4, 8, 16, 16), dtype=np.float32) for i in range(3)]  # >= 0, as after ReLU6
    inputs = torch.from_numpy(np.concatenate(batches))
    with torch.no_grad():
        reference = depthwise(inputs)
        plain = _with_rounded_weights(fold_batchnorm(depthwise), levels=7)(inputs)
        corrected = _with_rounded_weights(correct_biases(depthwise, batches, levels=7), levels=7)(inputs)
    channel_mean_error = lambda out: (out - reference).mean(dim=(0, 2, 3)).abs().max().item()  # noqa: E731
    # 7 levels make the rounding shift large; the correction cancels it on the data it measured, up
    # to how far each tap's pixels' mean is from the channel's mean (no padding here: zero borders
    # would be a second such source)
    assert channel_mean_error(plain) > 1e-2
    assert channel_mean_error(corrected) < 1e-3 and channel_mean_error(corrected) < channel_mean_error(plain) / 20
    # and the error that is left is smaller overall
    assert (corrected - reference).pow(2).mean() < 0.5 * (plain - reference).pow(2).mean()


def test_fold_batchnorm_is_exact_and_skipped_layers_keep_their_bias():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(model)(x), model(x), atol=1e-5)
        corrected = correct_biases(model, [x.numpy()], levels=7, skip=["4"])
    assert torch.equal(corrected[4].bias, model[4].bias)
    assert not torch.allclose(corrected[0].bias, fold_batchnorm(model)[0].bias)
