"""Where each conv/linear layer's input and output live inside a deployed artifact: the probe plan that
`drift --layers` asks the artifact's own runtime for.

Each target's `layer_probes` module (named in its record) reads the artifact's graph on the host and
returns a ProbePlan: the tensors to fetch (raw, as the runtime holds them: int8 with its scale and zero
point, or float), which layer each one belongs to, and, where the runtime needs it, a probed copy of the
file whose extra outputs are those tensors. The runner on the device only fetches tensors by name; the
comparison with the float model happens on the host (stages/layer_diff.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bbdeploy.targets.runner.artifact import dequantize


@dataclass(frozen=True)
class Probe:
    """One tensor of the artifact, as the runner fetches it (`name`: the runtime's own handle for it)."""

    name: str
    layout: str = "nchw"  # nchw | nhwc (4-d tensors; others are compared flattened per sample)
    scale: float | None = None  # a quantized tensor: float = (raw - zero_point) * scale
    zero_point: int | None = None

    def to_float(self, rows: np.ndarray) -> np.ndarray:
        """Values of this tensor as the runner sends them (targets/runner/evaluate.py sampled_probes: in
        PyTorch's layout, the runtime's type), in the float domain."""
        return dequantize(rows, self.scale, self.zero_point)

    def as_job(self) -> dict:
        """What the runner needs of it: the runtime's handle and the layout to read it in."""
        return {"name": self.name, "layout": self.layout}


@dataclass(frozen=True)
class LayerProbe:
    """A conv/linear layer (its module path, as `--keep-float` takes it) and the probes (indices into
    ProbePlan.probes) of the tensor it reads and the tensor it writes (after its activation and
    requantization). None: the runtime has no such tensor, and `note` says why."""

    layer: str
    input: int | None
    output: int | None
    fused_with: tuple[str, ...] = ()  # other layers the runtime computes in the same kernel
    note: str | None = None


@dataclass
class ProbePlan:
    file: Path  # what the runner loads: the artifact itself, or a probed copy of it
    probes: list[Probe] = field(default_factory=list)
    layers: list[LayerProbe] = field(default_factory=list)

    def probe_index(self, probe: Probe) -> int:
        """The index of `probe` in the plan, added once however many layers share it."""
        if probe not in self.probes:
            self.probes.append(probe)
        return self.probes.index(probe)

    def unmatched(self, layer: str, why: str) -> None:
        self.layers.append(LayerProbe(layer, None, None, note=why))

    def add_layers(self, layers: list[str], found: dict, tensors, missing: str) -> None:
        """A row per layer, in `layers`' order: `tensors(op)` -> (the Probe it reads, the Probe it writes)
        for a layer whose op was `found`; the others unmatched, `missing` saying why."""
        for layer in layers:
            if layer not in found:
                self.unmatched(layer, missing)
                continue
            read, written = tensors(found[layer])
            self.layers.append(LayerProbe(layer, self.probe_index(read), self.probe_index(written)))

    def to_json(self) -> dict:
        return {"file": str(self.file), "probes": [asdict(p) for p in self.probes],
                "layers": [asdict(layer) for layer in self.layers]}


def matched_layer(candidates: list[str], layers: list[str]) -> str | None:
    """The layer among `layers` that a runtime's name for a weight points at: the longest candidate
    module path that is a layer (a converter may prefix the model's own paths with its wrapper's)."""
    known = set(layers)
    for candidate in sorted(candidates, key=len, reverse=True):
        if candidate in known:
            return candidate
    return None


def by_order(found: dict, unnamed: list, layers: list[str]) -> dict:
    """`found` ({layer: op} matched by name) completed by the ops no name matched, in graph order, where
    they are exactly as many as the layers left (a converter that names a few weights after its own
    internals: litert-torch's int8 classifier); else the rest stay unmatched."""
    left = [layer for layer in layers if layer not in found]
    if unnamed and len(unnamed) == len(left):
        found = {**found, **dict(zip(left, unnamed))}
    return found


GATE_DEPTH = 3  # ops between a gated tensor and its gate's end: relu6(x + 3) / 6 is two


def gated_product(tensor, consumers: list, producer: dict, inputs, output, is_mul, is_elementwise):
    """`tensor * gate(tensor)` where `tensor` feeds exactly the gate and the product, and the gate is a few
    elementwise ops (hardswish as the converters write it: x * HardSigmoid(x) in ONNX, x * (relu6(x + 3)
    / 6) in TFLite; not a squeeze-excite, whose gate pools and convolves): the product, which is what the
    float side's hardswish writes; None for anything else. `inputs(op)`, `output(op)`, `is_mul(op)` and
    `is_elementwise(op)` read the target's own graph."""
    if len(consumers) != 2:
        return None
    for op in consumers:
        gate = [name for name in inputs(op) if name != tensor]
        if not is_mul(op) or tensor not in inputs(op) or len(gate) != 1:
            continue
        step = producer.get(gate[0])
        for _ in range(GATE_DEPTH):
            if step is None or step is op or not is_elementwise(step):
                break
            if tensor in inputs(step):
                return output(op)
            step = producer.get(inputs(step)[0])
    return None
