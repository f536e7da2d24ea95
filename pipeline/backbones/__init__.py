"""The backbone zoo. Importing this package registers every family."""

from . import efficientnet_lite, mnasnet, mobilenet_v1, mobilenet_v2, mobilenet_v3, regnet, shufflenet_v1, shufflenet_v2  # noqa: F401,E501
from .registry import BackboneSpec, ImagenetWeights, Preprocess, all_specs, register_backbone, resolve

__all__ = ["BackboneSpec", "ImagenetWeights", "Preprocess", "all_specs", "register_backbone", "resolve"]
