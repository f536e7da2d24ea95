"""The board runner: what runs a deployed artifact on a device, here or on a board.

Self-contained on purpose (standard library + numpy + the artifact's runtime), so that the very same
code runs here (parity, local bench and drift) and on a Raspberry Pi or any board, where it ships as a
zipapp (`targets/devices/runner_archive.py`): one implementation of every figure.

    artifact.py   the Runner interface and `load(path)` (by suffix)
    runtimes/     one module per runtime, each with its quirks; a new runtime is a new file
    timing.py     the interleaved timing loop (`bench`)
    evaluate.py   outputs over images sent along (`drift --device`)
    facts.py      what a figure was measured on
    __main__.py   the command line a device runs: `bench ARTIFACT...` or `evaluate REQUEST.json`
"""

from .artifact import EXEC_PRECISIONS, RUNNERS, Runner, TensorSpec, keep_runtimes_offline, load
from .errors import one_line
from .facts import ARM_CORES, device_facts, emulated_on
from .timing import ROUNDS, current_rss_bytes, measure, peak_rss_bytes

__all__ = ["ARM_CORES", "EXEC_PRECISIONS", "ROUNDS", "RUNNERS", "Runner", "TensorSpec", "current_rss_bytes",
           "device_facts", "emulated_on", "keep_runtimes_offline", "load", "measure", "one_line", "peak_rss_bytes"]
