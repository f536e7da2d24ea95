"""The runner's command line, what a device runs (one JSON object on stdout):

    bench ARTIFACT... [--threads N] [--warmup W] [--runs R] [--min-time S] [--exec-precision P]
                      [--cpus 2,3] [--cooldown S] [--max-temp C] [--sustained S]
    evaluate REQUEST.json      (progress lines on stderr; see evaluate.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import evaluate as evaluation
from .artifact import EXEC_PRECISIONS, keep_runtimes_offline
from .device_state import cpu_list
from .errors import REFUSAL
from .facts import device_facts
from .pinning import STEP, PinningRefused, pin
from .timing import measure, peak_rss_bytes


def _step(label: str, done: int, total: int) -> None:
    print(f"{STEP} {done} {total} {label}", file=sys.stderr, flush=True)


def _bench(args: argparse.Namespace) -> dict:
    cpus = cpu_list(args.cpus) if args.cpus else None
    if cpus is not None:
        pin(cpus)  # before any runtime starts its threads: they inherit the mask
    outcomes = measure(args.artifacts, threads=args.threads, warmup=args.warmup, runs=args.runs,
                       min_time=args.min_time, exec_precision=args.exec_precision, sustained=args.sustained,
                       cooldown=args.cooldown, max_temp=args.max_temp, cpus=cpus, step=_step)
    return {"device": device_facts(), "peak_rss_bytes": peak_rss_bytes(), "outcomes": outcomes}


def _evaluate(args: argparse.Namespace) -> dict:
    path = Path(args.request)

    def say(done: int, total: int) -> None:
        print(f"{evaluation.PROGRESS} {done} {total}", file=sys.stderr, flush=True)

    outcomes = evaluation.evaluate(json.loads(path.read_text()), path.parent, say)
    return {"device": device_facts(), "outcomes": outcomes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bbdeploy-runner", description="Run deployed artifacts with their own runtimes.")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="time artifacts, interleaved")
    bench.add_argument("artifacts", nargs="+")
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--warmup", type=int, default=10)
    bench.add_argument("--runs", type=int, default=50)
    bench.add_argument("--min-time", type=float, default=1.0)
    bench.add_argument("--exec-precision", choices=EXEC_PRECISIONS, default=None)
    bench.add_argument("--cpus", default=None, help="cores to pin to, the kernel's list format: 2,3 or 0-3")
    bench.add_argument("--cooldown", type=float, default=None)
    bench.add_argument("--max-temp", type=float, default=None)
    bench.add_argument("--sustained", type=float, default=None)
    bench.set_defaults(run=_bench)
    evaluate = commands.add_parser("evaluate", help="outputs of artifacts over images sent along")
    evaluate.add_argument("request")
    evaluate.set_defaults(run=_evaluate)
    args = parser.parse_args(argv)
    keep_runtimes_offline()
    try:
        answer = args.run(args)
    except PinningRefused as exc:  # the device's own refusal, one line
        print(f"{REFUSAL}{exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
