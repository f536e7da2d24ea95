"""The one exception type the CLI turns into a single `error: ...` line instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Exit codes of the `bbdeploy` command (documented in README.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the run finished but something failed or a gate was not met
EXIT_USAGE = 2  # bad input: unknown name, unreadable file, invalid option value


class BBDeployError(Exception):
    """A failure the user can fix. The message is one line: what was wrong, what to pass instead."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name.lower(), list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
