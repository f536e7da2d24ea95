"""The build stage: the float model a request names, its manifest record (weights digest, MACs,
preprocessing) and the images parity is measured on, with the float model's outputs for them.

Export converts what this builds; drift rebuilds the same float model (`float_model`) to compare a
deployed artifact with it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bbdeploy.backbones import resolve
from bbdeploy.backbones.complexity import count_macs, count_params
from bbdeploy.backbones.custom import is_import_path, load_custom, read_preprocess
from bbdeploy.backbones.features import check_sample, extractor, stage_ends
from bbdeploy.backbones.random_weights import RANDOM_WEIGHTS_NOTE
from bbdeploy.backbones.registry import BackboneSpec
from bbdeploy.backbones.zoo import create_backbone
from bbdeploy.data.photos import EVALUATION_PHOTOS, evaluation_photos, preprocess_image
from bbdeploy.errors import BBDeployError
from bbdeploy.quantization.bias_correction import fold_batchnorm
from bbdeploy.quantization.calibration import CalibrationSet, evaluation_crops
from bbdeploy.stages.manifest import stage_id

if TYPE_CHECKING:
    from bbdeploy.stages.export import ExportOptions

MAX_INPUT_SIZE = 1024
# relative to the largest output: a batch-norm fold rounds to 1e-6..2e-5 (whole zoo, 224 px); a wrong pairing
# is off by tens of percent
FOLD_TOLERANCE = 1e-3
RANDOM_SEED = 0  # `--weights random` builds the same network every time, so exports are cacheable



# Parity images, this many (int8 agreement needs more than a dozen samples to mean something): images
# of --calib-data that calibration did not sample (in the model's own domain), or else the built-in
# evaluation photos, whole, then crops of them. Never an image calibration used.
PARITY_SAMPLES = {"fp32": 12, "fp16": 12, "int8": 112}


class ParityImages:
    """The images parity is measured on, and the float model's logits for them: decoded and run on
    first use, so that a request answered from the cache does neither. `fingerprint` names them
    without decoding anything."""

    def __init__(self, spec: BackboneSpec, size: int, samples: int, calibration: CalibrationSet | None,
                 model: torch.nn.Module):
        self._spec, self._size, self._model = spec, size, model
        self._held_out = calibration.held_out_set(samples) if calibration is not None else None
        if self._held_out is not None:
            self._whole_photos, self._crops = (), self._held_out
        else:  # the whole evaluation photos first, then crops of them
            self._whole_photos = EVALUATION_PHOTOS[:samples]
            self._crops = evaluation_crops(spec.preprocess, size, samples - len(self._whole_photos))
        digest = hashlib.sha256(repr((self._whole_photos, size, spec.preprocess.as_dict())).encode())
        digest.update(self._crops.fingerprint().encode())
        self.fingerprint = digest.hexdigest()

    @cached_property
    def images(self) -> np.ndarray:
        """NCHW float32, preprocessed."""
        photos = evaluation_photos() if self._whole_photos else {}
        whole = [preprocess_image(photos[name], self._spec.preprocess, self._size)[None] for name in self._whole_photos]
        return np.concatenate(whole + list(self._crops.batches(32)))

    @cached_property
    def reference(self) -> list[np.ndarray]:
        """The float model's outputs for `images` (its logits, or its feature maps), 16 images at a time
        (112 at once took 1.5 GB at 224 px)."""
        chunks = []
        with torch.no_grad():
            for start in range(0, len(self.images), 16):
                outputs = self._model(torch.from_numpy(self.images[start:start + 16]))
                chunks.append([o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    @property
    def note(self) -> str:
        """What the images are, for the manifest."""
        if self._held_out is not None:
            return f"{len(self.images)} images of {self._held_out.source} that calibration did not sample"
        return ("the built-in evaluation photos (scikit-image, scikit-learn, matplotlib) and crops of them; none is "
                "a calibration photo")


@dataclass
class Built:
    """The build stage's result: the float model, its manifest record and the parity images."""

    spec: BackboneSpec
    model: torch.nn.Module  # as built: the reference for parity
    deploy_model: torch.nn.Module  # what converters get: the same function in a converter-friendly form
    record: dict
    parity: ParityImages

    @cached_property
    def float_model(self) -> torch.nn.Module:
        """`deploy_model` with batch norm folded into the convolutions, for float exports.

        Every converter folds it anyway, but torch.export decomposes each batch norm into five ops
        before they get the chance: folding first halved the conversion time (MobileNetV2 at 64 px:
        ONNX 4.3 -> 2.0 s, TFLite 9.5 -> 5.2 s). The fold pairs sibling modules, so it is checked
        on a parity image and not used where it changes the output (a network whose forward does not
        run a sibling Conv2d -> BatchNorm2d in that order).
        """
        folded = fold_batchnorm(self.deploy_model)
        sample = torch.from_numpy(self.parity.images[:1])
        with torch.no_grad():
            expected, got = self.deploy_model(sample), folded(sample)
        pairs = zip(expected, got) if isinstance(expected, tuple) else [(expected, got)]  # feature maps or logits
        same = all(float((e - g).abs().max()) <= FOLD_TOLERANCE * (float(e.abs().max()) or 1.0) for e, g in pairs)
        return folded if same else self.deploy_model


def input_size(spec: BackboneSpec, requested: int | None) -> int:
    size = requested or spec.preprocess.input_size
    if not spec.min_input_size <= size <= MAX_INPUT_SIZE:
        raise BBDeployError(f"--input-size {size} does not fit {spec.name}: its feature map needs at least "
                            f"{spec.min_input_size} pixels; pass {spec.min_input_size} to {MAX_INPUT_SIZE}")
    return size


def backbone_spec(options: ExportOptions) -> BackboneSpec:
    """The zoo's spec, or your own `module:function` backbone imported because the request names it."""
    if not is_import_path(options.model):
        if options.preprocess is not None:
            raise BBDeployError(f"--preprocess applies to your own backbones (MODULE:FUNCTION); {options.model} "
                                "comes with its published preprocessing, leave --preprocess out")
        return resolve(options.model)
    return load_custom(options.model, read_preprocess(options.preprocess) if options.preprocess else None)


def build(spec: BackboneSpec, options: ExportOptions, size: int, calibration: CalibrationSet | None = None) -> Built:
    """Create the float model and its record; the parity images and logits come when first used."""
    started = time.perf_counter()
    model = float_model(spec.name, options.weights, options.width, options.num_classes)
    preprocess = {**spec.preprocess.as_dict(), "size": size, "resize": round(size / spec.preprocess.crop_pct)}
    # a converter-friendly form of the same function, e.g. ShuffleNetV2 without channel-shuffle ops
    deploy_model = model.deploy_form() if hasattr(model, "deploy_form") else model
    with torch.no_grad():  # (on the built model: torch's meta device takes seconds to count MACs)
        num_classes = model(torch.zeros(1, 3, spec.min_input_size, spec.min_input_size)).shape[1]
    source, weights_sha256, features = model.weights_source, weights_digest(model), None
    if options.features:
        ends = stage_ends(model, options.features, size, spec.name)
        sample = check_sample(size)
        model, deploy_model = extractor(model, deploy_model, ends, sample, spec.name)
        with torch.no_grad():
            maps = model(sample)
        features = {"stages": list(options.features), "ends": ends, "names": model.output_names,
                    "shapes": [list(m.shape[1:]) for m in maps]}
    record = {
        "name": spec.name, "family": spec.family, "width": options.width,
        "deploy_form": type(deploy_model).__name__ if deploy_model is not model else None,
        "num_classes": int(num_classes), "weights": source,
        "weights_arg": weights_argument(options.weights), "weights_sha256": weights_sha256,
        "features": features,  # feature outputs instead of logits (export --features)
        "params": count_params(model), "macs_at_default_size": count_macs(model, spec.preprocess.input_size),
        "preprocess": preprocess,
        "note": RANDOM_WEIGHTS_NOTE if options.weights == "random" else None,
        "code_sha256": spec.source_sha256,  # your own backbone: its module file, so a code change is a new build
        "build_s": round(time.perf_counter() - started, 3),
    }
    record["id"] = stage_id(None, "build", {k: record[k] for k in ("name", "width", "num_classes",
                                                                   "weights_sha256", "preprocess", "code_sha256",
                                                                   "features")}, {})
    parity = ParityImages(spec, size, PARITY_SAMPLES[options.precision], calibration, model)
    return Built(spec, model, deploy_model, record, parity)


def float_model(name: str, weights: str, width: float | None, num_classes: int | None) -> torch.nn.Module:
    """The float model as `bbdeploy export` builds it (seeded, so `--weights random` is reproducible)."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        return create_backbone(name, weights=weights, width=width, num_classes=num_classes)


def weights_argument(weights: str) -> str:
    """`--weights` as a later stage can pass it again: a checkpoint path made absolute."""
    return weights if weights in ("random", "imagenet") else str(Path(weights).expanduser().resolve())


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
