"""Calibration images for post-training quantization: one backend-agnostic source, streamed.

A source is a folder of images (searched recursively), a `.npy` array, or, when the user gives
nothing, crops of the built-in calibration photos (scikit-image's). The last is a loud, recorded
choice (a warning in the output and in the manifest), never random noise. The built-in evaluation
photos, on which int8 parity is measured, are a disjoint set.

Batches come out as float32 NCHW, preprocessed like the backbone's evaluation transform; each
backend applies its own layout transform on top. An export decodes the set once and keeps it in
memory (`load`, up to MEMORY_BUDGET_BYTES: 300 images at 224 px take 181 MB), as every target and
every pass (GPTQ, bias correction, the toolchain's own calibration) walks it again; a set too large
for that is decoded batch by batch on every pass instead, so memory never grows with the folder.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bbdeploy.backbones.registry import Preprocess
from bbdeploy.data.photos import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, builtin_photo, image_files, preprocess_image
from bbdeploy.errors import BBDeployError
from bbdeploy.stages.manifest import tool_versions

DEFAULT_SIZE = 300  # images; what NNCF and onnxruntime examples use, and enough for min/max ranges
SAMPLE_SEED = 0
BUILTIN_WARNING = ("no --calib-data given: calibrating on crops of scikit-image's sample photos, which "
                   "are not your data; pass --calib-data DIR for a faithful int8 model")
EVALUATION_SEED = 1
PHOTO_DISTRIBUTIONS = ("scikit-image", "scikit-learn", "matplotlib")  # where the built-in photos come from
MEMORY_BUDGET_BYTES = 2 * 1024**3  # decoded calibration images kept in memory at most (float32)


@dataclass
class CalibrationSet:
    """`size` preprocessed inputs from one source, produced `batch` at a time."""

    source: str  # folder path, .npy path, or "builtin:scikit-image"
    preprocess: Preprocess
    input_size: int
    items: list  # image paths, array row indices, or (photo name, crop box) pairs
    kind: str  # "folder" | "npy" | "builtin"
    warning: str | None = None
    unreadable: list[str] = field(default_factory=list)
    _array: np.ndarray | None = None
    held_out: list = field(default_factory=list)  # items of the source that the sample left out
    _decoded: np.ndarray | None = None  # every readable item, preprocessed, once `load` kept them
    _fingerprint: str | None = None

    def held_out_set(self, size: int) -> "CalibrationSet | None":
        """Up to `size` of the source's items that calibration does not use (None if there are none):
        in-domain images no quantizer was fitted to, for judging the int8 model."""
        if not self.held_out:
            return None
        return CalibrationSet(self.source, self.preprocess, self.input_size, _sample(self.held_out, size), self.kind,
                              _array=self._array)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, on_image: Callable[[], None] = lambda: None,
             budget_bytes: int = MEMORY_BUDGET_BYTES) -> "CalibrationSet":
        """Decode every item once and keep the result for later `batches` calls, if it fits in
        `budget_bytes` (else leave the set streaming); `on_image` is called per item, for progress."""
        if self._decoded is not None or len(self.items) * 3 * self.input_size**2 * 4 > budget_bytes:
            return self
        decoded = []
        for item in self.items:
            array = self._decode(item)
            if array is not None:
                decoded.append(array)
            on_image()
        if not decoded:
            self._raise_unreadable()
        self._decoded = np.stack(decoded)
        return self

    @property
    def in_memory(self) -> bool:
        return self._decoded is not None

    def batches(self, batch: int = 16) -> Iterator[np.ndarray]:
        """float32 NCHW batches; unreadable images are skipped and remembered in `unreadable`."""
        if self._decoded is not None:
            for start in range(0, len(self._decoded), batch):
                yield self._decoded[start:start + batch]
            return
        for start in range(0, len(self.items), batch):
            decoded = [x for x in (self._decode(item) for item in self.items[start:start + batch]) if x is not None]
            if decoded:
                yield np.stack(decoded)
        if len(self.unreadable) == len(self.items):
            self._raise_unreadable()

    def _raise_unreadable(self):
        raise BBDeployError(f"none of the {len(self.items)} calibration images in {self.source} could be "
                            f"read (e.g. {self.unreadable[0]}); pass a folder of jpg/png/webp/bmp images")

    def _decode(self, item) -> np.ndarray | None:
        if self.kind == "npy":
            return _from_array(self._array[item], self.preprocess, self.input_size)
        if self.kind == "builtin":
            name, box = item
            return preprocess_image(Image.fromarray(builtin_photo(name)).crop(box), self.preprocess, self.input_size)
        try:
            with Image.open(item) as image:
                return preprocess_image(image.convert("RGB"), self.preprocess, self.input_size)
        except (OSError, UnidentifiedImageError, ValueError):
            if str(item) not in self.unreadable:
                self.unreadable.append(str(item))
            return None

    def fingerprint(self) -> str:
        """sha256 of what was sampled (file contents, array bytes or crop boxes) and the preprocessing."""
        if self._fingerprint is None:
            self._fingerprint = self._digest()
        return self._fingerprint

    def _digest(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({"kind": self.kind, "size": self.input_size,
                                  "preprocess": self.preprocess.as_dict()}, sort_keys=True).encode())
        if self.kind == "builtin":  # how the crops are drawn, and of which photos: no photo decoded
            digest.update(json.dumps(self.items.description(), sort_keys=True).encode())
        elif self.kind == "folder":
            for item in self.items:
                digest.update(Path(item).read_bytes())
        else:
            for item in self.items:
                digest.update(np.ascontiguousarray(self._array[item]).tobytes())
        return digest.hexdigest()

    def record(self) -> dict:
        """What the manifest stores about the calibration."""
        return {"source": self.source, "kind": self.kind, "samples": len(self.items),
                "unreadable": len(self.unreadable), "fingerprint": self.fingerprint(),
                "warning": self.warning}


def calibration_set(source: str | Path | None, preprocess: Preprocess, input_size: int,
                    size: int = DEFAULT_SIZE) -> CalibrationSet:
    """Open a calibration source; `size` items are drawn deterministically when there are more."""
    if size < 1:
        raise BBDeployError(f"--calib-size {size} must be at least 1")
    if source is None:
        return CalibrationSet("builtin:scikit-image", preprocess, input_size, PhotoCrops(size), "builtin",
                              warning=BUILTIN_WARNING)
    path = Path(source).expanduser()
    if path.is_dir():
        files = image_files(path, "calibration folder", "pass a folder of representative images")
        chosen = _sample(files, size)
        return CalibrationSet(str(path), preprocess, input_size, chosen, "folder", held_out=_rest(files, chosen))
    if path.suffix == ".npy" and path.is_file():
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_array(array, path, input_size)
        chosen = _sample(list(range(len(array))), size)
        return CalibrationSet(str(path), preprocess, input_size, chosen, "npy", _array=array,
                              held_out=_rest(list(range(len(array))), chosen))
    raise BBDeployError(f"calibration data {str(path)!r} is neither a folder of images nor a .npy file; "
                        "pass --calib-data DIR or --calib-data FILE.npy")


def _rest(items: list, chosen: list) -> list:
    taken = set(chosen)
    return [item for item in items if item not in taken]


def _sample(items: list, size: int) -> list:
    """The first `size` of a seeded shuffle, back in sorted order: the same files every run."""
    if len(items) <= size:
        return items
    chosen = sorted(random.Random(SAMPLE_SEED).sample(range(len(items)), size))
    return [items[i] for i in chosen]


def _check_array(array: np.ndarray, path: Path, input_size: int) -> None:
    """Accept (N, 3, S, S) preprocessed float inputs or (N, H, W, 3) uint8 photos."""
    preprocessed = array.ndim == 4 and array.shape[1:] == (3, input_size, input_size) and array.dtype.kind == "f"
    photos = array.ndim == 4 and array.shape[-1] == 3 and array.dtype == np.uint8
    if not (preprocessed or photos) or len(array) == 0:
        raise BBDeployError(f"{path} holds an array of shape {tuple(array.shape)} and dtype {array.dtype}; pass "
                            f"preprocessed float inputs of shape (N, 3, {input_size}, {input_size}) or uint8 "
                            "photos of shape (N, H, W, 3)")


def _from_array(row: np.ndarray, preprocess: Preprocess, input_size: int) -> np.ndarray:
    if row.dtype == np.uint8:
        return preprocess_image(np.asarray(row), preprocess, input_size)
    return np.asarray(row, dtype=np.float32)


class PhotoCrops(Sequence):
    """`size` seeded crops (35-100% of the short side, anywhere) spread over the built-in photos
    `names`, as (photo name, box) pairs. The boxes need the photos' sizes, so they are drawn on first
    access: a cached export names its images by `description()` without decoding a photo."""

    def __init__(self, size: int, seed: int = SAMPLE_SEED, names: tuple[str, ...] = CALIBRATION_PHOTOS):
        self._size, self._seed, self._names = max(0, size), seed, tuple(sorted(names))

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):
        return self._boxes[index]

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def description(self) -> dict:
        """What the crops are a function of (the photos come with these packages)."""
        return {"photos": self._names, "seed": self._seed, "crops": self._size,
                "packages": tool_versions(PHOTO_DISTRIBUTIONS)}

    @cached_property
    def _boxes(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        rng = random.Random(self._seed)
        crops = []
        for i in range(self._size):
            name = self._names[i % len(self._names)]
            height, width = builtin_photo(name).shape[:2]
            side = int(min(height, width) * rng.uniform(0.35, 1.0))
            left, top = rng.randint(0, width - side), rng.randint(0, height - side)
            crops.append((name, (left, top, left + side, top + side)))
        return crops


def evaluation_crops(preprocess: Preprocess, input_size: int, size: int) -> CalibrationSet:
    """Crops of the built-in evaluation photos, which no built-in calibration crop comes from."""
    return CalibrationSet("builtin:evaluation", preprocess, input_size,
                          PhotoCrops(size, EVALUATION_SEED, EVALUATION_PHOTOS), "builtin")
