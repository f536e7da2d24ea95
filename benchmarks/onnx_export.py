"""bbdeploy's ONNX export (onnxscript's optimizer less its SlicesSplit rule, exporters/onnx.py) against
torch.onnx.export(optimize=True), per backbone at 64 px on one thread: both export times, whether the two
graphs have the same nodes (op, inputs, outputs in order), and the largest output difference on onnxruntime.

    .venv/bin/python benchmarks/onnx_export.py [BACKBONE ...]   # default: the whole zoo (~2 min)
"""

import collections
import os
import sys
import time

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before onnxruntime is imported: no telemetry from this script

import torch

torch.set_num_threads(1)
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import bbdeploy  # noqa: E402
from bbdeploy.exporters import onnx as ox  # noqa: E402
from bbdeploy.quantization.bias_correction import fold_batchnorm  # noqa: E402

FOLDER = Path(tempfile.mkdtemp())
OLD, NEW = FOLDER / "torch_optimize.onnx", FOLDER / "bbdeploy.onnx"
names = sys.argv[1:] or bbdeploy.list_backbones()
x = torch.randn(1, 3, 64, 64)
for name in names:
    torch.manual_seed(0)
    m = bbdeploy.create_backbone(name).eval()
    m = fold_batchnorm(m.deploy_form() if hasattr(m, "deploy_form") else m)
    t = time.perf_counter()
    torch.onnx.export(m, (x,), str(OLD), input_names=["input"], output_names=["logits"], opset_version=18, dynamo=True, optimize=True, external_data=False, verbose=False)
    old_s = time.perf_counter() - t
    ox._RECENT.clear()
    t = time.perf_counter()
    ox.convert(m, x, NEW)
    new_s = time.perf_counter() - t
    g = [onnx.load(str(p)).graph for p in (OLD, NEW)]
    nodes = [[(n.op_type, tuple(n.input), tuple(n.output)) for n in gg.node] for gg in g]
    same_nodes = nodes[0] == nodes[1]
    hist = [collections.Counter(n.op_type for n in gg.node) for gg in g]
    outs = [ort.InferenceSession(str(p)).run(None, {"input": x.numpy()})[0] for p in (OLD, NEW)]
    print(name, f"old {old_s:.1f}s new {new_s:.1f}s", "same-nodes" if same_nodes else "DIFF-NODES", "same-hist" if hist[0] == hist[1] else f"HIST {hist[0]} vs {hist[1]}", f"maxdiff {float(np.abs(outs[0]-outs[1]).max()):.2e}", flush=True)
