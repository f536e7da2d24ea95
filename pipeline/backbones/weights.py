"""Where a backbone's weights come from: `random`, `imagenet` or a checkpoint PATH.

`imagenet` is resolved offline first: the user's cache, then an installed weights package, and only
then the official URL, checked against its published sha256. Nothing is ever silently replaced by
random weights: when no source works the error says what to pass.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from bbdeploy.backbones.registry import BackboneSpec
from bbdeploy.download import DownloadError, download, hash_matches, sha256_of
from bbdeploy.errors import BBDeployError
from bbdeploy.offline import cache_dir

OFFLINE_ENV = "BBDEPLOY_OFFLINE"  # set to 1 to never download


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    source: str  # "cache", "package <name>", "download <url>" or "path"


def weights_cache() -> Path:
    return cache_dir() / "weights"


def _package_file(spec: BackboneSpec) -> Path | None:
    info = spec.imagenet
    if not info or not info.package or not info.package_file:
        return None
    found = importlib.util.find_spec(info.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / info.package_file
    return path if path.is_file() else None


def find_offline(spec: BackboneSpec) -> WeightsFile | None:
    """The ImageNet checkpoint if it is already on this machine (no hashing, no network)."""
    if spec.imagenet is None:
        return None
    cached = weights_cache() / spec.imagenet.filename
    if cached.is_file():
        return WeightsFile(cached, "cache")
    packaged = _package_file(spec)
    if packaged is not None:
        return WeightsFile(packaged, f"package {spec.imagenet.package}")
    return None


def resolve_imagenet(spec: BackboneSpec) -> WeightsFile:
    """Find, verify or download the ImageNet checkpoint of `spec`; one-line error when impossible."""
    info = spec.imagenet
    if info is None:
        raise BBDeployError(f"{spec.name} has no published ImageNet weights; pass --weights PATH or random")
    local = find_offline(spec)
    if local is not None:
        expected = info.sha256 if local.source == "cache" else info.package_sha256
        if expected and not hash_matches(sha256_of(local.path), expected):
            raise BBDeployError(f"{local.path} fails its sha256 check (expected {expected}...); delete it "
                                "so that it is fetched again, or pass --weights PATH")
        return local
    cached = weights_cache() / info.filename
    if info.url is None or not info.sha256:
        raise BBDeployError(f"no ImageNet weights for {spec.name} on this machine: {info.note} "
                            f"(or save the file as {cached})")
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise BBDeployError(f"no ImageNet weights for {spec.name} on this machine and {OFFLINE_ENV} is set; "
                            f"put {info.url} at {cached}, or pass --weights PATH")
    try:
        return WeightsFile(download(info.url, cached, info.sha256), f"download {info.url}")
    except DownloadError as exc:
        raise BBDeployError(f"no ImageNet weights for {spec.name} on this machine and {exc}; pass "
                            f"--weights PATH, or put the file at {cached}") from None
