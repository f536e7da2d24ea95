"""The stages a backbone goes through, each writing what it made with a JSON manifest: export (build,
convert or quantize, parity; `export.py`), drift against the float model here or on a device
(`drift.py`, `drift_device.py`, `metrics.py`, `drift_report.py`), and what they share: the parity
check (`parity.py`) and the manifests with their content-addressed ids (`manifest.py`)."""
