"""Images in: the built-in photos and the one preprocessing (`photos.py`), and a user's image folders
with their labels (`folders.py`). Calibration sets live with the quantizers (`quantization/calibration.py`)."""
