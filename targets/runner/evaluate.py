"""Run artifacts over evaluation images on the device and send their outputs back (`drift --device`).

Part of the self-contained runner (standard library + numpy + the runtimes): the host sends each image
once, as the uint8 crop the network sees (never more bytes than the image), the device normalises it
here and runs it, so that the float reference on the host and the artifact on the device see
bit-identical inputs. `normalize` and `run_batched` are also what the host uses for its own
drift and parity, so there is one implementation of each.

    python bbdeploy-runner.pyz evaluate REQUEST.json   # one JSON object on stdout, progress lines on stderr

REQUEST: {"threads": N | null, "exec_precision": P | null, "artifacts": [{"path", "images" (.npy of
uint8 N x H x W x 3), "mean", "std", "layout" (nchw | nhwc), "batch"}]}.
"""

from __future__ import annotations

import base64
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


def probes_batched(model, images_nchw: np.ndarray, layout: str, batch: int) -> list[np.ndarray]:
    """`model.run_probes` for every image, fed as `run_batched` feeds it: each probe's raw tensors
    (its own layout and type), the padding of a static batch dropped."""
    chunks = []
    for start in range(0, len(images_nchw), batch):
        chunk, real = _full_batch(images_nchw[start:start + batch], batch, layout)
        chunks.append([np.asarray(raw)[:real] for raw in model.run_probes(chunk)])
    return [np.concatenate(parts) for parts in zip(*chunks)]


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


def encode(array: np.ndarray) -> dict:
    """A float32 array as JSON: shape and little-endian bytes in base64."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(data.shape), "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode(encoded: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(encoded["base64"]), dtype="<f4").reshape(encoded["shape"]).astype(np.float32)


STEP = 8  # images per progress line


def evaluate(request: dict, folder: Path, say=lambda done, total: None) -> list[dict]:
    """One outcome per artifact of `request` ({"result": {...}} or {"error": ...[, "module"]}); an
    artifact that cannot load or run does not stop the others."""
    threads, pinned = request.get("threads"), request.get("exec_precision")
    jobs = request["artifacts"]
    images = [np.load(folder / job["images"], mmap_mode="r") for job in jobs]
    total, done = sum(len(array) for array in images), 0
    outcomes = []
    for job, crops in zip(jobs, images):
        try:
            model = load(folder / job["path"], threads, pinned)
            parts = []
            for start in range(0, len(crops), STEP):
                batch = normalize(crops[start:start + STEP], job["mean"], job["std"])
                parts.append(run_batched(model, batch, job["layout"], job["batch"]))
                done += len(batch)
                say(done, total)
            outcomes.append({"result": {"runtime": model.runtime, "runtime_version": model.runtime_version,
                                        "exec_precision": model.exec_precision, "threads": threads,
                                        "outputs": encode(np.concatenate(parts))}})
        except ImportError as exc:
            outcomes.append({"error": f"no runtime module {exc.name or exc}", "module": exc.name or str(exc)})
        except Exception as exc:  # an artifact its runtime refuses: this row fails, the others run
            outcomes.append({"error": one_line(exc)})
        done = sum(len(array) for array in images[:len(outcomes)])
        say(done, total)
    return outcomes
