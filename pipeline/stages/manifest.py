"""The JSON manifest written next to every artifact: what it is, how it was made, how good it is.

A stage's id is the sha256 of its parent's id, its own config, the tool versions and the code of
bbdeploy itself, so an identical request can be answered from disk, and any change (weights, options,
a library upgrade, an edit of a backbone, preprocessing, converter, quantizer, parity or runner
module) makes a new id.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from importlib import import_module
from importlib import metadata
from pathlib import Path

from bbdeploy.download import sha256_of
from bbdeploy.errors import BBDeployError

SCHEMA = 1
MANIFEST_SUFFIX = ".json"


def stage_id(parent: str | None, stage: str, config: dict, tools: dict) -> str:
    payload = json.dumps({"parent": parent, "stage": stage, "config": config, "tools": tools}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# The packages whose code shapes an artifact: all of bbdeploy (subpackages are inside these folders).
CODE_PACKAGES = ("bbdeploy", "bbdeploy.exporters", "bbdeploy.quantization", "bbdeploy.targets")


def code_roots() -> dict[str, Path]:
    """The folder of each of bbdeploy's packages, as installed (a wheel and a checkout alike)."""
    return {name: Path(import_module(name).__file__).parent for name in CODE_PACKAGES}


@lru_cache(maxsize=None)
def _digest_of(roots: tuple[tuple[str, Path], ...]) -> str:
    digest = hashlib.sha256()
    for package, root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def code_digest() -> str:
    """sha256 over every Python file of bbdeploy: a changed backbone, deploy form, preprocessing,
    converter, quantizer, parity check or runner is never answered with an artifact made before."""
    return _digest_of(tuple(sorted(code_roots().items())))


def tool_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of `distributions` plus bbdeploy, torch, numpy and Python."""
    versions = {"python": platform.python_version()}
    for name in ("bbdeploy", "torch", "numpy", *distributions):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_entry(path: Path) -> dict:
    """Name (relative to the manifest's folder), sha256 and size of one artifact file."""
    return {"path": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide the manifest from other users
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> dict:
    """The manifest at `path` (or next to the artifact at `path`); one-line error when unusable."""
    path = Path(path)
    if path.suffix != MANIFEST_SUFFIX:
        path = manifest_path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BBDeployError(f"no manifest {path}: pass an artifact written by `bbdeploy export`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BBDeployError(f"manifest {path} is unreadable ({exc}); export the artifact again") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BBDeployError(f"manifest {path} is not a bbdeploy manifest of schema {SCHEMA}; export again")
    return data


def files_intact(manifest: dict, folder: Path) -> bool:
    """True when every file the manifest lists is present with its recorded hash."""
    for entry in manifest.get("files", []):
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            return False
    return True
