"""Quantization-aware training onto each target's own int8 grid, then the target's PTQ path.

Design (issue 15, chosen by measurement): the target's PTQ model (batch norm folded with its trained
statistics, weights GPTQ-rounded or left for nearest rounding, as PTQ does for that target) is
fine-tuned, to follow the float model, through fake quantization that matches the toolchain exactly
(its weight grid and its activation scheme, `fake_quant.py`); the trained weights are snapped onto
that grid and handed to the target's quantizer like GPTQ's weights, which it keeps, while it
calibrates activations as it always does. One loop serves every target (onnxruntime, NNCF and MNN
have no PT2E route, and PT2E QAT through litert-torch measured worse than its own PTQ on Lite0:
cosine 0.9913 / 16.1 dB after training against 0.9922 / 18.2 dB before). Starting from the float
weights instead of PTQ's measured worse (Lite0, onnx grid, 4 epochs: 15.6 dB against GPTQ's 21.7).
Batch norm stays folded from the first step: re-estimating its statistics on a small in-domain
folder (BN in train mode, as PT2E QAT does) took Lite0 from cosine 0.839 to 0.672.

Loss: distillation from the float model (KL on logits at a temperature, or MSE on logits), plus
cross-entropy when the training folder has labels. Adam with a cosine schedule; a checkpoint per
epoch (`--resume` continues from one). Data-parallel through `torchrun` (DistributedDataParallel,
gloo on CPU, nccl on GPUs): every process draws the same global batch and takes its share, and the
loss is summed over the process's samples and divided by the global batch, so N processes compute
the gradient of one process with the same global batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bbdeploy.errors import BBDeployError
from bbdeploy.fidelity import sqnr_db
from bbdeploy.progress import Progress

from .options import QATOptions
from .fake_quant import (ActivationFakeQuant, Grid, attach_weight_fake_quant, input_ranges, quantized_layers,
                         snapped_onto_grid)
from .training_data import TrainingSet

CHECKPOINT_FORMAT = "bbdeploy-qat-1"
MEASURE_BATCH = 32


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


class QATRun:
    """The QAT of one export request: its data, settings and checkpoints, one training per grid and start."""

    def __init__(self, options: QATOptions, data: TrainingSet, model_digest: str, keep_float: list[str],
                 checkpoints: Path, progress: Progress = Progress()):
        self.options, self.data, self.keep_float = options, data, list(keep_float)
        self.model_digest, self.checkpoints, self.progress = model_digest, checkpoints, progress
        self._resume: dict | None = None

    def settings(self, grid: Grid, start: str = "float") -> dict:
        """Everything a checkpoint must share with this run to be resumed (`start`: the PTQ weights it
        started from, e.g. "gptq": two targets on one grid may start from different ones)."""
        return {"model_weights_sha256": self.model_digest, "grid": grid.tag, "start": start,
                "input_size": self.data.input_size,
                "keep_float": sorted(self.keep_float), "train_data": self.data.fingerprint,
                **self.options.as_config()}

    def folder(self, grid: Grid, start: str = "float") -> Path:
        key = hashlib.sha256(json.dumps(self.settings(grid, start), sort_keys=True).encode()).hexdigest()[:12]
        return self.checkpoints / f"{grid.tag}-{key}"

    def check_resume(self, grids: list[Grid]) -> None:
        """Load `--resume` and check it belongs to this model, these settings and one of `grids`."""
        if self.options.resume is None:
            return
        path = Path(self.options.resume).expanduser()
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise BBDeployError(f"--resume {str(path)!r} does not exist; pass a checkpoint written by an earlier "
                                "--qat run (OUTPUT/qat-checkpoints/*/epoch-*.pt)") from None
        except Exception as exc:
            raise BBDeployError(f"--resume {str(path)!r} is not a checkpoint torch can load safely "
                                f"({type(exc).__name__}); pass an epoch-*.pt file of an earlier --qat run") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise BBDeployError(f"--resume {str(path)!r} is not a bbdeploy QAT checkpoint; pass an epoch-*.pt file "
                                "of an earlier --qat run")
        theirs = checkpoint["settings"]
        if theirs["model_weights_sha256"] != self.model_digest:
            raise BBDeployError(f"--resume {str(path)!r} was trained from another model (weights sha256 "
                                f"{theirs['model_weights_sha256'][:12]}, this one {self.model_digest[:12]}); pass a "
                                "checkpoint of this model or leave out --resume")
        matching = [grid for grid in grids if grid.tag == theirs["grid"]]
        if not matching:
            raise BBDeployError(f"--resume {str(path)!r} was trained on the {theirs['grid']} grid, which none of the "
                                f"requested targets uses ({', '.join(g.tag for g in grids)}); pass the target it "
                                "was trained for, or leave out --resume")
        ours = self.settings(matching[0], theirs.get("start", "float"))
        differing = [f"{k} {theirs.get(k)} vs {ours[k]}" for k in ours if theirs.get(k) != ours[k]]
        if differing:
            raise BBDeployError(f"--resume {str(path)!r} was trained with other settings ({'; '.join(differing)}); "
                                "pass the same settings or leave out --resume")
        self._resume = {**checkpoint, "path": str(path)}

    def train(self, folded: nn.Module, grid: Grid, start: nn.Module | None = None,
              start_from: str = "float") -> tuple[nn.Module, dict]:
        """A copy of `start` (default: the BN-folded float model `folded`; `start_from` names it),
        trained through `grid`'s fake quantization to follow `folded` and snapped onto the grid, and the
        record of the training for the manifest."""
        started = time.perf_counter()
        device = train_device(self.options.device)
        teacher = copy.deepcopy(folded).to(device).eval().requires_grad_(False)
        student = copy.deepcopy(start if start is not None else folded).to(device).eval()
        layers = quantized_layers(student, self.keep_float)
        resumed = self._resume if self._resume is not None and self._resume["settings"]["grid"] == grid.tag and \
            self._resume["settings"].get("start", "float") == start_from else None
        ranges = ({name: tuple(value) for name, value in resumed["ranges"].items()} if resumed else
                  input_ranges(teacher, (v.to(device) for v in self.data.centre_views(MEASURE_BATCH)), layers))
        attach_weight_fake_quant(layers, grid.weight_levels)
        activations = ActivationFakeQuant(ranges, grid.activations)
        activations.attach(student)
        before = self._measure(student, teacher, device)

        batch = min(self.options.batch_size, len(self.data) // world_size() * world_size())
        if batch == 0:
            raise BBDeployError(f"--train-data holds {len(self.data)} images, fewer than the {world_size()} torchrun "
                                "processes; pass more images or run fewer processes")
        steps = max(1, len(self.data) // batch)
        optimizer = torch.optim.Adam(student.parameters(), lr=self.options.lr)
        total = steps * self.options.epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
        history: list[dict] = []
        first_epoch = 0
        if resumed:
            student.load_state_dict(resumed["student"])
            optimizer.load_state_dict(resumed["optimizer"])
            first_epoch, history = resumed["epoch"], list(resumed["history"])
            for _ in range(first_epoch * steps):
                schedule.step()
        trained = _data_parallel(student, device)
        description = f"QAT on the {grid.tag} grid"
        with self.progress.step(description, total) as bar:
            bar.advance(first_epoch * steps)
            for epoch in range(first_epoch, self.options.epochs):
                losses, agreed, seen = 0.0, 0, 0
                generator = torch.Generator().manual_seed(self.options.seed * 100003 + epoch)
                order = torch.randperm(len(self.data), generator=generator)
                for step in range(steps):
                    indices = order[step * batch:(step + 1) * batch]
                    views = self.data.views(indices, generator)  # the global batch, drawn alike everywhere
                    share = slice(rank() * batch // world_size(), (rank() + 1) * batch // world_size())
                    x = views[share].to(device)
                    labels = self.data.labels[indices][share].to(device) if self.data.labels is not None else None
                    with torch.no_grad():
                        target = teacher(x)
                    logits = trained(x)
                    loss = self._loss_sum(logits, target, labels) / batch * world_size()  # DDP averages
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    losses += loss.item() / world_size()
                    agreed += int((logits.argmax(1) == target.argmax(1)).sum())
                    seen += len(x)
                    bar.advance()
                    bar.note(f"loss {losses / (step + 1):.4f}, agreement {agreed / seen:.3f}")
                history.append({"epoch": epoch + 1, "loss": round(losses / steps, 6),
                                "agreement": round(agreed / seen, 4), "lr": schedule.get_last_lr()[0]})
                self.progress.log(f"{description}: epoch {epoch + 1}/{self.options.epochs} loss "
                                  f"{history[-1]['loss']:.4f}, agreement on this process's batches "
                                  f"{history[-1]['agreement']:.3f}")
                self._save(grid, start_from, epoch + 1, student, optimizer, ranges, history)
        after = self._measure(student, teacher, device)
        activations.detach()
        model = snapped_onto_grid(student, grid.weight_levels).cpu()
        record = {"grid": grid.tag, "start": start_from, "weight_levels": grid.weight_levels,
                  "activations": grid.activations,
                  "train_data": self.data.record(), **self.options.as_config(),
                  "loss": f"{self.options.distill} distillation" + (" + cross-entropy" if self.data.labels is not None
                                                                     else ""),
                  "batch_norm": "folded, frozen statistics", "steps_per_epoch": steps, "history": history,
                  "resumed_from": resumed["path"] if resumed else None,
                  "device": str(device), "processes": world_size(),
                  "fake_quant_vs_float_on_training_images": {"before": before, "after": after},
                  "checkpoints": str(self.folder(grid, start_from)), "train_s": round(time.perf_counter() - started, 3)}
        return model, record

    def _loss_sum(self, logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.options.distill == "kl":
            t = self.options.temperature
            loss = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1), log_target=True,
                            reduction="sum") * t * t
        else:
            loss = F.mse_loss(logits, target, reduction="none").mean(1).sum()
        if labels is not None:
            loss = loss + F.cross_entropy(logits, labels, reduction="sum")
        return loss

    @torch.no_grad()
    def _measure(self, student: nn.Module, teacher: nn.Module, device) -> dict:
        """Top-1 agreement and logit SQNR of the fake-quantized model with the float one, on the
        centre crops of the training images (what training saw: a progress figure, not a verdict)."""
        agreed, signal, noise = 0, 0.0, 0.0
        for views in self.data.centre_views(MEASURE_BATCH):
            x = views.to(device)
            reference, logits = teacher(x), student(x)
            agreed += int((logits.argmax(1) == reference.argmax(1)).sum())
            signal += float((reference.double() ** 2).sum())
            noise += float(((logits - reference).double() ** 2).sum())
        sqnr = sqnr_db(signal, noise)
        return {"agreement": round(agreed / len(self.data), 4), "sqnr_db": None if sqnr is None else round(sqnr, 3)}

    def _save(self, grid: Grid, start_from: str, epoch: int, student: nn.Module, optimizer, ranges: dict,
              history: list) -> None:
        """epoch-NNN.pt in the training's folder, written atomically, by the first process only."""
        if not is_main_process():
            return
        folder = self.folder(grid, start_from)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch-{epoch:03d}.pt"
        staged = path.with_suffix(".partial")
        torch.save({"format": CHECKPOINT_FORMAT, "settings": self.settings(grid, start_from), "epoch": epoch,
                    "student": {k: v.cpu() for k, v in student.state_dict().items()},
                    "optimizer": optimizer.state_dict(), "ranges": {k: list(v) for k, v in ranges.items()},
                    "history": history}, staged)
        os.replace(staged, path)


def train_device(requested: str) -> torch.device:
    """`cuda` (this process's GPU under torchrun) or `cpu`; `auto` takes a GPU when torch sees one."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel under torchrun (the process group started here:
    nccl on GPUs, gloo on CPU), else as it is."""
    if world_size() == 1:
        return model
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)
