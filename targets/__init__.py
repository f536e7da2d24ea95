"""Running artifacts: the self-contained runner a device runs (runner/: one module per runtime, the timing
loop, outputs over given images, the device's facts), the latency method (bench.py) and the devices
(local, ssh, adb, qemu) that run the runner."""
