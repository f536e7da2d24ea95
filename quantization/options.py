"""The quantization choices a user can make, shared by every target's quantizer: post-training
(`QuantOptions`) and quantization-aware training (`QATOptions`). Each field's help, flag and
pipeline-file key are declared here once (`bbdeploy.schema`); the CLI and the pipeline file read them.

Standard library only at import: `bbdeploy --help` builds its flags' help from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bbdeploy.errors import BBDeployError
from bbdeploy.exporters.registry import TARGETS, choices_help
from bbdeploy.schema import option

DISTILL_LOSSES = ("kl", "mse")
DEVICES = ("auto", "cpu", "cuda")


def _every(field: str) -> tuple[str, ...]:
    """Every choice some target offers for `field` (each target checks its own subset later)."""
    return tuple(dict.fromkeys(choice for target in TARGETS.values() for choice in getattr(target, field)))


CALIB_METHODS = _every("calib_methods")
IO_TYPES = _every("io_types")
WEIGHT_ROUNDINGS = _every("weight_roundings")


@dataclass
class QATOptions:
    """`export --int8 --qat` and a pipeline's `precisions: int8-qat:` section."""

    train_data: str | None = option(None, "--qat: folder of in-domain training images; class subfolders (index) "
                                          "give labels, else distillation alone.")
    train_labels: str | None = option(None, "--qat: CSV of path,label rows (paths relative to --train-data).")
    class_names: str | None = option(None, "--qat: text file, one class name per line in output order, for "
                                           "subfolders named by class.", flag="--train-class-names",
                                     key="train_class_names")
    epochs: int = option(4, "--qat: passes over --train-data.")
    lr: float = option(1e-5, "--qat: Adam learning rate, cosine-decayed to 0.")
    batch_size: int = option(32, "--qat: global batch (split over torchrun processes).")
    # logit MSE: Lite0 held-out SQNR 21.0 dB after 4 epochs, KL (T=2) 20.4 dB
    distill: str = option("mse", f"--qat: distillation loss on logits, {' | '.join(DISTILL_LOSSES)}.")
    temperature: float = option(2.0, why_not_exposed="the KL temperature of the measured setting (T=2)")
    resume: str | None = option(None, "--qat: continue from a checkpoint (OUTPUT/qat-checkpoints/*/epoch-N.pt) of "
                                      "the same model and settings.",
                                key=None)  # a pipeline resumes by its stage cache
    device: str = option("auto", f"--qat: {' | '.join(DEVICES)} (auto: a GPU when torch sees one).",
                         flag="--train-device", key="train_device")
    seed: int = option(0, why_not_exposed="fixed, so that a QAT run is reproducible (its stage id holds it)")

    def validate(self) -> "QATOptions":
        from .qat import world_size

        if self.train_data is None:
            raise BBDeployError("--qat needs --train-data DIR (a folder of in-domain images; labels optional)")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise BBDeployError(f"--epochs {self.epochs}, --batch-size {self.batch_size}, --lr {self.lr:g}: pass "
                                "at least 1 epoch, a batch of at least 1 and a positive learning rate")
        if self.distill not in DISTILL_LOSSES:
            raise BBDeployError(f"unknown --distill {self.distill!r}; pass one of {', '.join(DISTILL_LOSSES)}")
        if self.device not in DEVICES:
            raise BBDeployError(f"unknown --train-device {self.device!r}; pass one of {', '.join(DEVICES)}")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise BBDeployError("--train-device cuda, but torch sees no CUDA GPU here (torch "
                                    f"{torch.__version__}); pass --train-device cpu")
        processes = world_size()
        if self.batch_size % processes:
            raise BBDeployError(f"--batch-size {self.batch_size} does not split over {processes} torchrun processes; "
                                f"pass a multiple of {processes}")
        return self

    def as_config(self) -> dict:
        """What shapes the trained weights (not where they are computed, nor the data's path)."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "distill": self.distill,
                "temperature": self.temperature, "seed": self.seed}


@dataclass
class QuantOptions:
    """`export --int8` and a pipeline's `precisions: int8:` section (calibration: its own section)."""

    calib_data: str | None = option(None, "int8 calibration: image folder or .npy [default: built-in photo crops, "
                                          "with a warning].", key="calibration.data")
    calib_size: int = option(300, "int8 calibration: number of images (deterministic sample).",
                             key="calibration.size")
    calib_method: str | None = option(None, f"int8 activation ranges, per target ({choices_help('calib_methods')}) "
                                            "[default: the first, each target's measured best].")
    weight_rounding: str | None = option(None, f"int8 weights, per target ({choices_help('weight_roundings')}) "
                                               "[default: the first].")
    bias_correction: bool = option(True, "int8 with nearest rounding: correct each layer's bias for its rounding "
                                         "error.")
    io: str = option("float", f"int8 input/output type, per target ({choices_help('io_types')}).")
    keep_float: tuple[str, ...] = option((), "int8: comma list of layers or blocks to leave in float, e.g. "
                                             "conv_stem,classifier.")
    qat: QATOptions | None = option(None, "int8: quantization-aware training on --train-data before each target's "
                                          "quantizer (see README).", key="precisions.int8-qat")

    def validate(self) -> "QuantOptions":
        if self.calib_method is not None and self.calib_method not in CALIB_METHODS:
            raise BBDeployError(f"unknown --calib-method {self.calib_method!r}; pass one of {', '.join(CALIB_METHODS)}")
        if self.weight_rounding is not None and self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise BBDeployError(f"unknown --weight-rounding {self.weight_rounding!r}; pass one of "
                                f"{', '.join(WEIGHT_ROUNDINGS)}")
        if self.io not in IO_TYPES:
            raise BBDeployError(f"unknown --io {self.io!r}; pass one of {', '.join(IO_TYPES)}")
        if self.qat is not None:
            self.qat.validate()
        return self

    def as_config(self) -> dict:
        """What goes into the stage id: everything but the data path (its fingerprint goes instead)."""
        return {"calib_size": self.calib_size, "calib_method": self.calib_method,
                "weight_rounding": self.weight_rounding, "bias_correction": self.bias_correction, "io": self.io,
                "keep_float": sorted(self.keep_float),
                **({"qat": self.qat.as_config()} if self.qat is not None else {})}
