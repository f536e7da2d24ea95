"""`qemu://pi5`, `qemu://pi4`: an emulated arm64 board on this machine (see emulated_board.py).

The runner runs as on a board, in one emulated Python process; the board's rows are marked
`emulated` by the runner itself (it reads the kernel's machine), their numerics are the ARM ones and
their latency means nothing."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bbdeploy.errors import BBDeployError

from . import emulated_board
from .local import ProcessDevice

DEVICE = re.compile(r"^qemu://(?P<board>[^/\s]*)/?$")


def board_of(spec: str) -> str:
    match = DEVICE.match(spec)
    if not match:
        raise BBDeployError(f"device {spec!r} is not qemu://BOARD; pass one of "
                            f"{', '.join(f'qemu://{b}' for b in emulated_board.BOARDS)}")
    return emulated_board.board_named(match["board"]).name


class QemuDevice(ProcessDevice):
    """Checked when opened (the board's name, qemu); prepared on first use, when it is not cached yet,
    telling `progress(step, done, total)`."""

    def __init__(self, spec: str, timeout: float, progress=None):
        super().__init__(timeout)
        self.spec = self.where = spec
        self.name = board_of(spec)
        self.qemu = emulated_board.qemu_binary()
        self.progress = progress or (lambda step, done, total: None)
        self._board = None

    @staticmethod
    def check_address(spec: str) -> None:
        """One line when `spec` names no emulated board bbdeploy knows."""
        board_of(spec)

    @staticmethod
    def identity(spec: str) -> dict:
        """The board and everything its userland holds (the runtimes' versions among it)."""
        return {"url": spec, "board": emulated_board.userland_key(emulated_board.runtime_pins())}

    @property
    def board(self) -> emulated_board.PreparedBoard:
        if self._board is None:
            self._board = emulated_board.prepare(self.name, self.progress)
        return self._board

    def interpreter(self) -> tuple[list[str], dict | None]:
        return self.board.command(self.qemu), {**os.environ, **self.board.environment}

    def check(self, entry: dict) -> None:
        """A target whose runtime the board cannot install is refused before anything runs."""
        from bbdeploy.exporters.registry import TARGETS

        why = emulated_board.refusal(TARGETS[entry["target"]])
        if why is not None:
            raise BBDeployError(f"{Path(entry['artifact']).name} is a {entry['target']} artifact, and {self.spec} "
                                f"cannot run it: {why}; measure it over ssh:// on a board with its runtime")
