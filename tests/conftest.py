"""Shared fixtures: an isolated weights cache, real photos, and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bbdeploy.data import sample_photos

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets an empty weights cache and no network downloads unless it asks for them."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("BBDEPLOY_CACHE_DIR", str(cache))
    monkeypatch.setenv("BBDEPLOY_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return sample_photos()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `bbdeploy ARGS` in a fresh interpreter, as a user would, capturing stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bbdeploy", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
