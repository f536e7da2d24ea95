"""Converters from a PyTorch backbone to deployable files: ONNX, TFLite (LiteRT) and OpenVINO IR."""
