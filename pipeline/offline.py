"""Nothing leaves the machine, and nothing lands in the user's home but bbdeploy's own cache.

Several dependencies phone home or keep state in the home folder when they are imported or used
(measured with a name-lookup guard and an empty `HOME`): openvino-telemetry (OpenVINO's converter,
NNCF) sends Google Analytics events and writes `~/intel`, onnxruntime queues telemetry in
`~/.cache/Microsoft`, matplotlib writes its font cache into `~/.cache`, a Ray instance started by
`--executor ray` saves a token in `~/.ray` and reports usage (turned off in `executors.py`).
Each is turned off with the library's own switch, per process (the environment of this process, which
the processes it starts inherit), never by writing the user's global settings (a consent file in their
home). `tests/test_offline.py` runs every command under a guard that records name lookups and
connections, and fails when a library update brings a new way out.

The runtimes' switches live with their runners in `targets/runner/runtimes/`, which run alone on a board and
applies them there itself (NNCF uses OpenVINO's telemetry package, so the OpenVINO runner's switch
covers it). MNN's tool wrappers are never imported (see `exporters/mnn_tools.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

from bbdeploy.targets.runner import keep_runtimes_offline

CACHE_ENV = "BBDEPLOY_CACHE_DIR"


def cache_dir() -> Path:
    """`$BBDEPLOY_CACHE_DIR`, else `$XDG_CACHE_HOME/bbdeploy`, else `~/.cache/bbdeploy`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bbdeploy"


def keep_dependencies_offline() -> None:
    """Every runtime's and converter's telemetry off in this process and its children; applied when
    bbdeploy is imported, before any of them is."""
    keep_runtimes_offline()


def keep_dependency_state_in_cache() -> None:
    """The `bbdeploy` command's plots: matplotlib's font cache goes to bbdeploy's cache instead of
    `~/.cache/matplotlib` (unless `MPLCONFIGDIR` is set). Not applied on `import bbdeploy`: a program
    that imports bbdeploy keeps its own matplotlib settings."""
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir() / "matplotlib"))
