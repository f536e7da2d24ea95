"""The backbone zoo. Importing this package registers every family."""

from . import efficientnet_lite, mobilenet_v1, mobilenet_v2, mobilenet_v3, shufflenet_v2  # noqa: F401
from .registry import BackboneSpec, ImagenetWeights, Preprocess, all_specs, register_backbone, resolve

__all__ = ["BackboneSpec", "ImagenetWeights", "Preprocess", "all_specs", "register_backbone", "resolve"]
