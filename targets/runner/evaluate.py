"""Run artifacts over evaluation images on the device and send their outputs back (`drift --device`).

Part of the self-contained runner (standard library + numpy + the runtimes): the host sends each image
once, as the uint8 crop the network sees (never more bytes than the image), the device normalises it
here and runs it, so that the float reference on the host and the artifact on the device see
bit-identical inputs. `normalize` and `run_batched` are also what the host uses for its own
drift and parity, so there is one implementation of each.

    python bbdeploy-runner.pyz evaluate REQUEST.json   # one JSON object on stdout, progress lines on stderr

REQUEST: {"threads": N | null, "exec_precision": P | null, "artifacts": [{"path", "images" (.npy of
uint8 N x H x W x 3), "mean", "std", "layout" (nchw | nhwc), "batch"}]}. A job with "probes" ({"name",
"layout"} each: a layer probe plan's, `drift --layers`) runs its first "count" images and sends back
each probe's tensor at PROBE_POSITIONS positions per image instead of the outputs (see sampled_probes).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np

from .artifact import load
from .errors import one_line

PROGRESS = "bbdeploy-progress"  # stderr lines `bbdeploy-progress DONE TOTAL` (images run, all artifacts)


def normalize(crops: np.ndarray, mean, std) -> np.ndarray:
    """uint8 N x H x W x 3 crops -> float32 N x 3 x H x W, scaled to [0, 1] and normalised."""
    pixels = np.asarray(crops, dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))


def run_batched(model, images_nchw: np.ndarray, layout: str, batch: int, all_outputs: bool = False):
    """Logits of `model` (a runner) for every image, fed `batch` at a time in the artifact's layout;
    with `all_outputs`, the list of every output (feature maps back in NCHW).

    A static-batch artifact needs full batches: the last one is padded by repeating its final image
    and the padding's outputs are dropped.
    """
    chunks = []
    for start in range(0, len(images_nchw), batch):
        chunk, real = _full_batch(images_nchw[start:start + batch], batch, layout)
        chunks.append([_nchw(output[:real], layout) for output in model.run_all(chunk)])
    outputs = [np.concatenate(parts) for parts in zip(*chunks)]
    return outputs if all_outputs else outputs[0]


PROBE_POSITIONS = 4096  # values per image and probe that drift --layers compares (all where a tensor has fewer)


def sample_positions(size: int, count: int = PROBE_POSITIONS) -> np.ndarray:
    """`count` distinct positions spread over a tensor of `size` values per image (all of them where it
    has no more): a multiplicative walk modulo `size`, integer arithmetic only, so the host and a
    device with another numpy pick the very same positions without sending them."""
    if size <= count:
        return np.arange(size)
    step = int(size * 0.6180339887498949) | 1
    while math.gcd(step, size) != 1:
        step += 1
    return np.sort(np.arange(count, dtype=np.int64) * step % size)


def probe_rows(raw: np.ndarray, layout: str) -> np.ndarray:
    """A probe's tensor in PyTorch's layout (NCHW where 4-d), one row per image, in its own type."""
    raw = _nchw(np.asarray(raw), layout)
    return raw.reshape(len(raw), -1)


def sampled_probes(model, images_nchw: np.ndarray, layout: str, batch: int,
                   probes: list[dict]) -> list[tuple[int, np.ndarray]]:
    """(values per image, the values at `sample_positions`) of each probe (`{"name", "layout"}`, in the
    order `model` was loaded with), raw in the runtime's type: what drift --layers needs of a tensor,
    a few KB per image however large the feature map."""
    parts: list[list[np.ndarray]] = [[] for _ in probes]
    sizes = [0] * len(probes)
    for start in range(0, len(images_nchw), batch):
        chunk, real = _full_batch(images_nchw[start:start + batch], batch, layout)
        for index, (probe, raw) in enumerate(zip(probes, model.run_probes(chunk))):
            rows = probe_rows(np.asarray(raw)[:real], probe["layout"])
            sizes[index] = rows.shape[1]
            parts[index].append(rows[:, sample_positions(rows.shape[1])])
    return [(size, np.concatenate(values)) for size, values in zip(sizes, parts)]


def _full_batch(chunk: np.ndarray, batch: int, layout: str) -> tuple[np.ndarray, int]:
    real = len(chunk)
    if real < batch:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
    if layout == "nhwc":
        chunk = chunk.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(chunk, dtype=np.float32), real


def _nchw(output: np.ndarray, layout: str) -> np.ndarray:
    """A feature map of an NHWC artifact, back in PyTorch's layout (logits pass unchanged)."""
    return output.transpose(0, 3, 1, 2) if layout == "nhwc" and output.ndim == 4 else output


def encode(array: np.ndarray, keep_type: bool = False) -> dict:
    """An array as JSON: shape, type and little-endian bytes in base64 (float32 unless `keep_type`:
    an int8 tensor travels as one byte a value)."""
    data = np.asarray(array)
    data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<") if keep_type else "<f4")
    return {"shape": list(data.shape), "dtype": data.dtype.str,
            "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode(encoded: dict) -> np.ndarray:
    """The array of `encode`: float32, or its own type where it was kept."""
    data = np.frombuffer(base64.b64decode(encoded["base64"]), dtype=encoded.get("dtype", "<f4"))
    return data.reshape(encoded["shape"]).astype(data.dtype.newbyteorder("="))


STEP = 8  # images per progress line


def evaluate(request: dict, folder: Path, say=lambda done, total: None) -> list[dict]:
    """One outcome per artifact of `request` ({"result": {...}} or {"error": ...[, "module"]}); an
    artifact that cannot load or run does not stop the others."""
    threads, pinned = request.get("threads"), request.get("exec_precision")
    jobs = request["artifacts"]
    images = [np.load(folder / job["images"], mmap_mode="r")[:job.get("count")] for job in jobs]
    total = sum(len(array) for array in images)
    outcomes = []
    for job, crops in zip(jobs, images):
        done = sum(len(array) for array in images[:len(outcomes)])
        try:
            if job.get("probes"):
                result = _probe_result(job, folder, crops, threads, pinned)
            else:
                result = _output_result(job, folder, crops, threads, pinned, lambda count: say(done + count, total))
            outcomes.append({"result": result})
        except ImportError as exc:
            outcomes.append({"error": f"no runtime module {exc.name or exc}", "module": exc.name or str(exc)})
        except Exception as exc:  # an artifact its runtime refuses: this row fails, the others run
            outcomes.append({"error": one_line(exc)})
        say(sum(len(array) for array in images[:len(outcomes)]), total)
    return outcomes


def _output_result(job: dict, folder: Path, crops: np.ndarray, threads, pinned, say) -> dict:
    """Every output of the artifact (its logits, or each feature map) on every image, STEP images at a time."""
    model = load(folder / job["path"], threads, pinned)
    parts = []
    for start in range(0, len(crops), STEP):
        parts.append(run_batched(model, normalize(crops[start:start + STEP], job["mean"], job["std"]),
                                 job["layout"], job["batch"], all_outputs=True))
        say(min(start + STEP, len(crops)))
    return {"runtime": model.runtime, "runtime_version": model.runtime_version, "exec_precision": model.exec_precision,
            "threads": threads, "outputs": [encode(np.concatenate(output)) for output in zip(*parts)]}


def _probe_result(job: dict, folder: Path, crops: np.ndarray, threads, pinned) -> dict:
    """A probe job: the probed artifact's tensors at the sampled positions, in their own type."""
    probes = job["probes"]
    model = load(folder / job["path"], threads, pinned, probes=[probe["name"] for probe in probes])
    sampled = sampled_probes(model, normalize(crops, job["mean"], job["std"]), job["layout"], job["batch"], probes)
    return {"runtime": model.runtime, "runtime_version": model.runtime_version, "exec_precision": model.exec_precision,
            "threads": threads, "probes": [{"size": size, "values": encode(values, keep_type=True)}
                                           for size, values in sampled]}
