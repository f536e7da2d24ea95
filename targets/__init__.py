"""Running artifacts: runtimes (onnxruntime, LiteRT, OpenVINO) and devices (local, ssh, adb)."""
