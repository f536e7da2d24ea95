"""What a figure was measured on, read on the device itself: CPU, board, OS, Python, emulation."""

from __future__ import annotations

import os
import platform
from pathlib import Path


# CPU part numbers of Arm Ltd. cores (implementer 0x41), as ARM kernels list them in /proc/cpuinfo
ARM_CORES = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
             "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2"}
# a kernel that runs these user-space machines natively (compat mode is not emulation)
NATIVE_COMPAT = {"x86_64": ("i386", "i486", "i586", "i686"), "aarch64": ("armv7l", "armv8l", "arm")}


def emulated_on() -> str | None:
    """The kernel's machine when this process is emulated (qemu-user translates uname's machine, not
    the kernel's own /proc/sys/kernel/arch), else None."""
    try:
        kernel = Path("/proc/sys/kernel/arch").read_text().strip()
    except OSError:
        return None
    machine = platform.machine()
    if not kernel or kernel == machine or machine in NATIVE_COMPAT.get(kernel, ()):
        return None
    return kernel


def device_facts() -> dict:
    """What the numbers were measured on: CPU model, cores, OS, Python, emulation, temperature,
    throttling; read here, on the device."""
    facts = {"cpu": platform.processor() or platform.machine(), "machine": platform.machine(), "model": None,
             "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
             "emulated": False, "kernel_machine": None, "cpu_temperature_c": None, "throttled": None}
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        if fields.get("model name"):
            facts["cpu"] = fields["model name"]
        elif fields.get("CPU implementer") == "0x41" and fields.get("CPU part") in ARM_CORES:
            facts["cpu"] = ARM_CORES[fields["CPU part"]]
        elif fields.get("Hardware"):
            facts["cpu"] = fields["Hardware"]
        facts["model"] = fields.get("Model") or None  # Raspberry Pi kernels: the board
    except OSError:
        pass
    kernel = emulated_on()
    if kernel is not None:
        facts.update(emulated=True, kernel_machine=kernel)
    try:
        facts["cpu_temperature_c"] = int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:  # Raspberry Pi firmware: bit 0 under-voltage, 1 frequency capped, 2 throttled now
        facts["throttled"] = Path("/sys/devices/platform/soc/soc:firmware/get_throttled").read_text().strip()
    except OSError:
        pass
    return facts
