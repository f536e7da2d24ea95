"""An exception as the one line a result row carries."""

from __future__ import annotations

REFUSAL = "bbdeploy-runner: "  # the runner's own one-line refusal on stderr (exit status 2): what the device cannot do


def one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message; OpenVINO's messages open with the source
    locations that raised them ("Exception from src/...cpp:59:"), which say nothing to a user: skipped."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    while len(lines) > 1 and lines[0].startswith("Exception from ") and lines[0].endswith(":"):
        lines.pop(0)
    return f"{type(exc).__name__}: {lines[0][:300]}"
