"""Where artifacts are benchmarked and evaluated: a device string names one.

    local                        this machine
    ssh://[user@]host[:port]     a Linux board over the system OpenSSH client
    adb://SERIAL                 an Android phone over adb, with LiteRT's benchmark_model (latency only)
    qemu://pi5, qemu://pi4       an emulated arm64 board here: ARM numerics, no meaningful latency
"""

from __future__ import annotations

from bbdeploy.errors import BBDeployError

from .adb import ADBDevice
from .local import LocalDevice
from .qemu import QemuDevice
from .ssh import SSHDevice

SCHEMES = ("local", "ssh://[user@]host[:port]", "adb://SERIAL", "qemu://pi5")
DEVICE_KEYS = ("machine", "cpu", "model", "cores", "os", "python", "emulated", "kernel_machine")


def where_measured(name: str, facts: dict | None) -> dict:
    """The device a drift or bench row was measured on, as the device itself reported it (every row
    carries it)."""
    facts = facts or {}
    return {"name": name, **{key: facts.get(key) for key in DEVICE_KEYS}, "emulated": bool(facts.get("emulated"))}


# each device kind by the start of its device string (`local` is the whole string): one row per kind,
# each satisfying bbdeploy.interfaces.Device (tests/test_targets.py)
KINDS = {"local": LocalDevice, "ssh://": SSHDevice, "adb://": ADBDevice, "qemu://": QemuDevice}


def device_class(spec: str) -> type:
    """The class of the device `spec` names; an unknown scheme is one clear error."""
    if spec == "local":
        return LocalDevice
    for scheme, kind in KINDS.items():
        if scheme.endswith("://") and spec.startswith(scheme):
            return kind
    raise BBDeployError(f"unknown device {spec!r}; pass one of {', '.join(SCHEMES)}")


def check_returns_outputs(spec: str) -> None:
    """drift --device needs the device to send its outputs back: one line where it cannot."""
    kind = device_class(spec)
    if kind.NO_OUTPUTS is not None:
        raise BBDeployError(kind.NO_OUTPUTS.format(spec=spec))


def device_identity(spec: str) -> dict:
    """What a result measured on `spec` is a property of (a cache key): see each class's identity()."""
    return device_class(spec).identity(spec)


def open_device(options, progress=None):
    """The device that `options.device` names. `progress(step, done, total)` hears of a first-use
    preparation (the emulated board)."""
    kind, spec = device_class(options.device), options.device
    if kind is SSHDevice:
        return SSHDevice(spec, list(options.ssh_options), options.remote_python, options.timeout)
    if kind is ADBDevice:
        return ADBDevice(spec, options.benchmark_binary, options.delegate)
    if kind is QemuDevice:
        return QemuDevice(spec, options.timeout, progress)
    return LocalDevice(options.timeout)
