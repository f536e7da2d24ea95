"""Evaluation images and their labels, for `bbdeploy drift`.

Labels come from the folder layout (ImageFolder style: one subfolder per class, named by class index,
or by class name when a class-names file gives the order), or from a CSV of `path,label` rows.
Without either, only agreement with the float model can be measured, and that is said out loud.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from bbdeploy.data.photos import image_files
from bbdeploy.errors import BBDeployError

LIMIT_SEED = 0  # `--limit` draws the same images every run


@dataclass
class EvalData:
    """Image files, in a fixed order, with one class index per file or no labels at all."""

    root: Path
    paths: list[Path]
    labels: list[int] | None
    label_source: str  # "folders" | "csv FILE" | "none: ..." (why there are none)

    def __len__(self) -> int:
        return len(self.paths)


def eval_data(folder: str | Path, *, labels_csv: str | Path | None = None,
              class_names: str | Path | None = None, limit: int | None = None) -> EvalData:
    """The images under `folder` (recursive) and their labels, if the layout or a CSV gives them."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BBDeployError(f"--data {str(folder)!r} is not a folder; pass a folder of images")
    paths = image_files(root, "--data", "pass a folder of images, optionally in one subfolder per class")
    if limit is not None and limit < 1:
        raise BBDeployError(f"--limit {limit} must be at least 1")
    names = _read_class_names(Path(class_names)) if class_names else None
    if labels_csv:
        labels, source = _labels_from_csv(Path(labels_csv), root, paths, names), f"csv {labels_csv}"
    else:
        labels, why_not = _labels_from_folders(root, paths, names)
        source = "folders" if labels is not None else f"none: {why_not}"
    if limit is not None and limit < len(paths):
        chosen = spread_sample(labels or [0] * len(paths), limit)
        paths = [paths[i] for i in chosen]
        labels = [labels[i] for i in chosen] if labels is not None else None
    return EvalData(root, paths, labels, source)


def spread_sample(labels: list[int], count: int, seed: int = LIMIT_SEED) -> list[int]:
    """`count` indices drawn across classes (round-robin over the classes, a seeded draw within each),
    in their original order: `--limit 1000` of an ImageNet folder covers every class, not the first few."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    queues = [rng.sample(members, len(members)) for _, members in sorted(by_class.items())]
    chosen: list[int] = []
    while len(chosen) < count:
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return sorted(chosen)


def check_labels(data: EvalData, num_classes: int, artifact: str) -> None:
    """Every label must be a class the model has."""
    if data.labels is None:
        return
    outside = sorted({label for label in data.labels if not 0 <= label < num_classes})
    if outside:
        raise BBDeployError(f"labels {outside[:5]} of --data are outside the {num_classes} classes of {artifact}; "
                            f"pass labels 0 to {num_classes - 1} (or --class-names FILE for named folders)")


def _read_class_names(path: Path) -> dict[str, int]:
    """One class name per line; its line number (from 0) is its index in the model's output."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except OSError as exc:
        raise BBDeployError(f"cannot read --class-names {str(path)!r} ({exc.strerror}); "
                            "pass a text file with one class name per line") from None
    names = [line for line in lines if line]
    if not names:
        raise BBDeployError(f"--class-names {str(path)!r} is empty; pass one class name per line, in output order")
    return {name: index for index, name in enumerate(names)}


def _label(text: str, names: dict[str, int] | None, where: str) -> int:
    text = text.strip()
    if names is not None and text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        hint = "it is not in --class-names" if names else "pass --class-names FILE to map names to indices"
        raise BBDeployError(f"label {text!r} of {where} is not a class index; {hint}") from None


def _labels_from_folders(root: Path, paths: list[Path], names: dict[str, int] | None
                         ) -> tuple[list[int] | None, str]:
    """Labels from the first subfolder of each image, when every image sits in one."""
    classes = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in paths]
    if any(c is None for c in classes):
        return None, "images directly in the folder (put them in one subfolder per class, or pass --labels CSV)"
    if names is None and not all(c.isdigit() for c in classes):
        example = next(c for c in classes if not c.isdigit())
        return None, (f"subfolder {example!r} is not a class index (pass --class-names FILE to use class names)")
    return [_label(c, names, f"subfolder {c!r}") for c in classes], ""


def _labels_from_csv(path: Path, root: Path, paths: list[Path], names: dict[str, int] | None) -> list[int]:
    """`path,label` rows (paths relative to the data folder); every image needs a row."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    except OSError as exc:
        raise BBDeployError(f"cannot read --labels {str(path)!r} ({exc.strerror}); pass a CSV of path,label rows") from None
    if rows and rows[0][:2] == ["path", "label"]:
        rows = rows[1:]
    table = {}
    for number, row in enumerate(rows, 1):
        if len(row) < 2:
            raise BBDeployError(f"row {number} of --labels {str(path)!r} is not path,label: {row!r}")
        table[Path(row[0].strip()).as_posix()] = _label(row[1], names, f"row {number} of {path.name}")
    missing = [p for p in paths if p.relative_to(root).as_posix() not in table]
    if missing:
        raise BBDeployError(f"{len(missing)} images have no row in --labels {str(path)!r} "
                            f"(e.g. {missing[0].relative_to(root).as_posix()}); give every image a path,label row")
    return [table[p.relative_to(root).as_posix()] for p in paths]
