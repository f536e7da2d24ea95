"""`--weights imagenet` downloads, against a real HTTP server on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import bbdeploy
from bbdeploy.backbones import registry
from bbdeploy.errors import BBDeployError

NAME = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(bbdeploy.create_backbone(NAME).state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def server(checkpoint_bytes):
    """Serves /good.pth whole and /cut.pth with a Content-Length twice the bytes it sends."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            requests.append(self.path)
            body = checkpoint_bytes
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * (2 if self.path == "/cut.pth" else 1)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", requests
    httpd.shutdown()
    httpd.server_close()


def _serve_from(monkeypatch, url: str, sha256: str) -> None:
    """Point the backbone's official URL at the loopback server and allow downloads."""
    spec = registry.resolve(NAME)
    imagenet = dataclasses.replace(spec.imagenet, url=url, sha256=sha256)
    monkeypatch.setitem(registry._REGISTRY, NAME, dataclasses.replace(spec, imagenet=imagenet))
    monkeypatch.delenv("BBDEPLOY_OFFLINE")


def _cache_files(cache) -> list[str]:
    folder = cache / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_with_matching_hash_lands_in_the_cache(server, checkpoint_bytes, monkeypatch, isolated_cache):
    base, requests = server
    digest = hashlib.sha256(checkpoint_bytes).hexdigest()
    _serve_from(monkeypatch, f"{base}/good.pth", digest[:10])
    model = bbdeploy.create_backbone(NAME, weights="imagenet")
    filename = registry.resolve(NAME).imagenet.filename
    assert model.weights_source == f"imagenet (download {base}/good.pth: {filename})"
    assert _cache_files(isolated_cache) == [filename]
    assert hashlib.sha256((isolated_cache / "weights" / filename).read_bytes()).hexdigest() == digest
    again = bbdeploy.create_backbone(NAME, weights="imagenet")  # second time: from the cache, no request
    assert again.weights_source == f"imagenet (cache: {filename})"
    assert requests == ["/good.pth"]


def test_hash_mismatch_leaves_nothing_in_the_cache(server, monkeypatch, isolated_cache):
    base, _ = server
    _serve_from(monkeypatch, f"{base}/good.pth", "deadbeef00")
    with pytest.raises(BBDeployError, match=r"has sha256 [0-9a-f]{16}\.\.\., expected deadbeef00\.\.\.; the file was discarded"):
        bbdeploy.create_backbone(NAME, weights="imagenet")
    assert _cache_files(isolated_cache) == []


def test_interrupted_download_leaves_nothing_in_the_cache(server, checkpoint_bytes, monkeypatch, isolated_cache):
    base, _ = server
    _serve_from(monkeypatch, f"{base}/cut.pth", hashlib.sha256(checkpoint_bytes).hexdigest())
    with pytest.raises(BBDeployError, match="download of .*/cut.pth (was cut off after|failed)"):
        bbdeploy.create_backbone(NAME, weights="imagenet")
    assert _cache_files(isolated_cache) == []


def test_unreachable_server_is_one_line(monkeypatch, isolated_cache):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _serve_from(monkeypatch, f"http://127.0.0.1:{port}/x.pth", "0123456789")
    with pytest.raises(BBDeployError) as error:
        bbdeploy.create_backbone(NAME, weights="imagenet")
    assert "\n" not in str(error.value)
    assert "failed: [Errno 111] Connection refused; pass --weights PATH" in str(error.value)
    assert _cache_files(isolated_cache) == []
