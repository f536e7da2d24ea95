"""The quantization choices a user can make, shared by every target's quantizer."""

from __future__ import annotations

from dataclasses import dataclass

from bbdeploy.errors import BBDeployError
from bbdeploy.exporters.registry import TARGETS

from .qat import QATOptions


def _every(field: str) -> tuple[str, ...]:
    """Every choice some target offers for `field` (each target checks its own subset later)."""
    return tuple(dict.fromkeys(choice for target in TARGETS.values() for choice in getattr(target, field)))


CALIB_METHODS = _every("calib_methods")
IO_TYPES = _every("io_types")
WEIGHT_ROUNDINGS = _every("weight_roundings")


@dataclass
class QuantOptions:
    calib_data: str | None = None  # folder or .npy; None: built-in photo crops (loud)
    calib_size: int = 300
    calib_method: str | None = None  # None: the target's measured default
    weight_rounding: str | None = None  # None: the target's measured default
    bias_correction: bool = True  # with nearest rounding
    io: str = "float"  # int8 input/output type, where the target offers others (TFLite)
    keep_float: tuple[str, ...] = ()  # module names (of the converted model) left in float
    qat: QATOptions | None = None  # quantization-aware training before each target's quantizer

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
