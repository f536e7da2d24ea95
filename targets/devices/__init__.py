"""Where artifacts are benchmarked: a device string names one.

    local                        this machine
    ssh://[user@]host[:port]     a Linux board over the system OpenSSH client
"""

from __future__ import annotations

from bbdeploy.errors import BBDeployError

from .local import LocalDevice
from .ssh import SSHDevice

SCHEMES = ("local", "ssh://[user@]host[:port]")


def open_device(options):
    """The device that `options.device` names; an unknown scheme is one clear error."""
    spec = options.device
    if spec == "local":
        return LocalDevice()
    if spec.startswith("ssh://"):
        return SSHDevice(spec, list(options.ssh_options), options.remote_python)
    raise BBDeployError(f"unknown device {spec!r}; pass one of {', '.join(SCHEMES)}")
