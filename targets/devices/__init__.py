"""Where artifacts are benchmarked: a device string names one.

    local                        this machine
    ssh://[user@]host[:port]     a Linux board over the system OpenSSH client
    adb://SERIAL                 an Android phone over adb, with LiteRT's benchmark_model
"""

from __future__ import annotations

from bbdeploy.errors import BBDeployError

from .adb import ADBDevice
from .local import LocalDevice
from .ssh import SSHDevice

SCHEMES = ("local", "ssh://[user@]host[:port]", "adb://SERIAL")


def open_device(options):
    """The device that `options.device` names; an unknown scheme is one clear error."""
    spec = options.device
    if spec == "local":
        return LocalDevice(options.timeout)
    if spec.startswith("ssh://"):
        return SSHDevice(spec, list(options.ssh_options), options.remote_python, options.timeout)
    if spec.startswith("adb://"):
        return ADBDevice(spec, options.benchmark_binary, options.delegate)
    raise BBDeployError(f"unknown device {spec!r}; pass one of {', '.join(SCHEMES)}")
