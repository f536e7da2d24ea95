"""An emulated arm64 board, prepared on first use and cached: a Debian arm64 userland with the aarch64
wheels of every target's device runtime, run under `qemu-aarch64-static` (user-mode emulation: no
chroot, no binfmt_misc, no root needed at run time).

It computes what an ARM board computes (integer kernels are exact under emulation; the runtimes pick
their ARM code paths from the CPU that qemu models) and nothing about speed: emulated inference is
20-450x slower than native here. Measured recipe (qemu 7.2, mmdebstrap 1.3): the userland ~6 s and
79 MB, the wheels ~13 s and 330 MB.

Layout under the boards folder (`BBDEPLOY_BOARDS_DIR`, default <bbdeploy cache>/boards):

    userland-<key>/         Debian + wheels + bytecode, keyed by everything it holds
    <board>-<key>/          a hard-linked copy with the board's own /proc/cpuinfo
    <board>-<key>/python    a launcher: the emulated Python, usable as ssh's --remote-python

Each is built in a temp folder and renamed into place, under a lock, so two processes never build
the same one twice and an interrupted build never looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bbdeploy.errors import EXIT_FAILED, BBDeployError

SUITE = "bookworm"  # Raspberry Pi OS 12 is Debian bookworm: its Python 3.11 and glibc 2.36
DEBIAN_PACKAGES = ("python3.11", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "ca-certificates")
MIRROR_ENV, DEFAULT_MIRROR = "BBDEPLOY_DEBIAN_MIRROR", "http://deb.debian.org/debian"
BOARDS_ENV = "BBDEPLOY_BOARDS_DIR"
PYTHON = "usr/bin/python3.11"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
# pip does not widen a --platform tag by itself: every manylinux glibc level up to bookworm's 2.36
PLATFORMS = tuple(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37))
RECIPE = 1  # bump when the way a board is built changes: a new key, a new board
# device runtimes the board cannot get from PyPI, and why: a target that needs one is refused (`refusal`)
UNINSTALLABLE = {
    "torch": "torch, which its runtime needs, has no CPU build for aarch64 on PyPI (torch 2.13's aarch64 wheel "
             "is a 427 MB CUDA build; the CPU one is on download.pytorch.org)",
}


@dataclass(frozen=True)
class Board:
    name: str
    model: str  # what the board's kernel reports as its Model
    qemu_cpu: str  # qemu's CPU model: decides the ISA extensions the runtimes see (dotprod, fp16)
    cpu_part: str  # the core's part number in /proc/cpuinfo (runner.ARM_CORES)
    features: str  # the kernel's Features line for that core


BOARDS = {board.name: board for board in (
    Board("pi5", "Raspberry Pi 5 Model B (emulated)", "cortex-a76", "0xd0b",
          "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
    Board("pi4", "Raspberry Pi 4 Model B (emulated)", "cortex-a72", "0xd08",
          "fp asimd evtstrm crc32 cpuid"),
)}
CORES = 4  # both boards have four cores


@dataclass(frozen=True)
class PreparedBoard:
    board: Board
    root: Path
    key: str  # what the board holds (the userland's key): part of a result's device identity

    def command(self, qemu: str) -> list[str]:
        """The emulated Python, as an argument list (append the script and its arguments)."""
        return [qemu, "-L", str(self.root), str(self.root / PYTHON)]

    @property
    def environment(self) -> dict[str, str]:
        return {"QEMU_CPU": self.board.qemu_cpu}

    @property
    def launcher(self) -> Path:
        return self.root / "python"


def board_named(name: str) -> Board:
    if name not in BOARDS:
        raise BBDeployError(f"unknown emulated board {name!r}; pass one of "
                            f"{', '.join(f'qemu://{b}' for b in BOARDS)}")
    return BOARDS[name]


def qemu_binary() -> str:
    """qemu's user-mode aarch64 emulator, or one line saying what to install."""
    found = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if found is None:
        raise BBDeployError("an emulated board needs qemu's user-mode emulator, and there is no qemu-aarch64-static "
                            "here; install it: apt-get install qemu-user-static")
    return found


def boards_folder() -> Path:
    from bbdeploy.offline import cache_dir

    return Path(os.environ.get(BOARDS_ENV) or cache_dir() / "boards").expanduser()


def runtime_pins() -> dict[str, str | None]:
    """numpy and every target's device runtime, at the versions installed here (None: latest), so the
    board runs what the host runs and a result can name both."""
    from bbdeploy.exporters.registry import TARGETS

    names = ["numpy", *dict.fromkeys(d for t in TARGETS.values() if refusal(t) is None for d in t.device_distributions)]
    pins = {}
    for name in names:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pins[name] = None
    return pins


def refusal(target) -> str | None:
    """Why an emulated board cannot run `target`'s artifacts (a runtime it cannot install), or None."""
    reasons = [UNINSTALLABLE[name] for name in target.device_distributions if name in UNINSTALLABLE]
    return reasons[0] if reasons else None


def userland_key(pins: dict[str, str | None]) -> str:
    described = {"suite": SUITE, "packages": DEBIAN_PACKAGES, "wheels": pins, "platforms": PLATFORMS,
                 "recipe": RECIPE}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


Progress = Callable[[str, int, int], None]  # (step, done, total)


def prepare(name: str, progress: Progress = lambda step, done, total: None) -> PreparedBoard:
    """The emulated board `name`, built now if it is not in the boards folder yet."""
    board = board_named(name)
    qemu_binary()
    pins = runtime_pins()
    key = userland_key(pins)
    folder = boards_folder()
    target = folder / f"{board.name}-{key}"
    if (target / PYTHON).is_file():
        return PreparedBoard(board, target, key)
    if os.environ.get("BBDEPLOY_OFFLINE") == "1":
        raise BBDeployError(f"qemu://{board.name} is not prepared in {folder} and BBDEPLOY_OFFLINE=1 forbids "
                            "fetching its Debian userland and wheels; unset BBDEPLOY_OFFLINE once to prepare it")
    if shutil.which("mmdebstrap") is None:
        raise BBDeployError("an emulated board is prepared with mmdebstrap, and there is none here; install it: "
                            "apt-get install mmdebstrap")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then use its work
        userland = folder / f"userland-{key}"
        if not (userland / PYTHON).is_file():
            _build(userland, lambda staging: _make_userland(staging, pins, progress))
        if not (target / PYTHON).is_file():
            progress(f"qemu://{board.name}: board", 3, 4)
            _build(target, lambda staging: _make_board(staging, userland, board, target))
    progress(f"qemu://{board.name}: ready", 4, 4)
    return PreparedBoard(board, target, key)


def _build(final: Path, make: Callable[[Path], None]) -> None:
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        make(staging)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _run(step: str, command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = ((done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
        raise BBDeployError(f"preparing the emulated board failed at {step}: {last}", EXIT_FAILED)


def _make_userland(root: Path, pins: dict[str, str | None], progress: Progress) -> None:
    progress("emulated board: Debian arm64 userland (mmdebstrap)", 0, 4)
    mirror = os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    _run("mmdebstrap", ["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
                        f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(root), mirror])
    progress("emulated board: aarch64 wheels of the runtimes (pip)", 1, 4)
    platforms = [argument for tag in PLATFORMS for argument in ("--platform", tag)]
    requirements = [name if version is None else f"{name}=={version}" for name, version in pins.items()]
    from bbdeploy.offline import cache_dir

    _run("pip", [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--cache-dir", str(cache_dir() / "pip"), "--target", str(root / SITE_PACKAGES), *platforms,
                 "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                 *requirements])
    progress("emulated board: bytecode", 2, 4)
    # compiled once here (the emulated interpreter would take 5x longer on every import without it);
    # bytecode is the same on every machine for one Python minor version
    compiler = [sys.executable] if sys.version_info[:2] == (3, 11) else [qemu_binary(), "-L", str(root), str(root / PYTHON)]
    _run("compileall", [*compiler, "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/",
                        str(root / "usr/lib/python3.11"), str(root / SITE_PACKAGES)])


def _make_board(root: Path, userland: Path, board: Board, final: Path) -> None:
    """A hard-linked copy of the userland (no space taken) with the board's CPU in /proc/cpuinfo: qemu
    serves the host's x86 one unless the root has its own, and onnxruntime's cpuinfo crashes on it."""
    root.rmdir()
    shutil.copytree(userland, root, symlinks=True, copy_function=os.link)
    (root / "proc").mkdir(exist_ok=True)
    cores = "".join(f"processor\t: {index}\nBogoMIPS\t: 108.00\nFeatures\t: {board.features}\n"
                    f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: {board.cpu_part}\n"
                    "CPU revision\t: 1\n\n" for index in range(CORES))
    (root / "proc" / "cpuinfo").write_text(f"{cores}Model\t\t: {board.model}\n")
    launcher = root / "python"
    command = shlex.join(PreparedBoard(board, final, "").command(qemu_binary()))
    launcher.write_text(f"#!/bin/sh\n# the emulated {board.name}'s Python (bbdeploy's emulated board)\n"
                        f"QEMU_CPU={board.qemu_cpu} exec {command} \"$@\"\n")
    launcher.chmod(0o755)
