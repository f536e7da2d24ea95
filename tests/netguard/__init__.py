"""A guard for "nothing leaves the machine" (issue 25): the environment of a user's shell with an empty
`HOME`, every name lookup, connection and started program of the Python processes in it recorded by
`sitecustomize.py` (this folder goes on their `PYTHONPATH`), and each command run under strace as well,
since C++ code (onnxruntime's telemetry sender, for one) bypasses Python's hooks."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from bbdeploy.targets.runner import RUNNERS

FOLDER = Path(__file__).resolve().parent
LOOPBACK = ("127.", "::1", "::ffff:127.", "localhost")
ANY_ADDRESS = ("0.0.0.0", "::", "")
STRACE = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect,sendto,sendmsg"]
# how strace shows an IPv4 / IPv6 peer: sin_addr=inet_addr("10.0.0.1"), inet_pton(AF_INET6, "::1", ...)
STRACE_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
# a Python audit record's target: 'host', ('host', port[, ...]) or '/unix/socket/path'
RECORDED_HOST = re.compile(r"^\(?b?'([^']*)'")
PROCESS_EVENTS = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system")
# a started program that installs packages: pip itself, `python -m pip`, ensurepip
PIP = re.compile(r"(^|[\s/'\"])(pip3?|ensurepip)(['\"\s,\]]|$)")


class OfflineGuard:
    """`command()` runs `bbdeploy ARGS` as a user would, under strace; `board_python` is the
    `--remote-python` of the loopback ssh board, guarded and traced the same way with a HOME of its
    own; `violations()` lists what reached past this machine, ran pip, or was written into either home."""

    def __init__(self, folder: Path):
        self.home, self.board_home, self.traces = folder / "home", folder / "board-home", folder / "traces"
        for path in (self.home, self.board_home, self.traces):
            path.mkdir(parents=True)
        self.log = folder / "python-network.log"
        # none of the switches bbdeploy set in this (pytest) process, none of the suite's cache settings
        set_by_bbdeploy = {name for runner in RUNNERS.values() for name in runner.OFFLINE_ENVIRONMENT}
        unset = set_by_bbdeploy | {"BBDEPLOY_CACHE_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR", "RAY_AUTH_TOKEN",
                                   "RAY_USAGE_STATS_ENABLED"}
        self.env = {name: value for name, value in os.environ.items() if name not in unset}
        self.env.update(HOME=str(self.home), NETGUARD_LOG=str(self.log),
                        PYTHONPATH=os.pathsep.join(filter(None, [str(FOLDER), os.environ.get("PYTHONPATH")])))
        self.board_python = folder / "board-python"
        board = ["env", f"HOME={self.board_home}", f"NETGUARD_LOG={self.log}", f"PYTHONPATH={FOLDER}",
                 *STRACE, "-o", str(self.traces / "board"), sys.executable]
        self.board_python.write_text(f'#!/bin/sh\nexec {shlex.join(board)} "$@"\n')
        self.board_python.chmod(0o755)
        self._commands = 0

    def command(self, *args: str, bbdeploy: tuple[str, ...] = (sys.executable, "-m", "bbdeploy"),
                cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        """`bbdeploy ARGS` (or another program) under strace, in this environment."""
        self._commands += 1
        trace = self.traces / f"{self._commands:02d}-{args[0]}"
        return subprocess.run([*STRACE, "-o", str(trace), *bbdeploy, *args], capture_output=True, text=True,
                              env=self.env, cwd=cwd, timeout=timeout)

    def violations(self) -> list[str]:
        found = []
        for line in self.log.read_text().splitlines() if self.log.exists() else []:
            record = json.loads(line)
            where = f"{record['event']} {record['target'][:80]} in {' '.join(record['argv'])[-80:]}"
            if record["event"] in PROCESS_EVENTS:
                if PIP.search(record["target"]):
                    found.append(where)
                continue
            host = RECORDED_HOST.match(record["target"])
            if host is not None and not _on_this_machine(host.group(1)):
                found.append(where)
        for trace in sorted(self.traces.iterdir()):
            for line in trace.read_text().splitlines():
                for match in STRACE_ADDRESS.finditer(line):
                    if not _on_this_machine(match.group(1) or match.group(2)):
                        found.append(f"{trace.name}: {line.strip()[:150]}")
        for home in (self.home, self.board_home):
            for path in sorted(home.rglob("*")):
                relative = path.relative_to(home)
                if path.is_file() and relative.parts[:2] != (".cache", "bbdeploy"):
                    found.append(f"written into the {home.name} folder: {relative}")
        return found


def _on_this_machine(host: str) -> bool:
    return host.startswith(LOOPBACK) or host in ANY_ADDRESS or host.startswith("/")
