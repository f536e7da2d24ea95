"""The state of the device around a timed run: what makes two latencies comparable or not.

Read from the places Linux and Android expose it (no guess where a value is absent: `None`):

    online cores            /sys/devices/system/cpu/online
    governor, frequencies   /sys/devices/system/cpu/cpuN/cpufreq/{scaling_governor,scaling_cur_freq,...}
    temperatures, trips     /sys/class/thermal/thermal_zoneN/{type,temp,trip_point_K_type,trip_point_K_temp}
    load average            /proc/loadavg
    Raspberry Pi firmware   `vcgencmd get_throttled` (or the firmware's sysfs file)
    Android                 `dumpsys thermalservice` ("Thermal Status: N")

One reader for every device: `read_state(source, cpus)` takes a `Source` (files under a root on this
device, or the sections of one adb shell dump, `targets/devices/adb.py`), so a recorded tree tests
exactly what runs on a board.
"""

from __future__ import annotations

import fnmatch
import glob as globbing
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

CPU_FILES = ("scaling_governor", "scaling_cur_freq", "scaling_min_freq", "scaling_max_freq")
ZONE_TYPES = "/sys/class/thermal/thermal_zone[0-9]*/type"
PI_THROTTLED_FILES = "/sys/devices/platform/soc*/soc*:firmware/get_throttled"
THROTTLING_TRIPS = ("passive", "hot")  # trip types at which the kernel slows the CPU down (critical: it powers off)
# Raspberry Pi firmware bits (`vcgencmd get_throttled`): now (0-3) and since boot (16-19)
PI_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}
ANDROID_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}


class Source:
    """Files and commands of this device; `root` lets a recorded tree stand in for `/`."""

    def __init__(self, root: str | Path = "/"):
        self.root = Path(root)

    def read(self, path: str) -> str | None:
        try:
            return (self.root / path.lstrip("/")).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def glob(self, pattern: str) -> list[str]:
        base = str(self.root).rstrip("/")
        return sorted("/" + os.path.relpath(p, base) for p in globbing.glob(base + pattern))

    def command(self, argv: list[str]) -> str | None:
        """A status command's output (`vcgencmd get_throttled`), None where it is not installed."""
        if str(self.root) != "/" or shutil.which(argv[0]) is None:
            return None
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None


# the files and commands read_state reads, printed by a device's shell in one go (`sh -c`, Android's
# `adb shell`) as sections `==> PATH` / `==> $ COMMAND`; $BBDEPLOY_STATE_ROOT: a recorded tree read instead of /
SHELL_DUMP = r"""R="$BBDEPLOY_STATE_ROOT"
for f in "$R"/sys/devices/system/cpu/online "$R"/proc/loadavg \
    "$R"/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor \
    "$R"/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_*_freq \
    "$R"/sys/class/thermal/thermal_zone[0-9]*/type "$R"/sys/class/thermal/thermal_zone[0-9]*/temp \
    "$R"/sys/class/thermal/thermal_zone[0-9]*/trip_point_[0-9]*_t*; do
  [ -r "$f" ] && echo "==> ${f#"$R"}" && cat "$f" 2>/dev/null
done
echo "==> $ dumpsys thermalservice"; dumpsys thermalservice 2>/dev/null
true
"""


class DumpSource(Source):
    """The sections SHELL_DUMP printed: a device read over one shell command (adb)."""

    def __init__(self, text: str):
        super().__init__("/")
        self.sections: dict[str, list[str]] = {}
        current = None
        for line in text.splitlines():
            if line.startswith("==> "):
                current = self.sections.setdefault(line[4:].strip(), [])
            elif current is not None:
                current.append(line)

    def read(self, path: str) -> str | None:
        lines = self.sections.get(path)
        return None if lines is None else "\n".join(lines).strip()

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.sections if not p.startswith("$ ") and fnmatch.fnmatchcase(p, pattern))

    def command(self, argv: list[str]) -> str | None:
        answer = self.read("$ " + " ".join(argv))
        return answer or None


def cpu_list(text: str | None) -> list[int] | None:
    """"0-3,6" -> [0, 1, 2, 3, 6] (the kernel's cpulist format)."""
    if not text:
        return None
    cpus = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _frequencies(source: Source, cpus: list[int]) -> list[dict]:
    """Governor and frequencies (MHz) of each core used."""
    rows = []
    for cpu in cpus:
        values = {name: source.read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}") for name in CPU_FILES}
        khz = {key: _number(values[f"scaling_{key}_freq"]) for key in ("cur", "min", "max")}
        rows.append({"cpu": cpu, "governor": values["scaling_governor"],
                     **{f"{key}_mhz": None if value is None else value / 1000 for key, value in khz.items()}})
    return rows


def _thermal_zones(source: Source) -> list[dict]:
    """Each zone's temperature and the lowest trip point at which it slows the CPU."""
    zones = []
    for type_path in source.glob(ZONE_TYPES):
        folder = type_path.rsplit("/", 1)[0]
        temp = _number(source.read(f"{folder}/temp"))
        trips = []
        for trip_type in source.glob(f"{folder}/trip_point_[0-9]*_type"):
            kind = source.read(trip_type)
            at = _number(source.read(trip_type.removesuffix("_type") + "_temp"))
            if kind in THROTTLING_TRIPS and at is not None and at > 0:
                trips.append(at / 1000)
        zones.append({"zone": folder.rsplit("/", 1)[1], "type": source.read(type_path),
                      "temp_c": None if temp is None else temp / 1000, "throttles_at_c": min(trips) if trips else None})
    return zones


def _pi_throttled(source: Source) -> str | None:
    """The firmware's throttling bits as hex, `vcgencmd get_throttled` first."""
    answer = source.command(["vcgencmd", "get_throttled"])
    if answer and "=" in answer:
        return answer.split("=", 1)[1].strip()
    for path in source.glob(PI_THROTTLED_FILES):
        value = _number(source.read(path))
        if value is not None:
            return hex(value)
    return None


HAL_TEMPERATURE = re.compile(r"Temperature\{mValue=(?P<value>[-\d.]+), mType=-?\d+, mName=(?P<name>[^,]+), mStatus=(?P<status>\d+)\}")


def _android_thermal(source: Source) -> tuple[int | None, list[dict]]:
    """Android's thermal status and its HAL's current temperatures (`dumpsys thermalservice`): the
    supported way to read them on a phone, where the sysfs zones are often closed to the shell."""
    dump = source.command(["dumpsys", "thermalservice"]) or ""
    match = re.search(r"^Thermal Status: (\d+)", dump, re.MULTILINE)
    current = dump.split("Current temperatures from HAL:", 1)
    zones = []
    if len(current) == 2:
        block = re.split(r"^\S", current[1].lstrip("\n"), maxsplit=1, flags=re.MULTILINE)[0]
        zones = [{"zone": f"hal:{m['name']}", "type": m["name"], "temp_c": float(m["value"]), "throttles_at_c": None}
                 for m in HAL_TEMPERATURE.finditer(block)]
    return (int(match[1]) if match else None), zones


def _own_threads() -> int | None:
    """Threads of this process now (the runtime's pool included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def own_affinity() -> list[int] | None:
    """The cores this process's threads may run on (all threads: a runtime's pool can set its own)."""
    allowed: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            for line in Path(f"/proc/self/task/{task}/status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    allowed.update(cpu_list(line.split(":", 1)[1].strip()) or [])
    except OSError:
        return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return sorted(allowed) or None


def read_state(source: Source, cpus: list[int] | None = None, *, own_process: bool = True) -> dict:
    """One snapshot: the cores used (`cpus`, else every online core), their governor and frequencies,
    every thermal zone, Raspberry Pi and Android throttling, the load average and, for this
    process, its threads and affinity."""
    online = cpu_list(source.read("/sys/devices/system/cpu/online"))
    used = cpus or online or []
    load = (source.read("/proc/loadavg") or "").split()[:3]
    status, hal_zones = _android_thermal(source)
    state = {"time": time.time(), "online_cpus": online, "cpus": _frequencies(source, used),
             "thermal_zones": _thermal_zones(source) or hal_zones, "pi_throttled": _pi_throttled(source),
             "android_thermal_status": status,
             "load_average": [float(x) for x in load] if len(load) == 3 else None,
             "process_threads": None, "affinity": None}
    if own_process:
        state.update(process_threads=_own_threads(), affinity=own_affinity())
    return state


def hottest_c(state: dict) -> float | None:
    temps = [zone["temp_c"] for zone in state.get("thermal_zones") or [] if zone["temp_c"] is not None]
    return max(temps) if temps else None


def state_notes(before: dict, after: dict) -> list[str]:
    """What changed during the timed runs that a reader must know: a zone past its throttling point,
    a core's frequency fell, the firmware or Android throttled."""
    notes = []
    zones_before = {zone["zone"]: zone for zone in before.get("thermal_zones") or []}
    for zone in after.get("thermal_zones") or []:
        start, at = zones_before.get(zone["zone"], {}).get("temp_c"), zone["throttles_at_c"]
        if zone["temp_c"] is not None and at is not None and zone["temp_c"] >= at:
            rose = f" (from {start:.1f})" if start is not None else ""
            notes.append(f"temperature past a throttling point: {zone['type']} {zone['temp_c']:.1f} °C{rose} >= {at:.1f} °C")
    cores_before = {row["cpu"]: row for row in before.get("cpus") or []}
    fell = [f"cpu{row['cpu']} {cores_before[row['cpu']]['cur_mhz']:.0f} -> {row['cur_mhz']:.0f} MHz"
            for row in after.get("cpus") or [] if row["cur_mhz"] is not None
            and (cores_before.get(row["cpu"]) or {}).get("cur_mhz") is not None
            and row["cur_mhz"] < 0.95 * cores_before[row["cpu"]]["cur_mhz"]]
    if fell:
        notes.append("frequency fell during the runs: " + ", ".join(fell))
    bits = _number_hex(after.get("pi_throttled"))
    if bits:
        now = [name for bit, name in PI_BITS.items() if bits & (1 << bit)]
        since = [name for bit, name in PI_BITS.items() if bits & (1 << (bit + 16))]
        notes.append(f"Raspberry Pi firmware reports {after['pi_throttled']}: now {', '.join(now) or 'nothing'}; "
                     f"since boot {', '.join(since) or 'nothing'}")
    status = after.get("android_thermal_status")
    if status:
        notes.append(f"Android thermal status {status} ({ANDROID_STATUS.get(status, 'unknown')}): the phone throttles")
    return notes


def _number_hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None
