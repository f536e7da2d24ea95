"""Int8 MNN with MNN's own offline quantizer (quantized.out, through `exporters/mnn_tools.py`).

The float model (batch norm folded, weights already GPTQ-rounded on MNN's grid by bbdeploy) is
converted to a float .mnn; the quantizer then runs it on the calibration inputs, written as MNN's
"sequence" samples (one folder per sample: input.txt with the preprocessed floats and input.json
with the shape), and writes int8 weights (per output channel, symmetric: MAX_ABS, max|w| / 127) and
int8 activations.

MNN's "sequence" reader has a catch: with `batch_size` B each EMA step takes B sample folders and
keeps the last one alone, reading a B-sample input from it (from a one-sample file, the rest stays
zero). bbdeploy's graphs have a static batch, so B is the artifact's batch, each folder holds one
whole batch, and each batch is listed B times (links) so that every batch is one step.
Measured on EfficientNet-Lite0 (ImageNet weights, built-in crops, the 112 evaluation images, AVX-512
VNNI CPU), top-1 agreement / confident agreement / cosine / SQNR with the float model:
  EMA over 100 crops, GPTQ weights                 0.955 / 1.000 / 0.9971 / 22.2 dB  (the default)
  EMA over 300 crops, GPTQ weights                 0.875 / 0.885 / 0.9961 / 21.0 dB
  EMA read as B = 32 (31 of 32 inputs zero), 300   0.884 / 1.000 / 0.9875 / 16.3 dB
  the same, nearest weights + bias correction      0.902 / 1.000 / 0.9860 / 15.9 dB
  ADMM activations, GPTQ weights, 300              0.705 / 0.827 / 0.9766 / 13.3 dB
EMA's moving average of each step's range narrows as steps go on (300 steps flipped 6 of the 52
confident images), so it takes at most EMA_STEPS batches of the calibration set (a choice made on the
figures above, not understood further yet).
KL, MNN's documented default, crashes the quantizer of the MNN 3.6.1 wheel (segmentation fault), so
it is not offered. The other route the converter has, fusing onnxruntime's QDQ model into int8
convolutions (which would carry onnxruntime's asymmetric activation ranges), aborts MNN 3.6.1's
converter on every QDQ model tried (it permutes the activations' DequantizeLinear as if they were
convolution weights: "Error for compute convolution shape", then std::out_of_range).
"""

from __future__ import annotations

import json
import shutil
from itertools import islice
from pathlib import Path

import numpy as np

EMA_STEPS = 100  # batches EMA averages over (see above)


def quantize(model, calibration, *, subset_size: int, sample, out_path: Path, layout: str, method: str,
             io: str, keep_float: list[str], bias_correction: bool) -> dict:
    """Convert `model` to a float .mnn next to `out_path`, write `subset_size` batches of
    `calibration` as MNN samples and quantize with `method` activation ranges (ema or admm)."""
    from bbdeploy.exporters.mnn import convert, run_tool

    float_path = out_path.with_name(f"float_{out_path.name}")
    convert(model, sample, float_path, precision="fp32", layout=layout)
    samples = out_path.with_name(f"{out_path.stem}.samples")
    batch = int(sample.shape[0])
    steps = min(subset_size, EMA_STEPS) if method == "ema" else subset_size
    count = write_samples(islice(calibration, steps), samples, batch)
    skipped = op_names_of_layers(model, float_path, keep_float)
    config = {"path": str((samples / "steps").resolve()), "used_sample_num": count * batch, "input_type": "sequence",
              "feature_quantize_method": method.upper(), "weight_quantize_method": "MAX_ABS", "batch_size": batch,
              "feature_clamp_value": 127, "weight_clamp_value": 127, "skip_quant_op_names": skipped}
    config_path = out_path.with_name(f"{out_path.stem}.quant.json")
    config_path.write_text(json.dumps(config))
    run_tool("quantize", [float_path, out_path, config_path])
    shutil.rmtree(samples)
    if not out_path.is_file():
        raise RuntimeError("MNN quantize wrote no model")
    return {"tool": "MNN offline quantizer (quantized.out)", "weights": "int8 per-channel symmetric (MAX_ABS)",
            "activations": f"int8 per-tensor ({method} ranges)", "batches": count, "skip_quant_op_names": skipped}


def write_samples(batches, folder: Path, batch: int) -> int:
    """Each batch as MNN's quantizer reads "sequence" input: a folder with input.txt (whitespace-separated
    floats, all the digits float32 needs) and input.json (the shape), listed `batch` times under
    folder/steps (see the module docstring). Returns the number of batches."""
    (folder / "steps").mkdir(parents=True)
    count = 0
    for count, array in enumerate(batches, 1):
        stored = folder / "batches" / f"{count:05d}"
        stored.mkdir(parents=True)
        np.ascontiguousarray(array, dtype=np.float32).tofile(stored / "input.txt", sep=" ", format="%.9g")
        (stored / "input.json").write_text(json.dumps({"inputs": [{"name": "input", "shape": list(array.shape)}]}))
        for copy in range(batch):
            (folder / "steps" / f"{count:05d}_{copy:03d}").symlink_to(stored.absolute(), target_is_directory=True)
    return count


def op_names_of_layers(model, float_path: Path, layers: list[str]) -> list[str]:
    """The MNN op names of `layers` (conv/linear modules): MNN names ops after ONNX tensors, not
    modules, and turns linear layers into convolutions; its convolutions keep the order of the
    model's conv/linear layers, which is how they are matched here (the counts must agree)."""
    if not layers:
        return []
    from bbdeploy.targets.runner.runtimes.mnn import quiet_import_mnn

    from .bias_correction import LAYERS

    order = [name for name, module in model.named_modules() if isinstance(module, LAYERS)]
    convolutions = [var.name for var in quiet_import_mnn().expr.load_as_list(str(float_path))
                    if var.op_type in ("Convolution", "ConvolutionDepthwise")]
    if len(convolutions) != len(order):
        raise RuntimeError(f"found {len(convolutions)} MNN convolutions for {len(order)} conv/linear layers; "
                           "--keep-float cannot name them")
    return [convolutions[order.index(layer)] for layer in layers]
