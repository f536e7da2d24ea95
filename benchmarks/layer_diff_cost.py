"""What `drift --layers` costs next to a plain drift of the same images, measured in one run:

    .venv/bin/python benchmarks/layer_diff_cost.py ARTIFACT... --data DIR [--images 16]

Prints, per artifact, the median seconds of a plain drift and of a drift with --layers on the same images
(after one untimed run of each), their ratio (issue 28 asks for at most 3x) and the process's peak resident memory after each (ru_maxrss only
grows, so the figure after --layers bounds both).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

from bbdeploy.stages.drift import DriftOptions, drift

ROUNDS = 3  # timed runs of each, interleaved; the figures are their medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    for artifact in args.artifacts:
        seconds = {}
        # once each untimed (imports, first sessions: a CLI run pays them once for both), then interleaved
        for layers in (False, True) + (False, True) * ROUNDS:
            options = DriftOptions(artifacts=[artifact], data=args.data, limit=args.images, layers=layers,
                                   layer_samples=args.images)
            start = time.perf_counter()
            report = drift(options)
            seconds.setdefault(layers, []).append(time.perf_counter() - start)
        plain, with_layers = statistics.median(seconds[False][1:]), statistics.median(seconds[True][1:])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row = report["results"][0]
        print(f"{artifact.name}: {row['samples']} images, plain {plain:.1f} s, --layers {with_layers:.1f} s, "
              f"ratio {with_layers / plain:.2f}x; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
