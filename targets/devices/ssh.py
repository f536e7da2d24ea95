"""A Linux board (Raspberry Pi, Jetson, ...) over SSH, through the system OpenSSH client, so that the
user's ~/.ssh/config aliases, keys, agent and jump hosts work as they do in a terminal.

The artifacts go with the runner script into a fresh temp folder on the device (one `tar` stream
over ssh, each artifact in a subfolder of its own so that equal names do not collide), run there in
one runner process (interleaved), and the folder is removed afterwards, also when the run fails or is
interrupted. Local commands are argument lists; the one command line the remote shell sees is built
with every piece quoted.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import tarfile
from pathlib import Path

from bbdeploy.errors import EXIT_FAILED, BBDeployError

from .local import RUNNER, parse_runner_output, runner_arguments

DEVICE = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+)(?::(?P<port>\d{1,5}))?/?$")
CONNECT_TIMEOUT_S = 10
COMMAND_NOT_FOUND = 127  # what a POSIX shell exits with when it cannot find the command


def parse_device(spec: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of `ssh://[user@]host[:port]`."""
    match = DEVICE.match(spec)
    if not match:
        raise BBDeployError(f"device {spec!r} is not ssh://[user@]host[:port]; pass e.g. ssh://pi@raspberrypi.local")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise BBDeployError(f"port {port} of device {spec!r} is out of range; pass 1 to 65535")
    return match["user"], match["host"], port


class SSHDevice:
    def __init__(self, spec: str, ssh_options: list[str], remote_python: str, timeout: float):
        self.spec = spec
        user, host, port = parse_device(spec)
        command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        for option in ssh_options:
            if "=" not in option or option.startswith("-"):
                raise BBDeployError(f"--ssh-option {option!r} is not KEY=VALUE; pass e.g. --ssh-option Port=2222")
            command += ["-o", option]
        if port is not None:
            command += ["-p", str(port)]
        self.base = [*command, f"{user}@{host}" if user else host, "--"]
        self.python = remote_python
        self.timeout = timeout

    def check(self, entry: dict) -> None:
        """Every target runs on a board that has its runtime."""

    def _ssh(self, remote_command: str, *, stdin: bytes | None = None, timeout: float = 120) -> str:
        """Run one (already quoted) command line on the device; its stdout, or one clear error."""
        try:
            done = subprocess.run([*self.base, remote_command], input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BBDeployError(f"{self.spec} did not answer within {timeout:g} s; check that it is on and "
                                "reachable", EXIT_FAILED) from None
        except FileNotFoundError:
            raise BBDeployError("no `ssh` command here; install the OpenSSH client (apt-get install openssh-client)")
        stderr = done.stderr.decode(errors="replace").strip()
        if done.returncode == 255:  # ssh itself failed: network, host key or authentication
            last = (stderr.splitlines() or ["ssh failed"])[-1]
            hint = ("check your key (ssh-copy-id) or pass --ssh-option IdentityFile=PATH"
                    if "Permission denied" in last else "check the host, the port and that sshd runs there")
            raise BBDeployError(f"cannot connect to {self.spec}: {last}; {hint}", EXIT_FAILED)
        if done.returncode != 0:
            last = (stderr.splitlines() or [f"exit code {done.returncode}"])[-1][:300]
            if done.returncode == COMMAND_NOT_FOUND:
                raise BBDeployError(f"a command is missing on {self.spec}: {last} (if it is Python, pass "
                                    "--remote-python PATH to the board's Python with the runtimes)", EXIT_FAILED)
            raise BBDeployError(f"command on {self.spec} failed: {last}", EXIT_FAILED)
        return done.stdout.decode(errors="replace")

    def run(self, entries: list[dict], options) -> tuple[list[dict], dict]:
        folder = self._ssh("mktemp -d -t bbdeploy.XXXXXXXX").strip()
        if not folder.startswith("/"):
            raise BBDeployError(f"{self.spec} gave no temp folder (mktemp printed {folder!r})", EXIT_FAILED)
        try:
            self._ssh(f"tar -x -f - -C {shlex.quote(folder)}", stdin=_bundle([e["files"] for e in entries]),
                      timeout=600)
            arguments = runner_arguments([f"{i}/{Path(e['artifact']).name}" for i, e in enumerate(entries)], options)
            line = f"cd {shlex.quote(folder)} && {shlex.join([self.python, RUNNER.name, *arguments])}"
            return parse_runner_output(self._ssh(line, timeout=self.timeout), self.spec, entries)
        finally:
            self._cleanup(folder)

    def _cleanup(self, folder: str) -> None:
        """Remove the device's temp folder; a failure here must not hide the run's own error."""
        try:
            subprocess.run([*self.base, f"rm -rf -- {shlex.quote(folder)}"], capture_output=True, timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            pass


def _bundle(artifacts: list[list[Path]]) -> bytes:
    """A tar archive of the runner script and, in subfolder i, the files of artifact i."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(str(RUNNER), arcname=RUNNER.name)
        for index, files in enumerate(artifacts):
            for path in files:
                archive.add(str(path), arcname=f"{index}/{Path(path).name}")
    return buffer.getvalue()
