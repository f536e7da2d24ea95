"""Each target's own graph checks live in its own test module, `tests/test_target_<name>.py`, found here
through the target table: the generic tests (the zoo's) call them for every record, so a new target is
tested by every generic test unedited and fails with "no graph check for target X" until it has its own.

A module holds `check_fp32_graph(row)` and `check_int8_graph(row, backbone)` (row: an export result row),
`check_keep_float(row)` (what the layers left in float look like in its file), `check_local_bench_row(row)`
(what its runtime reports of itself on a local bench), `exec_precision_reported(requested)` (what its runtime
says it computed float parts in, by default (None) or pinned; None: not read back) and `LITE0_INT8`: its
measured int8 figures on EfficientNet-Lite0 (test_int8.py says how they are measured and judged); it may
add `check_lite0_int8_against(row, others)`, a bar of its own against the other targets' figures, and
`LAYERS_UNPROBED` / `INT8_LAYERS_UNPROBED`: why `drift --layers` cannot probe its artifacts (any, or int8 ones)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

import pytest

CHECKS = ("check_fp32_graph", "check_int8_graph", "check_keep_float", "check_local_bench_row",
          "exec_precision_reported")
FIGURES = ("LITE0_INT8",)


def module_name(target: str) -> str:
    return f"tests.test_target_{target}"


def target_checks(target: str) -> ModuleType:
    try:
        module = import_module(module_name(target))
    except ModuleNotFoundError as exc:
        if exc.name != module_name(target):
            raise
        pytest.fail(f"no graph check for target {target}: add tests/test_target_{target}.py with "
                    f"{', '.join(CHECKS + FIGURES)}")
    missing = [name for name in CHECKS if not callable(getattr(module, name, None))]
    missing += [name for name in FIGURES if not hasattr(module, name)]
    if missing:
        pytest.fail(f"tests/test_target_{target}.py lacks {', '.join(missing)}")
    return module


def layers_unprobed(target: str, precision: str) -> str | None:
    """Why drift --layers cannot probe `target`'s `precision` artifacts (its module says), or None."""
    checks = target_checks(target)
    return getattr(checks, "LAYERS_UNPROBED", None) or (
        getattr(checks, "INT8_LAYERS_UNPROBED", None) if precision == "int8" else None)
