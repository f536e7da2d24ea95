"""Does `bbdeploy bench` measure what a plain timing loop measures? Issue 6's check: the local p50
agrees with an independent loop within a factor of 1.5, per target.

The independent loop loads each artifact directly with its runtime's own API (not bbdeploy's
runner), times `timeit`-style batches of calls and takes the median per call. Both measure 1 thread.

    .venv/bin/python benchmarks/bench_method.py [--model mobilenet_v2] [--input-size 224]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import timeit
from pathlib import Path

import numpy as np

from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.targets.bench import BenchOptions, bench


def independent_call(path: Path):
    """A zero-argument call running the artifact once, built on the runtime's API alone."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        feed = {inp.name: np.zeros(inp.shape, np.float32)}
        return lambda: session.run(None, feed)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        (detail,) = interpreter.get_input_details()
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        return interpreter.invoke
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    data = np.zeros(list(compiled.input(0).shape), np.float32)
    return lambda: request.infer({0: data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = export(ExportOptions(args.model, weights="random", input_size=args.input_size, output=Path(folder)))
        paths = [Path(row["artifact"]) for row in rows]
        measured = bench(BenchOptions(artifacts=paths, threads=1, warmup=10, runs=100, min_time=2.0))
        print(f"{args.model} {args.input_size}px fp32, 1 thread, on {measured['device']['cpu']}")
        print(f"{'target':10s} {'bench p50 ms':>13s} {'loop median ms':>15s} {'ratio':>6s}")
        for path, row in zip(paths, measured["results"]):
            call = independent_call(path)
            for _ in range(10):
                call()
            per_call = [t / 10 * 1000 for t in timeit.repeat(call, number=10, repeat=30)]
            loop = statistics.median(per_call)
            ratio = row["latency_ms"]["p50"] / loop
            verdict = "ok" if 1 / 1.5 <= ratio <= 1.5 else "OUTSIDE 1.5x"
            print(f"{row['target']:10s} {row['latency_ms']['p50']:13.3f} {loop:15.3f} {ratio:6.2f} {verdict}")


if __name__ == "__main__":
    main()
