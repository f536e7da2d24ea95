"""Hash-checked, atomic downloads: the cache never holds a file that did not pass its sha256 check."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_matches(digest: str, expected: str) -> bool:
    """Full digests compare whole; publishers' file names carry a prefix (torch.hub convention)."""
    return len(expected) >= 8 and digest.lower().startswith(expected.lower())


class DownloadError(Exception):
    """The file could not be fetched or did not match its published hash."""


def download(url: str, dest: Path, sha256: str, *, timeout: float = 30.0, quiet: bool = False) -> Path:
    """Fetch `url` into `dest` via a temp file in the same folder, renamed only after the hash matches.

    Whatever goes wrong (network, truncated body, wrong hash, Ctrl-C), the temp file is removed and
    `dest` is untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    received = 0
    try:
        if not quiet:
            print(f"bbdeploy: downloading {url} -> {dest}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                expected_bytes = int(response.headers.get("Content-Length") or -1)
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(f"download of {url} failed: {reason}") from None
        if expected_bytes >= 0 and received != expected_bytes:
            raise DownloadError(f"download of {url} was cut off after {received} of {expected_bytes} bytes")
        if not hash_matches(digest.hexdigest(), sha256):
            raise DownloadError(f"download of {url} has sha256 {digest.hexdigest()[:16]}..., "
                                f"expected {sha256}...; the file was discarded")
        os.replace(partial, dest)
        return dest
    finally:
        partial.unlink(missing_ok=True)
