"""Int8 quantization: calibration sets, post-training quantization per target, QAT, sensitivity."""
