"""Layer probes of an ExecuTorch artifact (see exporters/probes.py): none can be taken.

XNNPACK runs its delegated part of the program as one compiled graph and hands back only the
delegate's outputs. ExecuTorch's ETDump (`enable_etdump=True, debug_buffer_size=...` on load) records a
time per XNNPACK operator but no tensor of them (measured, executorch 1.5.1: 166 delegated events of
MobileNetV3-Small, each without debug data); only operators outside the delegate log their outputs. A
probed copy lowered without XNNPACK would run ExecuTorch's portable kernels, not the artifact's.
"""

from __future__ import annotations

from pathlib import Path

from bbdeploy.exporters.probes import ProbePlan

UNPROBED = ("ExecuTorch's XNNPACK delegate returns only its outputs, and its ETDump holds per-operator times "
            "but no intermediate tensors (executorch 1.5)")


def layer_probes(artifact: Path, layers: list[str], folder: Path) -> ProbePlan:
    plan = ProbePlan(artifact)
    for layer in layers:
        plan.unmatched(layer, UNPROBED)
    return plan
