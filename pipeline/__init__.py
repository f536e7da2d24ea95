"""bbdeploy: quantize lightweight image backbones to int8, export them to ONNX, TFLite and OpenVINO,
and measure how far each artifact drifts from the float model and how fast it runs on a device.

The API names below are imported on first use, so that `bbdeploy --help` does not load torch.
"""

from importlib import import_module

from bbdeploy.offline import keep_dependencies_offline

__version__ = "0.1.0"

keep_dependencies_offline()  # before any dependency is imported: see bbdeploy.offline

_LAZY = {
    "list_backbones": "bbdeploy.backbones.zoo",
    "create_backbone": "bbdeploy.backbones.zoo",
    "backbone_info": "bbdeploy.backbones.zoo",
    "register_backbone": "bbdeploy.backbones",
    "BBDeployError": "bbdeploy.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bbdeploy' has no attribute {name!r}")
