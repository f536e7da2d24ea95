"""The device's state around timed runs (issue 30): the runner's reader on recorded devices (a
Raspberry Pi 5 tree and an Android phone's adb dump, tests/fixtures/device_state/*/SOURCE.md), on this
machine and over the loopback ssh board; the notes a change of state gives; the cool-down wait,
pinning, sustained runs and the MLPerf profile."""

from __future__ import annotations

import glob
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from bbdeploy.errors import BBDeployError
from bbdeploy.targets.bench import BenchOptions
from bbdeploy.targets.runner.device_state import Source, hottest_c, read_state, state_notes
from bbdeploy.targets.runner.timing import cool_down
from tests.conftest import FAKES, PLUMBING_TARGET, RECORDED_DEVICES, run_cli

PI5 = RECORDED_DEVICES / "raspberry_pi_5"


class Recorded(Source):
    """A recorded device's tree; its commands' outputs are files under commands/ ("vcgencmd get_throttled")."""

    def command(self, argv: list[str]) -> str | None:
        answer = self.root / "commands" / " ".join(argv)
        return answer.read_text().strip() if answer.is_file() else None


def test_the_reader_on_a_recorded_raspberry_pi_5():
    """Every value as raspberry_pi_5/SOURCE.md gives it; the Pi 5 has no passive trip (its firmware
    throttles), so no throttling point is read from its zone."""
    state = read_state(Recorded(PI5), own_process=False)
    assert state["online_cpus"] == [0, 1, 2, 3]
    assert state["cpus"] == [{"cpu": cpu, "governor": "ondemand", "cur_mhz": 2400.0, "min_mhz": 1500.0,
                              "max_mhz": 2400.0} for cpu in range(4)]
    assert state["thermal_zones"] == [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 39.478,
                                       "throttles_at_c": None}]
    assert state["pi_throttled"] == "0x0" and state["android_thermal_status"] is None
    assert state["load_average"] == [0.08, 0.12, 0.09]
    assert state_notes(state, state) == []
    only = read_state(Recorded(PI5), [2, 3], own_process=False)  # --cpus 2,3: the cores used, not all
    assert [row["cpu"] for row in only["cpus"]] == [2, 3]


def test_the_reader_on_a_recorded_android_phone_over_adb(phone, monkeypatch):
    """The real shell dump (SHELL_DUMP) run by the stand-in adb over the recorded phone's tree:
    android_pixel_9_pro/SOURCE.md. Temperatures come from the HAL's current block, not its cache."""
    from bbdeploy.targets.devices.adb import ADBDevice

    for key, value in phone["env"].items():  # the stand-in adb on PATH for this process
        monkeypatch.setenv(key, value)
    state = ADBDevice("adb://emulator-5554", FAKES / "benchmark_model", "xnnpack").state(None)
    assert state["online_cpus"] == list(range(8))
    clusters = [(row["min_mhz"], row["max_mhz"]) for row in state["cpus"]]
    assert clusters == [(820.0, 1950.0)] * 4 + [(357.0, 2600.0)] * 3 + [(700.0, 3105.0)]
    assert {row["governor"] for row in state["cpus"]} == {"sched_pixel"}
    assert state["thermal_zones"] == [
        {"zone": "hal:CPU", "type": "CPU", "temp_c": 57.9, "throttles_at_c": None},
        {"zone": "hal:SKIN", "type": "SKIN", "temp_c": 34.351, "throttles_at_c": None}]
    assert state["android_thermal_status"] == 0 and state["pi_throttled"] is None
    assert state["load_average"] == [5.41, 5.12, 4.98]


def test_a_hot_or_throttled_run_says_so_in_its_notes(tmp_path):
    """The recorded Pi copied and heated: a passive trip at 80 °C passed, the cores fell from 2400 to
    1500 MHz, the firmware's bits 0x50005 (under-voltage and throttled, now and since boot)."""
    before = read_state(Recorded(PI5), own_process=False)
    hot = tmp_path / "pi"
    shutil.copytree(PI5, hot)
    zone = hot / "sys/class/thermal/thermal_zone0"
    (zone / "trip_point_5_type").write_text("passive\n")
    (zone / "trip_point_5_temp").write_text("80000\n")
    (zone / "temp").write_text("82150\n")
    for cpu in range(4):
        (hot / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").write_text("1500000\n")
    (hot / "commands/vcgencmd get_throttled").write_text("throttled=0x50005\n")
    after = read_state(Recorded(hot), own_process=False)
    assert state_notes(before, after) == [
        "temperature past a throttling point: cpu-thermal 82.2 °C (from 39.5) >= 80.0 °C",
        "frequency fell during the runs: cpu0 2400 -> 1500 MHz, cpu1 2400 -> 1500 MHz, cpu2 2400 -> 1500 MHz, "
        "cpu3 2400 -> 1500 MHz",
        "Raspberry Pi firmware reports 0x50005: now under-voltage, throttled; since boot under-voltage, throttled"]


def _zone(folder: Path, millidegrees: int) -> Source:
    zone = folder / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{millidegrees}\n")
    return Source(folder)


def test_cooldown_waits_until_the_device_is_back_under_the_temperature_and_records_it(tmp_path):
    source = _zone(tmp_path, 71000)
    cooler = threading.Timer(1.5, lambda: (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("44000\n"))
    cooler.start()
    heard = []
    record = cool_down(lambda: hottest_c(read_state(source, own_process=False)), 45.0, 30.0,
                       lambda label, done, total: heard.append((label, total)))
    assert record["start_c"] == 71.0 and record["end_c"] == 44.0 and record["reached"] is True
    assert 1.4 <= record["waited_s"] < 10 and record["reason"] is None
    assert heard and heard[0] == ("cooling: 71.0 °C, waiting for 45.0 °C", 30)  # the progress line


def test_cooldown_is_bounded_and_says_it_gave_up(tmp_path):
    source = _zone(tmp_path, 71000)
    started = time.monotonic()
    record = cool_down(lambda: hottest_c(read_state(source, own_process=False)), 45.0, 1.5)
    assert 1.5 <= time.monotonic() - started < 5
    assert record["reached"] is False and record["end_c"] == 71.0 and record["reason"] == "still 71.0 °C after 1.5 s"


def _sysfs_of_this_machine() -> dict:
    """What this machine's sysfs says, read here independently of the runner's reader."""
    zones = sorted(glob.glob("/sys/class/thermal/thermal_zone[0-9]*/temp"))
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {"zones": len(zones), "governor": governor.read_text().strip() if governor.exists() else None,
            "online": Path("/sys/devices/system/cpu/online").read_text().strip()}


def _check_real_state(state: dict, expected: dict, threads: int) -> None:
    assert state["online_cpus"] is not None and len(state["online_cpus"]) == os.cpu_count()
    assert len(state["thermal_zones"]) == expected["zones"]  # this VM: none, so []
    assert state["cpus"][0]["governor"] == expected["governor"]  # this VM: no cpufreq, so None
    assert len(state["load_average"]) == 3 and all(x >= 0 for x in state["load_average"])
    assert state["process_threads"] >= threads and state["affinity"]


def test_local_rows_carry_the_state_of_this_machine(small_artifacts):
    artifact = small_artifacts[(PLUMBING_TARGET, "fp32")]
    result = run_cli("bench", str(artifact), "--runs", "5", "--warmup", "1", "--min-time", "0", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    expected = _sysfs_of_this_machine()
    for state in (row["state_before"], row["state_after"]):
        _check_real_state(state, expected, row["threads"])
    assert row["state_after"]["time"] > row["state_before"]["time"]
    assert row["cpus"] is None and row["cooldown"] is None and row["sustained"] is None


def test_ssh_rows_carry_the_state_of_the_board(sshd, small_artifacts):
    import sys

    result = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "int8")]), "--device", sshd["device"],
                     *sshd["options"], "--remote-python", sys.executable, "--runs", "5", "--warmup", "1",
                     "--min-time", "0", "--cpus", "0", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    _check_real_state(row["state_before"], _sysfs_of_this_machine(), 1)  # the board is this machine
    assert row["cpus"] == [0] and row["state_after"]["affinity"] == [0]


def test_cpus_pins_every_thread_of_the_runner(small_artifacts):
    """The affinity is read on the device from every thread's /proc status after its runtime loaded
    (numpy's BLAS pool starts at import, before the pin: it is pinned too)."""
    last = os.cpu_count() - 1
    artifacts = [str(small_artifacts[(target, "int8")]) for target, _ in small_artifacts if _ == "int8"]
    result = run_cli("bench", *artifacts, "--runs", "3", "--warmup", "1", "--min-time", "0", "--threads", "2",
                     "--cpus", str(last), "--json")
    assert result.returncode == 0, result.stderr
    for row in json.loads(result.stdout)["results"]:
        assert row["cpus"] == [last] and row["state_after"]["affinity"] == [last], row["target"]
        assert not any("pinned" in warning for warning in row["warnings"])


@pytest.mark.parametrize("cpus, says", [
    ("99", "error: this machine: cannot pin to cpus 99: this device's online cpus are "),
    ("two", "error: --cpus 'two' is not a list of cores; pass e.g. 2,3 or 0-3"),
])
def test_cpus_the_device_refuses_is_one_line(small_artifacts, cpus, says):
    result = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--cpus", cpus)
    assert result.returncode == 2 and result.stderr.startswith(says), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cooldown_and_max_temp_record_the_wait_or_why_there_was_none(small_artifacts):
    """This VM has no thermal zone: the wait is recorded as not done, with its reason, never a guess
    (on a machine with zones, the temperatures it read; the wait itself is tested on a tree above)."""
    artifacts = [str(small_artifacts[(PLUMBING_TARGET, p)]) for p in ("fp32", "int8")]
    result = run_cli("bench", *artifacts, "--runs", "3", "--warmup", "1", "--min-time", "0", "--cooldown", "5",
                     "--max-temp", "60", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    for row in rows:
        if _sysfs_of_this_machine()["zones"]:
            assert row["cooldown"]["target_c"] == 60.0 and row["cooldown"]["start_c"] is not None
            continue
        assert row["cooldown"] == {"target_c": 60.0, "limit_s": 5.0, "start_c": None, "end_c": None, "waited_s": 0.0,
                                   "reached": None, "reason": "no temperature sensor on this device: not waited"}
        assert "cooldown: no temperature sensor on this device: not waited" in row["warnings"]
    # one after another: the second artifact's timed runs start after the first one's end
    assert rows[1]["state_before"]["time"] >= rows[0]["state_after"]["time"]


def test_sustained_reports_the_first_and_the_last_window(small_artifacts):
    result = run_cli("bench", str(small_artifacts[(PLUMBING_TARGET, "fp32")]), "--sustained", "20", "--runs", "5",
                     "--warmup", "1", "--min-time", "0", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    sustained = row["sustained"]
    assert 20 <= sustained["seconds"] < 25 and sustained["window_s"] == pytest.approx(sustained["seconds"] / 3)
    for window in (sustained["first"], sustained["last"]):
        assert window["runs"] > 10 and 0 < window["p50"] <= window["p90"]
    assert sustained["first"]["runs"] + sustained["last"]["runs"] < row["runs"]  # the middle third is in neither
    assert sustained["last_over_first_p50"] == pytest.approx(sustained["last"]["p50"] / sustained["first"]["p50"])
    assert isinstance(sustained["slope_ms_per_min"], float)
    assert row["state_after"]["time"] - row["state_before"]["time"] >= 20


def test_mlperf_profile_asks_for_1024_runs_and_60_seconds():
    options = BenchOptions(artifacts=[Path("a.onnx")], profile="mlperf").validate()
    assert (options.runs, options.min_time) == (1024, 60.0)
    more = BenchOptions(artifacts=[Path("a.onnx")], profile="mlperf", runs=5000, min_time=90).validate()
    assert (more.runs, more.min_time) == (5000, 90)
    with pytest.raises(BBDeployError, match="unknown --profile 'fast'; pass one of mlperf"):
        BenchOptions(artifacts=[Path("a.onnx")], profile="fast").validate()
