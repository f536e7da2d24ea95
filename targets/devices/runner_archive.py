"""The runner as one file a device runs: a zipapp of the `targets/runner` package.

The package holds only standard library + numpy + runtime code, so the archive needs nothing of
bbdeploy on the device. Inside it the package is `bbdeploy_runner` (one name, whatever bbdeploy's own
layout), started by a three-line `__main__.py`; Python imports it from the archive (zipimport), so the
device writes no bytecode. Built fresh for each run (milliseconds): what runs is this checkout's code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .. import runner

PACKAGE = Path(runner.__file__).parent
NAME = "bbdeploy-runner.pyz"
INSIDE = "bbdeploy_runner"
MAIN = f"import sys\nfrom {INSIDE}.__main__ import main\nsys.exit(main())\n"


def write_runner_archive(folder: Path) -> Path:
    """`folder/bbdeploy-runner.pyz`, runnable as `python bbdeploy-runner.pyz bench|evaluate ...`."""
    path = Path(folder) / NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", MAIN)
        for source in sorted(PACKAGE.rglob("*.py")):
            archive.write(source, f"{INSIDE}/{source.relative_to(PACKAGE).as_posix()}")
    return path
