"""Which backbones share a deploy graph: the same ops, wired the same way, up to widths and repetition.

Members of a family differ in widths and depths (EfficientNet-Lite0..4, RegNetX-200MF..800MF), and
a converter or quantizer meets the same ops in the same neighbourhoods in each: one int8 run per
distinct graph covers them all (tests/test_export.py). Decided here by running the deploy form once
and recording, for every op, its kind (the op; for convolutions and pools the kernel, stride, dilation
and whether depthwise or grouped: what converters pattern-match on) and the kinds of the ops that feed
it. Widths, split points, padding amounts and how often a block repeats do not enter, so a wider or
deeper member shares its family's graph, and a backbone with an op or a wiring no other has gets a
graph, and an int8 run, of its own.

A graph whose every (op, input kinds) pair is also in another graph is contained in it: a converter
meets nothing in it that the larger one does not show it in the same neighbourhood (MobileNetV1's
depthwise-separable pair is inside every MobileNetV2 block; RegNetY is RegNetX with squeeze-excitation).
`exported_graphs` keeps the graphs no other contains: those are what the zoo tests export.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from bbdeploy.backbones import resolve
from bbdeploy.stages.manifest import code_digest

SIZE = 64  # the zoo tests' resolution: what the graph is traced at


class _OpRecorder(TorchFunctionMode):
    """Every call that makes tensors from tensors, as (kind, kinds of the ops whose outputs it takes)."""

    def __init__(self):
        super().__init__()
        self.producer: dict[int, str] = {}
        self.alive: list = []  # keeps every output alive, so that no id() is reused during the trace
        self.edges: set[tuple[str, tuple[str, ...]]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, torch.Tensor)]
        inputs = [t for t in _tensors([*args, *kwargs.values()]) if not isinstance(t, torch.nn.Parameter)]
        if not outputs or not inputs:
            return out
        kind = op_kind(func, args, kwargs)
        self.edges.add((kind, tuple(sorted({self.producer.get(id(t), "input") for t in inputs}))))
        for tensor in outputs:
            self.producer[id(tensor)] = kind
        self.alive.append(out)
        return out


def _tensors(values) -> list[torch.Tensor]:
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(_tensors(value))
    return found


def op_kind(func, args, kwargs) -> str:
    """The op's name (in-place and operator forms folded: `__iadd__` is `add`), and for convolutions
    and pools the attributes that are not widths."""
    name = getattr(func, "__name__", str(func)).strip("_")
    name = {"iadd": "add", "radd": "add", "imul": "mul", "rmul": "mul", "isub": "sub", "rsub": "sub"}.get(name, name)
    name = name.rstrip("_")  # relu_ is relu
    if name == "conv2d":
        weight, groups = args[1], _argument(args, kwargs, 6, "groups", 1)
        shape = "depthwise" if groups > 1 and weight.shape[1] == 1 else ("grouped" if groups > 1 else "dense")
        return (f"conv2d k{tuple(weight.shape[2:])} s{_argument(args, kwargs, 3, 'stride', 1)} "
                f"d{_argument(args, kwargs, 5, 'dilation', 1)} {shape}")
    if name in ("max_pool2d", "avg_pool2d"):
        return f"{name} k{_argument(args, kwargs, 1, 'kernel_size', None)} s{_argument(args, kwargs, 2, 'stride', None)}"
    return name


def _argument(args, kwargs, position: int, key: str, default):
    value = args[position] if len(args) > position else kwargs.get(key, default)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def graph_edges(model: torch.nn.Module) -> list[list]:
    """The sorted (kind, input kinds) pairs of `model`'s forward at SIZE px (as JSON lists)."""
    recorder = _OpRecorder()
    with torch.no_grad(), recorder:
        model(torch.zeros(1, 3, SIZE, SIZE))
    return json.loads(json.dumps(sorted(recorder.edges)))


def graph_signature(model: torch.nn.Module) -> str:
    """sha256 (12 hex digits) of `model`'s graph_edges."""
    return _signature(graph_edges(model))


def _signature(edges: list[list]) -> str:
    return hashlib.sha256(json.dumps(edges).encode()).hexdigest()[:12]


def deploy_form(name: str) -> torch.nn.Module:
    """The zoo backbone `name` as export hands it to converters (random weights: the graph is the point)."""
    spec = resolve(name)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = spec.constructor(num_classes=spec.num_classes).eval()
    return model.deploy_form() if hasattr(model, "deploy_form") else model


@lru_cache(maxsize=None)
def _edges_of(names: tuple[str, ...]) -> dict[str, list[list]]:
    """{backbone: graph_edges of its deploy form}. Cached in the temp folder under bbdeploy's code digest
    and this file's: each pytest worker collects the zoo tests, and tracing 27 backbones takes a few
    seconds."""
    key = hashlib.sha256((code_digest() + Path(__file__).read_text()).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"bbdeploy-test-graphs-{key}.json"
    try:
        edges = json.loads(cache.read_text())
    except (OSError, ValueError):
        edges = {}
    if not set(names) <= set(edges):
        edges.update({name: graph_edges(deploy_form(name)) for name in names if name not in edges})
        partial = cache.with_suffix(f".{id(edges)}.tmp")
        partial.write_text(json.dumps(edges))
        partial.replace(cache)
    return {name: edges[name] for name in names}


def distinct_graphs(names: tuple[str, ...]) -> dict[str, list[str]]:
    """{first backbone of a graph (in `names`' order): every backbone with that graph}."""
    groups: dict[str, list[str]] = {}
    for name, edges in _edges_of(names).items():
        groups.setdefault(_signature(edges), []).append(name)
    return {members[0]: members for members in groups.values()}


def containing_graph(names: tuple[str, ...]) -> dict[str, str]:
    """{first backbone of a graph: the first backbone of the graph the zoo tests export for it}: itself
    where no other graph contains it, else the largest graph that does (no graph contains that one: it
    would contain the first too, and be larger)."""
    edges = _edges_of(names)
    pairs = {first: {tuple(map(_hashable, edge)) for edge in edges[first]} for first in distinct_graphs(names)}
    return {first: max((other for other, theirs in pairs.items() if own < theirs), key=lambda other: len(pairs[other]),
                       default=first)
            for first, own in pairs.items()}


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def exported_graphs(names: tuple[str, ...]) -> dict[str, list[str]]:
    """{first backbone of each graph no other contains: every backbone whose graph it stands for}."""
    groups = distinct_graphs(names)
    exported: dict[str, list[str]] = {}
    for first, outer in containing_graph(names).items():
        exported.setdefault(outer, []).extend(groups[first])
    return exported
