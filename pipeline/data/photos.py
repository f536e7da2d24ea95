"""Images in, network inputs out: the one preprocessing every stage (calibration, parity, drift) uses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bbdeploy.targets.runner.evaluate import normalize

from bbdeploy.backbones.registry import Preprocess
from bbdeploy.errors import BBDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # what image folders are searched for
_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def image_files(folder: Path, named: str, instead: str) -> list[Path]:
    """The image files under `folder` (recursive, sorted); none is one line: what `named` it is (the flag or
    role), which suffixes were looked for, and `instead`, what to pass."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BBDeployError(f"{named} {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); {instead}")
    return files


def load_image(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise BBDeployError(f"cannot read image {str(path)!r}: {exc}") from None


def preprocess_image(image: Image.Image | np.ndarray, preprocess: Preprocess,
                     input_size: int | None = None) -> np.ndarray:
    """Resize the short side to size / crop_pct, centre-crop, normalise: float32 CHW.

    This is timm's and torchvision's evaluation transform, so published accuracies reproduce.
    """
    return normalize(crop_image(image, preprocess, input_size)[None], preprocess.mean, preprocess.std)[0]


def crop_image(image: Image.Image | np.ndarray, preprocess: Preprocess, input_size: int | None = None) -> np.ndarray:
    """The resize and centre crop of `preprocess_image`: uint8 H x W x 3, what a device is sent (it
    normalises the crop itself, with `normalize`)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    size = input_size or preprocess.input_size
    resize = round(size / preprocess.crop_pct)
    width, height = image.size
    scale = resize / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                         _FILTERS[preprocess.interpolation])
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def recorded_preprocess(record: dict) -> Preprocess:
    """The preprocessing a manifest recorded (its "preprocess" entry), to apply it again."""
    return Preprocess(input_size=record["size"], crop_pct=record["crop_pct"], interpolation=record["interpolation"],
                      mean=tuple(record["mean"]), std=tuple(record["std"]))


# Real photos that ship with installed packages (no download), in two disjoint sets: int8 models are
# calibrated on the first and judged on the second, so a fidelity figure is never measured on the
# images the quantizer was fitted to.
CALIBRATION_PHOTOS = ("chelsea", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry", "retina",
                      "colorwheel", "logo", "coins", "camera")  # scikit-image
EVALUATION_PHOTOS = ("astronaut", "coffee",  # scikit-image
                     "china", "flower",  # scikit-learn's load_sample_images
                     "grace_hopper", "minduka_present")  # matplotlib's sample data
_MATPLOTLIB_FILES = {"grace_hopper": "grace_hopper.jpg", "minduka_present": "Minduka_Present_Blue_Pack.png"}


def calibration_photos() -> dict[str, np.ndarray]:
    """The built-in calibration photos as RGB uint8 arrays, by name."""
    return {name: builtin_photo(name) for name in CALIBRATION_PHOTOS}


def evaluation_photos() -> dict[str, np.ndarray]:
    """The built-in evaluation photos (none of them a calibration photo) as RGB uint8 arrays, by name."""
    return {name: builtin_photo(name) for name in EVALUATION_PHOTOS}


@lru_cache(maxsize=None)
def builtin_photo(name: str) -> np.ndarray:
    """One built-in photo by name (of CALIBRATION_PHOTOS or EVALUATION_PHOTOS), decoded once per
    process (callers must not modify it)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    elif name in _MATPLOTLIB_FILES:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(_MATPLOTLIB_FILES[name])) as photo:
            image = np.asarray(photo.convert("RGB"))
    else:
        import skimage.data as skdata

        image = skdata.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skdata, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)
