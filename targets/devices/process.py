"""The device's runner as a child process (here, under qemu, or behind ssh): its progress lines read as
they come, its own failure (an exit status, a signal) told apart from the transport's."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bbdeploy.errors import BBDeployError

from ..runner.evaluate import PROGRESS  # the device's progress lines: `bbdeploy-progress DONE TOTAL` on stderr
from ..runner.errors import REFUSAL  # its one-line refusal (exit status 2)
from ..runner.pinning import STEP  # and its waits: `bbdeploy-step DONE TOTAL LABEL`

EXIT_MARK = "bbdeploy-runner-exit"  # `bbdeploy-runner-exit STATUS`: printed by the ssh wrapper (see ssh.py)
STDERR_KEPT = 40  # last stderr lines kept for the error message


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: list[str]  # the last lines, progress lines left out
    timed_out: bool = False


def run_streaming(command: list[str], *, timeout: float, stdin: Path | None = None, env: dict | None = None,
                  cwd: Path | None = None, progress: Callable[[int, int], None] | None = None,
                  step: Callable[[str, int, int], None] | None = None) -> Finished:
    """Run `command` (an argument list), calling `progress(done, total)` for each progress line on its
    stderr and `step(label, done, total)` for each wait it reports; stdout goes to a temp file (it may
    be large: the outputs of every image)."""
    with tempfile.TemporaryFile() as out, open(stdin or "/dev/null", "rb") as source:
        child = subprocess.Popen(command, stdin=source, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            child.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        kept: list[str] = []
        try:
            for raw in child.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith(PROGRESS + " "):
                    if progress is not None:
                        done, total = line.split()[1:3]
                        progress(int(done), int(total))
                    continue
                if line.startswith(STEP + " "):
                    if step is not None:
                        done, total, label = line.split(" ", 3)[1:4]
                        step(label, int(done), int(total))
                    continue
                kept = (kept + [line])[-STDERR_KEPT:]
            child.wait()
        finally:
            timer.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
        out.seek(0)
        return Finished(child.returncode, out.read().decode(errors="replace"), kept, expired.is_set())


def last_lines(lines: list[str], count: int = 3) -> str:
    kept = [line.strip() for line in lines if line.strip()][-count:]
    return " | ".join(kept)[-400:] if kept else "no output"


def check_refusal(where: str, status: int, stderr: list[str]) -> None:
    """The runner's own refusal of what was asked (cores the device does not have): bad input, one line."""
    refusal = [line for line in stderr if line.startswith(REFUSAL)]
    if status == 2 and refusal:
        raise BBDeployError(f"{where}: {refusal[-1].removeprefix(REFUSAL)}")


def runner_failure(where: str, status: int, stderr: list[str]) -> str:
    """One line for a runner that did not finish: killed by a signal (a crash: a negative status from
    Python's subprocess, 128 + N from a shell) or its own non-zero exit, with its last stderr lines."""
    number = -status if status < 0 else status - 128 if 128 < status < 128 + 65 else None
    if number is not None:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        return f"the runner crashed on {where}: killed by signal {number} ({name}); its last output: {last_lines(stderr)}"
    return f"the runner failed on {where} with exit status {status}: {last_lines(stderr)}"
