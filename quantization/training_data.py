"""Training images for quantization-aware training: a folder, labels optional.

Labels come as `bbdeploy drift` reads them (one subfolder per class index, class names with a names
file, or a `path,label` CSV); without them QAT distils from the float model alone, so any folder of
unlabeled in-domain images is enough. Images are decoded once, at the backbone's resize size with
the whole short side kept; each training step takes a seeded random crop of the input size and a
random horizontal flip of each, so that a few hundred photos give many distinct views.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bbdeploy.backbones.registry import Preprocess
from bbdeploy.data.photos import image_files, preprocess_image
from bbdeploy.data.folders import eval_data
from bbdeploy.errors import BBDeployError

MEMORY_BUDGET_BYTES = 4 * 1024**3  # decoded training images, float32


@dataclass
class TrainingSet:
    """Decoded training images (N, 3, R, R) and their labels (or None), with a fingerprint."""

    source: str
    images: torch.Tensor
    labels: torch.Tensor | None
    label_source: str
    input_size: int
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images)

    def views(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random crop of the input size and a random flip of each image in `indices`, drawn from
        `generator` (every process of a data-parallel run draws the same)."""
        margin = self.images.shape[-1] - self.input_size
        offsets = torch.randint(0, margin + 1, (len(indices), 2), generator=generator)
        flips = torch.rand(len(indices), generator=generator) < 0.5
        views = []
        for index, (top, left), flip in zip(indices.tolist(), offsets.tolist(), flips.tolist()):
            view = self.images[index, :, top:top + self.input_size, left:left + self.input_size]
            views.append(view.flip(-1) if flip else view)
        return torch.stack(views)

    def centre_views(self, batch: int):
        """The centre crops, `batch` at a time: the evaluation transform, for measuring."""
        margin = (self.images.shape[-1] - self.input_size) // 2
        for start in range(0, len(self.images), batch):
            yield self.images[start:start + batch, :, margin:margin + self.input_size, margin:margin + self.input_size]

    def record(self) -> dict:
        return {"source": self.source, "images": len(self), "labels": self.label_source,
                "fingerprint": self.fingerprint}


def training_set(folder: str | Path, preprocess: Preprocess, input_size: int, *, labels_csv: str | None = None,
                 class_names: str | None = None) -> TrainingSet:
    """Open and decode `--train-data`; one clear line when it is no folder of images."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BBDeployError(f"--train-data {str(folder)!r} is not a folder; pass a folder of training images "
                            "(labels optional: one subfolder per class)")
    image_files(root, "--train-data", "pass a folder of training images")  # none: that line, not --data's
    data = eval_data(root, labels_csv=labels_csv, class_names=class_names)
    resize = round(input_size / preprocess.crop_pct)
    if len(data) * 3 * resize**2 * 4 > MEMORY_BUDGET_BYTES:
        raise BBDeployError(f"--train-data {str(root)!r} holds {len(data)} images, more than QAT keeps in memory "
                            f"({MEMORY_BUDGET_BYTES // 1024**3} GiB at {resize} px); pass a folder of fewer images")
    whole_side = replace(preprocess, crop_pct=1.0)  # resize the short side to `resize`, keep all of it
    digest = hashlib.sha256(json.dumps({"size": input_size, "preprocess": preprocess.as_dict(),
                                        "labels": data.labels}, sort_keys=True).encode())
    images, labels, unreadable = [], [], []
    for index, path in enumerate(data.paths):
        try:
            with Image.open(path) as image:
                images.append(preprocess_image(image.convert("RGB"), whole_side, resize))
        except (OSError, UnidentifiedImageError, ValueError):
            unreadable.append(path)
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
        if data.labels is not None:
            labels.append(data.labels[index])
    if not images:
        raise BBDeployError(f"none of the {len(data)} images in --train-data {str(root)!r} could be read "
                            f"(e.g. {unreadable[0]}); pass a folder of jpg/png/webp/bmp images")
    return TrainingSet(str(root), torch.from_numpy(np.stack(images)),
                       torch.tensor(labels) if data.labels is not None else None, data.label_source, input_size,
                       digest.hexdigest())
