"""A Linux board (Raspberry Pi, Jetson, ...) over SSH, through the system OpenSSH client, so that the
user's ~/.ssh/config aliases, keys, agent and jump hosts work as they do in a terminal.

The artifacts go with the runner (one zipapp) into a fresh temp folder on the device (one `tar` stream
over ssh, each artifact in a subfolder of its own so that equal names do not collide), run there in
one runner process (interleaved; for drift, its evaluate command over the crops sent along), and the folder is
removed afterwards, also when the run fails or is interrupted. Local commands are argument lists; the
one command line the remote shell sees is built with every piece quoted. ssh's own failure (exit 255)
and the runner's (its status, reported by the remote shell) are told apart.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from bbdeploy.errors import EXIT_FAILED, BBDeployError

from .local import BENCH_TOO_LONG, DRIFT_TOO_LONG, evaluation_request, parse_runner_output, runner_arguments
from .process import EXIT_MARK, check_refusal, run_streaming, runner_failure
from .runner_archive import NAME as RUNNER, write_runner_archive

DEVICE = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+)(?::(?P<port>\d{1,5}))?/?$")
CONNECT_TIMEOUT_S = 10
COMMAND_NOT_FOUND = 127  # what a POSIX shell exits with when it cannot find the command
SSH_FAILED = 255  # what ssh exits with when it fails itself (and when the remote command dies of a signal)


def ssh_option_problem(option: str) -> str | None:
    """Why `option` is not an OpenSSH `-o KEY=VALUE` option (the only form bbdeploy passes), or None."""
    if "=" not in option or option.startswith("-") or not option.partition("=")[0].strip():
        return f"{option!r} is not KEY=VALUE (an `ssh -o` option)"
    return None


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
    NO_OUTPUTS = None  # drift --device: it returns the artifacts' outputs (the runner's evaluate)

    def __init__(self, spec: str, ssh_options: list[str], remote_python: str, timeout: float):
        self.spec = spec
        user, host, port = parse_device(spec)
        command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        for option in ssh_options:
            if ssh_option_problem(option):
                raise BBDeployError(f"--ssh-option {option!r} is not KEY=VALUE; pass e.g. --ssh-option Port=2222")
            command += ["-o", option]
        if port is not None:
            command += ["-p", str(port)]
        self.base = [*command, f"{user}@{host}" if user else host, "--"]
        self.python = remote_python
        self.timeout = timeout

    @staticmethod
    def check_address(spec: str) -> None:
        """One line when `spec` is not ssh://[user@]host[:port] (nothing is connected)."""
        parse_device(spec)

    @staticmethod
    def identity(spec: str) -> dict:
        """The same board behind the same address."""
        return {"url": spec}

    def check(self, entry: dict) -> None:
        """Every target runs on a board that has its runtime."""

    def _ssh(self, remote_command: str, *, stdin: BinaryIO | None = None, timeout: float = 120) -> str:
        """Run one (already quoted) command line on the device; its stdout, or one clear error."""
        try:
            done = subprocess.run([*self.base, remote_command], stdin=stdin or subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BBDeployError(f"{self.spec} did not answer within {timeout:g} s; check that it is on and "
                                "reachable", EXIT_FAILED) from None
        except FileNotFoundError:
            raise BBDeployError("no `ssh` command here; install the OpenSSH client (apt-get install openssh-client)")
        stderr = done.stderr.decode(errors="replace").strip().splitlines()
        if done.returncode == SSH_FAILED:
            raise self._unreachable(stderr)
        if done.returncode != 0:
            last = (stderr or [f"exit code {done.returncode}"])[-1][:300]
            raise BBDeployError(f"command on {self.spec} failed: {last}", EXIT_FAILED)
        return done.stdout.decode(errors="replace")

    def _unreachable(self, stderr: list[str]) -> BBDeployError:
        """ssh itself failed: network, host key or authentication."""
        last = (stderr or ["ssh failed"])[-1]
        hint = ("check your key (ssh-copy-id) or pass --ssh-option IdentityFile=PATH"
                if "Permission denied" in last else "check the host, the port and that sshd runs there")
        return BBDeployError(f"cannot connect to {self.spec}: {last}; {hint}", EXIT_FAILED)

    def _run_script(self, folder: str, arguments: list[str], progress=None, too_long: str = BENCH_TOO_LONG,
                    step=None) -> str:
        """Run `python SCRIPT ARGS` in `folder` on the device; its stdout.

        ssh exits 255 both when it cannot connect and when the remote command dies of a signal, so the
        remote shell reports the runner's own status on stderr (EXIT_MARK) and exits 0: no mark and
        255 is ssh's failure, a mark is the runner's (a crash is its signal, with its last lines)."""
        line = (f"cd {shlex.quote(folder)} || exit 1; {shlex.join([self.python, *arguments])}; "
                f"echo \"{EXIT_MARK} $?\" >&2")
        try:
            done = run_streaming([*self.base, line], timeout=self.timeout, progress=progress, step=step)
        except FileNotFoundError:
            raise BBDeployError("no `ssh` command here; install the OpenSSH client (apt-get install openssh-client)")
        if done.timed_out:
            raise BBDeployError(too_long.format(timeout=self.timeout), EXIT_FAILED)
        marks = [index for index, text in enumerate(done.stderr) if text.startswith(EXIT_MARK + " ")]
        if not marks:
            if done.returncode == SSH_FAILED:
                raise self._unreachable(done.stderr)
            last = (done.stderr or [f"exit code {done.returncode}"])[-1][:300]
            raise BBDeployError(f"command on {self.spec} failed: {last}", EXIT_FAILED)
        status, before = int(done.stderr[marks[-1]].split()[1]), done.stderr[:marks[-1]]
        if status == COMMAND_NOT_FOUND:
            last = (before or ["command not found"])[-1][:300]
            raise BBDeployError(f"a command is missing on {self.spec}: {last} (if it is Python, pass "
                                "--remote-python PATH to the board's Python with the runtimes)", EXIT_FAILED)
        if status != 0:
            check_refusal(self.spec, status, before)
            raise BBDeployError(runner_failure(self.spec, status, before), EXIT_FAILED)
        return done.stdout

    def run(self, entries: list[dict], options, step=None) -> tuple[list[dict], dict]:
        arguments = runner_arguments([f"{i}/{Path(e['artifact']).name}" for i, e in enumerate(entries)], options)
        with self._session([e["files"] for e in entries], {}) as folder:
            stdout = self._run_script(folder, [RUNNER, *arguments], step=step)
        return parse_runner_output(stdout, self.spec, entries)

    def evaluate(self, entries: list[dict], jobs: list[dict], settings: dict, progress=None) -> tuple[list[dict], dict]:
        """Outputs of every job's artifact on its images (the runner's evaluate there), with its facts.
        Each distinct image file travels once, whatever the number of artifacts that read it."""
        images = {path: f"images-{k}.npy" for k, path in enumerate(dict.fromkeys(job["images"] for job in jobs))}
        names = {}  # an artifact that two jobs run (drift --layers on OpenVINO): its first folder
        for index, job in enumerate(jobs):
            names.setdefault(job["artifact"], f"{index}/{Path(job['artifact']).name}")
        request = evaluation_request(jobs, settings, lambda index, path: images.get(path) or names[path])
        extra = {name: path for path, name in images.items()}
        with tempfile.TemporaryDirectory(prefix="bbdeploy-request-") as local:
            (Path(local) / "request.json").write_text(json.dumps(request))
            extra["request.json"] = Path(local) / "request.json"
            with self._session([e["files"] for e in entries], extra) as folder:
                stdout = self._run_script(folder, [RUNNER, "evaluate", "request.json"], progress, DRIFT_TOO_LONG)
        return parse_runner_output(stdout, self.spec, entries)

    @contextlib.contextmanager
    def _session(self, artifacts: list[list[Path]], extra: dict[str, Path]):
        """A fresh temp folder on the device holding the runner, the artifacts (artifact i in subfolder
        i) and `extra` files by name; removed afterwards, also when the run fails or is interrupted."""
        folder = self._ssh("mktemp -d -t bbdeploy.XXXXXXXX").strip()
        if not folder.startswith("/"):
            raise BBDeployError(f"{self.spec} gave no temp folder (mktemp printed {folder!r})", EXIT_FAILED)
        try:
            with tempfile.TemporaryFile() as bundle:
                _bundle(bundle, artifacts, extra)
                bundle.seek(0)
                self._ssh(f"tar -x -f - -C {shlex.quote(folder)}", stdin=bundle, timeout=600)
            yield folder
        finally:
            self._cleanup(folder)

    def _cleanup(self, folder: str) -> None:
        """Remove the device's temp folder; a failure here must not hide the run's own error."""
        try:
            subprocess.run([*self.base, f"rm -rf -- {shlex.quote(folder)}"], capture_output=True, timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            pass


def _bundle(stream, artifacts: list[list[Path]], extra: dict[str, Path]) -> None:
    """A tar archive of the runner, the files of artifact i in subfolder i, and `extra` by name."""
    with tarfile.open(fileobj=stream, mode="w") as archive, tempfile.TemporaryDirectory() as folder:
        archive.add(str(write_runner_archive(Path(folder))), arcname=RUNNER)
        for index, files in enumerate(artifacts):
            for path in files:
                archive.add(str(path), arcname=f"{index}/{Path(path).name}")
        for name, path in extra.items():
            archive.add(str(path), arcname=name)
