"""scikit-learn's digits as a small real labeled image set, and a backbone trained on them: shared by
tests/test_drift.py and benchmarks/qat_digits.py (which puts the checkout on sys.path for it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

TRAIN = 1400  # of the 1797 digits, in a seeded order; the other 397 are the held-out test set


def write_digits(root: Path, size: int) -> None:
    """train/<digit>/ and test/<digit>/ of size x size RGB PNGs."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.images))
    for part, indices in (("train", order[:TRAIN]), ("test", order[TRAIN:])):
        for index in indices:
            folder = root / part / str(data.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (data.images[index] / 16 * 255).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size), Image.BILINEAR).convert("RGB").save(folder / f"{index:04d}.png")


def digit_tensors(folder: Path, backbone: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of `folder` preprocessed as `backbone` takes them, and their labels (the subfolders)."""
    from bbdeploy.backbones import resolve
    from bbdeploy.data.photos import load_image, preprocess_image

    preprocess = resolve(backbone).preprocess
    paths = sorted(folder.rglob("*.png"))
    images = np.stack([preprocess_image(load_image(p), preprocess, size) for p in paths])
    return torch.from_numpy(images), torch.tensor([int(p.parent.name) for p in paths])


def train_on_digits(root: Path, backbone: str, width: float, size: int, epochs: int) -> Path:
    """`backbone` trained on root/train (AdamW, one-cycle), with batch-norm statistics of its final
    weights (not a running blend), saved as root/digits.pth."""
    import bbdeploy

    torch.manual_seed(0)
    images, labels = digit_tensors(root / "train", backbone, size)
    model = bbdeploy.create_backbone(backbone, width=width, num_classes=10)
    batch = 64
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-2, total_steps=epochs * -(-len(images) // batch))
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(images)).split(batch):
            loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model(images)
    path = root / "digits.pth"
    torch.save(model.eval().state_dict(), path)
    return path
