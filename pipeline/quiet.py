"""Keep converters' chatter (Python prints, warnings, C++ and absl logs) out of the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path


@contextlib.contextmanager
def captured_output(log_path: Path):
    """Send everything written to file descriptors 1 and 2 into `log_path` for the duration.

    Working on descriptors rather than `sys.stdout` catches native libraries too, and keeps stdout
    clean for `--json`. Keep the log when something fails: it is what a bug report needs.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def private_stderr():
    """A text stream on a copy of stderr, which `captured_output` does not redirect (for progress)."""
    return os.fdopen(os.dup(2), "w", buffering=1)


def stderr_console():
    """A Rich console on `private_stderr()`; 120 columns when not a terminal (logs, CI) instead of 80."""
    from rich.console import Console

    stream = private_stderr()
    return Console(file=stream, width=None if stream.isatty() else 120)


def silence_known_noise() -> None:
    """Warnings that only alarm users: JAX (imported by litert-torch) warns on every os.fork() that
    multithreaded code may deadlock, but the forks here (subprocesses, converter helpers) exec or
    exit at once."""
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
