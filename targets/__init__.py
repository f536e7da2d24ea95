"""Running artifacts: the self-contained scripts a device runs (runner.py: one Runner class per runtime, the
timing loop, the device's facts; evaluate.py: outputs over given images), the latency method (bench.py)
and the devices (local, ssh, adb, qemu)."""
