"""`--weights random` that still means something: seeded initialisation, then batch-norm statistics
measured on the built-in calibration photos and a unit-scale classifier.

Plain initialisation gives logits around 1e-9 (batch norm in eval mode with unit running variance
does not undo the shrinking of fan-out initialised layers), where every parity tolerance passes and
every cosine is noise. With real activation statistics the logits spread like a trained model's
(std >= 0.1 for every backbone of the zoo), so plumbing checks and int8 parity are real checks; the
figures still say nothing about accuracy, and the manifest says so.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbdeploy.backbones.registry import Preprocess
from bbdeploy.data.photos import calibration_photos, preprocess_image

RANDOM_WEIGHTS_NOTE = ("random weights (batch-norm statistics from the built-in photos): fidelity figures check "
                       "the plumbing only; pass --weights imagenet or PATH for figures that mean something")


def with_photo_statistics(model: nn.Module, preprocess: Preprocess) -> nn.Module:
    """Set every batch norm's running statistics from one pass over the built-in calibration photos,
    and re-initialise linear layers to unit gain.

    One thread and float16-rounded statistics make the result bit-identical from one process to the
    next, so that a later stage can rebuild the same reference and check it by digest.
    """
    images = torch.from_numpy(np.stack([preprocess_image(photo, preprocess) for photo in calibration_photos().values()]))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # the pass's own statistics, not a moving average
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        with torch.no_grad():
            model(images)
    finally:
        torch.set_num_threads(threads)
        model.eval()
    with torch.no_grad():
        for norm in norms:
            norm.momentum = 0.1
            norm.running_mean.copy_(norm.running_mean.half().float())
            norm.running_var.copy_(norm.running_var.half().float())
        generator = torch.Generator().manual_seed(0)
        for linear in (m for m in model.modules() if isinstance(m, nn.Linear)):
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * linear.in_features ** -0.5)
    return model
