"""PyTorch -> ONNX with `torch.onnx.export` (the torch.export-based exporter), checked by onnx.checker."""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from pathlib import Path

import torch

# The torch.export-based exporter emits opset 18 and cannot down-convert Pad to older opsets;
# onnxruntime >= 1.14 and OpenVINO read it.
OPSET = 18

# The last few exports of this process, by what determines the file: `--target all` exports the same
# float graph for the onnx target and as MNN's converter input (about 6 s each for a MobileNet on 2
# cores, torch.export's decompositions), so the second is a copy of the first.
_RECENT: OrderedDict[str, bytes] = OrderedDict()
_RECENT_KEPT = 2


def _export_key(model: torch.nn.Module, sample: torch.Tensor, precision: str, layout: str, optimize: bool) -> str:
    """sha256 over the module tree and modes, every parameter and buffer, the sample's shape and the
    options."""
    modes = tuple(module.training for module in model.modules())  # batch norm traces differently in training
    digest = hashlib.sha256(repr((type(model).__qualname__, repr(model), modes, tuple(sample.shape), str(sample.dtype),
                                  precision, layout, optimize, OPSET, torch.__version__)).encode())
    for name, tensor in [*model.state_dict(keep_vars=False).items()]:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def convert(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, precision: str = "fp32",
            layout: str = "nchw", optimize: bool = True) -> None:
    """Write `model` traced at `sample`'s static shape to `path` as one self-contained .onnx file.

    fp16 converts weights, activations and the input/output to float16 (runs on onnxruntime CPU).
    `optimize` runs the exporter's own graph optimizer (constant folding, dead code removal).
    """
    import onnx

    key = _export_key(model, sample, precision, layout, optimize)
    if key in _RECENT:
        path.write_bytes(_RECENT[key])
        _RECENT.move_to_end(key)
        return
    if precision == "fp16":
        model, sample = _half_copy(model), sample.half()
    # a feature extractor (export --features) names its outputs; a classifier has one, the logits
    output_names = list(getattr(model, "output_names", ["logits"]))
    program = torch.onnx.export(model, (sample,), None, input_names=["input"], output_names=output_names,
                                opset_version=OPSET, dynamo=True, optimize=False, verbose=False)
    if optimize:
        _optimize(program)
    strip_build_machine_paths(program)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    _RECENT[key] = path.read_bytes()
    while len(_RECENT) > _RECENT_KEPT:
        _RECENT.popitem(last=False)


# node metadata torch.onnx writes for debugging: the Python stack of every op, with the absolute paths of the
# machine that exported it (the checkout, the venv, the user's home)
BUILD_MACHINE_METADATA = ("pkg.torch.onnx.stack_trace",)


def strip_build_machine_paths(program) -> None:
    """Drop BUILD_MACHINE_METADATA from every node (subgraphs and functions too) of the exported program:
    a shipped artifact carries no path of the machine that built it. Module paths (name scopes) stay."""
    import onnx_ir as ir

    graphs = [program.model.graph, *program.model.functions.values()]
    for graph in graphs:
        for node in ir.traversal.RecursiveGraphIterator(graph):
            for key in BUILD_MACHINE_METADATA:
                node.metadata_props.pop(key, None)


# onnxscript's rewrite rules that `torch.onnx.export(optimize=True)` would run and this exporter does not:
# SlicesSplit (Slices of one tensor -> one Split) is quadratic in the slices of a tensor: 68 s of the 79 s
# ONNX export of ShuffleNet V1 g8 (960 slices, 64 px, 1 thread), where it fuses nothing; no zoo graph
# changes without it (every backbone's op histogram and outputs equal, measured with onnxscript 0.7.2)
SKIPPED_REWRITE_RULES = ("SlicesSplit",)


def _optimize(program) -> None:
    """onnxscript's optimizer on the exported program, in place, as torch.onnx.export(optimize=True) runs it
    (onnxscript's `optimize_ir` with its defaults, then its ONNX fusions), less SKIPPED_REWRITE_RULES. It
    reads onnxscript internals (0.7.2); where a release has moved them, torch's own optimization runs
    instead (the same graph, only slower on ShuffleNet V1)."""
    import onnx_ir as ir
    from onnx_ir.passes import common
    from onnxscript.rewriter import onnx_fusions

    try:
        from onnxscript import rewriter
        from onnxscript.optimizer import _constant_folding

        rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if rule.name not in SKIPPED_REWRITE_RULES]
    except (ImportError, AttributeError):
        program.optimize()
        return
    model = program.model
    folding = _constant_folding.FoldConstantsPass(shape_inference=True,
                                                  input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                                  output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT)
    loop = ir.passes.PassManager([folding, rewriter.RewritePass(rules), common.RemoveUnusedNodesPass(),
                                  common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
                                 steps=2, early_stop=True)
    ir.passes.Sequential(common.InlinePass(), loop, common.RemoveUnusedNodesPass(),
                         common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                         common.LiftSubgraphInitializersToMainGraphPass(), common.DeduplicateInitializersPass(),
                         common.CommonSubexpressionEliminationPass(), common.OutputFixPass(),
                         common.NameFixPass())(model)
    onnx_fusions.fuse(model)


def _half_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).half()


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(Counter(node.op_type for node in graph.node))
