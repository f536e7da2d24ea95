"""Where artifacts are benchmarked: a device string names one.

    local                      this machine
"""

from __future__ import annotations

from bbdeploy.errors import BBDeployError

from .local import LocalDevice


def open_device(options):
    """The device that `options.device` names; an unknown scheme is one clear error."""
    spec = options.device
    if spec == "local":
        return LocalDevice()
    raise BBDeployError(f"unknown device {spec!r}; pass local")
