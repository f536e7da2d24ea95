"""Progress of a command's long steps (decoding calibration images, rounding layer by layer,
calibrating and converting per target): silent for library callers, bars on stderr for the CLI."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Step:
    """One step's counter: `advance()` per unit done; `restart()` when a pass over the same units
    begins again (toolchains that walk the calibration set twice)."""

    def advance(self, count: int = 1) -> None:
        pass

    def restart(self) -> None:
        pass

    def note(self, text: str) -> None:
        """Figures shown next to the bar (e.g. the running loss), replaced by the next note."""


class Progress:
    """Silent progress, what `bbdeploy.stages.export` gets unless its caller shows it (`BarProgress`)."""

    def say(self, message: str) -> None:
        """What the command does now, between steps."""

    def log(self, message: str) -> None:
        """A line that stays (e.g. one per training epoch)."""

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Step]:
        """A step of `total` units (None: unknown, shown as elapsed time only)."""
        yield Step()


class _BarStep(Step):
    def __init__(self, bars, task, description):
        self._bars, self._task, self._description = bars, task, description

    def advance(self, count: int = 1) -> None:
        self._bars.advance(self._task, count)

    def restart(self) -> None:
        self._bars.reset(self._task)

    def note(self, text: str) -> None:
        self._bars.update(self._task, description=f"{self._description} ({text})")


class BarProgress(Progress):
    """Rich progress bars on `console` (the CLI's private stderr), gone once a step ends. Where the
    console is no terminal (CI logs), each step prints one line with its duration instead."""

    def __init__(self, console):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bars, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self._console = console
        self._bars = Bars(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=True)
        self._status = None

    def __enter__(self) -> "BarProgress":
        if self._console.is_terminal:  # elsewhere a live display would only leave blank lines
            self._bars.start()
        self._status = self._bars.add_task("", total=None)
        return self

    def __exit__(self, *_exc) -> None:
        if self._console.is_terminal:
            self._bars.stop()

    def say(self, message: str) -> None:
        self._bars.update(self._status, description=message)

    def log(self, message: str) -> None:
        self._console.print(message, highlight=False)

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Step]:
        task = self._bars.add_task(description, total=total)
        started = time.perf_counter()
        try:
            yield _BarStep(self._bars, task, description)
        finally:
            self._bars.remove_task(task)
        if not self._console.is_terminal:
            self._console.print(f"{description}: {time.perf_counter() - started:.1f} s", highlight=False)
