"""Bring your own backbone: `bbdeploy export mypkg.nets:build_net` imports the function the user named
and treats the `nn.Module` it returns like a zoo backbone.

The import path is code the user names on the command line (or in Python); bbdeploy never imports a
path it read from a manifest or any other file: `drift` of such an artifact asks for `--model` again.
Preprocessing is data, not code: `--preprocess FILE.json` (or these defaults: 224 px, crop 0.875,
bilinear, ImageNet mean and std), recorded in every manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

from torch import nn

from ..errors import BBDeployError
from .registry import BackboneSpec, Preprocess, register_custom

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
PREPROCESS_KEYS = {"input_size", "crop_pct", "interpolation", "mean", "std"}


def is_import_path(name: str) -> bool:
    return ":" in name


def load_custom(import_path: str, preprocess: Preprocess | None = None) -> BackboneSpec:
    """Import `module:function`, check it builds an `nn.Module`, and register it for this process."""
    if not IMPORT_PATH.match(import_path):
        raise BBDeployError(f"{import_path!r} is not an import path; pass MODULE:FUNCTION, e.g. mypkg.nets:build_net")
    module_name, _, attribute = import_path.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` and uvicorn do: your package in this folder
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BBDeployError(f"cannot import {module_name!r} for backbone {import_path!r} ({reason}); pass "
                            "MODULE:FUNCTION importable from the current folder or the Python path") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise BBDeployError(f"module {module_name!r} has no function {attribute!r}; pass MODULE:FUNCTION naming a "
                            "function that returns a torch.nn.Module")
    takes_classes = "num_classes" in inspect.signature(function).parameters

    def constructor(*, num_classes: int | None = None) -> nn.Module:
        model = function(num_classes=num_classes) if takes_classes and num_classes is not None else function()
        if not isinstance(model, nn.Module):
            raise BBDeployError(f"{import_path} returned a {type(model).__name__}, not a torch.nn.Module; return "
                                "the network itself")
        return model

    probe = constructor()
    heads = [m for m in probe.modules() if isinstance(m, nn.Linear)]
    source = inspect.getsourcefile(module)
    spec = BackboneSpec(
        name=import_path, family="custom", constructor=_classes_checked(constructor, takes_classes, import_path),
        paper=f"your own code: {import_path}", preprocess=preprocess or Preprocess(),
        num_classes=heads[-1].out_features if heads else 1000,
        source_sha256=hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else None)
    register_custom(spec)
    return spec


def _classes_checked(constructor, takes_classes: bool, import_path: str):
    def build(*, num_classes: int | None = None, **kwargs) -> nn.Module:
        if kwargs:
            raise BBDeployError(f"{import_path} has a fixed width; leave out --width")
        model = constructor(num_classes=num_classes)
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if num_classes is not None and heads and heads[-1].out_features != num_classes and not takes_classes:
            raise BBDeployError(f"{import_path} does not take num_classes; drop --num-classes or give the function "
                                "a num_classes argument")
        return model

    return build


def read_preprocess(path: Path) -> Preprocess:
    """`--preprocess FILE.json`: {"input_size", "crop_pct", "interpolation", "mean", "std"}, any subset."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BBDeployError(f"cannot read --preprocess {str(path)!r} ({exc.strerror}); pass a JSON file") from None
    except json.JSONDecodeError as exc:
        raise BBDeployError(f"--preprocess {str(path)!r} is not JSON ({exc.msg}, line {exc.lineno}); pass an object "
                            f"with {', '.join(sorted(PREPROCESS_KEYS))}") from None
    if not isinstance(values, dict) or set(values) - PREPROCESS_KEYS:
        unknown = sorted(set(values) - PREPROCESS_KEYS) if isinstance(values, dict) else [type(values).__name__]
        raise BBDeployError(f"--preprocess {str(path)!r}: unknown {', '.join(map(str, unknown))}; pass an object with "
                            f"{', '.join(sorted(PREPROCESS_KEYS))}")
    try:
        preprocess = Preprocess(**{k: tuple(v) if k in ("mean", "std") else v for k, v in values.items()})
        ok = (isinstance(preprocess.input_size, int) and 16 <= preprocess.input_size <= 1024
              and 0 < float(preprocess.crop_pct) <= 1 and preprocess.interpolation in ("bilinear", "bicubic")
              and len(preprocess.mean) == len(preprocess.std) == 3 and all(float(s) > 0 for s in preprocess.std))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BBDeployError(f"--preprocess {str(path)!r} has an invalid value; pass input_size 16-1024, crop_pct in "
                            "(0, 1], interpolation bilinear|bicubic, three means and three positive stds")
    return preprocess

