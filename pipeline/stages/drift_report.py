"""The drift report as files: `drift.json` (the data), `drift.md` (a table fit for a pull request)
and `drift.html` (one self-contained page: tables and matplotlib plots embedded as PNG data).

The folder is written through a staging folder and renamed into place, so a failed run never leaves
a half-written report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from bbdeploy.errors import BBDeployError
from bbdeploy.stages import layer_report
from bbdeploy.stages.device_card import card_html, card_markdown, precision_note

def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _interval(values: list[float] | None, scale: float = 1.0, unit: str = "") -> str:
    return "-" if values is None else f"[{values[0] * scale:.2f}, {values[1] * scale:.2f}]{unit}"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def sqnr_text(result: dict) -> str:
    """SQNR in dB; identical logits have an infinite one ("exact"); NaN output has none ("n/a")."""
    if result["sqnr_db"] is not None:
        return f"{result['sqnr_db']:.1f}"
    return "n/a" if result["nonfinite_outputs"] else "exact"


def device_text(device: dict | None) -> str:
    """Where a row was measured, in a few words: `qemu://pi5 (aarch64 Cortex-A76, emulated)`."""
    if not device:
        return "-"
    what = " ".join(str(device[key]) for key in ("machine", "cpu") if device.get(key))
    return f"{device['name']} ({what}{', emulated' if device.get('emulated') else ''})" if what else device["name"]


def device_line(device: dict | None) -> str:
    """The device card of a report, in one sentence: everything the device said of itself."""
    if not device:
        return "Measured on: unknown."
    parts = [device_text(device), device.get("model"), device.get("os"),
             device.get("python") and f"Python {device['python']}", device.get("cores") and f"{device['cores']} cores",
             device.get("emulated") and f"emulated by qemu-user on {device.get('kernel_machine')}: ARM numerics, no latency"]
    return "Measured on: " + "; ".join(str(part) for part in parts if part) + "."


def runtime_text(result: dict) -> str:
    return " ".join(str(result[key]) for key in ("runtime", "runtime_version") if result.get(key)) or "-"


def result_rows(report: dict) -> list[list[str]]:
    """One table row per artifact (the columns of `COLUMNS`)."""
    rows, setting = [], report.get("exec_precision") or "default"
    for r in report["results"]:
        drop = "-" if r["accuracy_drop"] is None else f"{r['accuracy_drop']:+.2f}"
        rows.append(["✗" if r["status"] == "failed" else "✓", Path(r["artifact"]).name, r["target"],
                     r["precision"], r["exec_precision"] or "-", device_text(r.get("device")), runtime_text(r),
                     str(r["samples"]),
                     _percent(r["accuracy_top1"]), _percent(r["accuracy_top5"]), drop,
                     _interval(r["accuracy_drop_ci95"]), _percent(r["agreement_top1"]),
                     _interval(r["agreement_top1_ci95"], 100, "%"), _percent(r["agreement_top5"]),
                     _number(r["cosine"], 4), sqnr_text(r),
                     "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}", "; ".join(row_notes(r, setting))])
    return rows


def row_notes(r: dict, setting: str = "default") -> list[str]:
    """What a reader needs to read the row: its error, a precision the runtime chose (`setting`:
    drift's --exec-precision), emulation."""
    notes = [r.get("error"), precision_note(r["precision"], r.get("exec_precision"), r.get("runtime"), setting)]
    if (r.get("device") or {}).get("emulated"):
        notes.append("emulated: ARM numerics (qemu-user)")
    return [note for note in notes if note]


def card(report: dict) -> dict:
    """The device card of a drift report (device_card.py): no benchmark ran, so no state."""
    results = report["results"]
    return {"url": (report.get("device") or {}).get("name"), "facts": report.get("device"),
            "runtimes": {r["runtime"]: r.get("runtime_version") or "-" for r in results if r.get("runtime")},
            "exec_precisions": {f"{r['target']} {r['precision']}": r["exec_precision"] for r in results
                                if r.get("exec_precision")}}


COLUMNS = ["", "artifact", "target", "precision", "exec", "device", "runtime", "images", "top-1", "top-5", "drop (pts)", "drop 95% CI",
           "agree top-1", "agree 95% CI", "agree top-5", "cosine", "SQNR dB", "max |diff|", "note"]


MAP_COLUMNS = ["artifact", "feature map", "SQNR dB", "cosine", "max |diff|"]


def map_rows(report: dict) -> list[list[str]]:
    """One row per feature map of each feature-map artifact (`export --features`): no top-1 there, so
    the results table's cosine and SQNR are the worst map's, and these are every map's."""
    return [[Path(r["artifact"]).name, o["name"], sqnr_text({**o, "nonfinite_outputs": 0}), _number(o["cosine"], 4),
             f"{o['max_abs_diff']:.3g}"] for r in report["results"] for o in r.get("outputs") or []]


def markdown(report: dict) -> str:
    reference = report["references"]
    lines = ["# bbdeploy drift", "",
             f"{report['data']['images']} images from `{report['data']['folder']}` (labels: {report['data']['labels']}).",
             "", device_line(report.get("device")), "", *card_markdown("device", card(report))]
    for ref in reference:
        lines.append(f"Float reference {ref['backbone']} ({ref['weights']}): top-1 {_percent(ref['accuracy_top1'])}, "
                     f"top-5 {_percent(ref['accuracy_top5'])}.")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in result_rows(report)]
    if map_rows(report):
        lines += ["", "| " + " | ".join(MAP_COLUMNS) + " |", "|" + "---|" * len(MAP_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in map_rows(report)]
    lines += layer_report.markdown_lines(report)
    return "\n".join(lines) + "\n"


def png_data(figure) -> str:
    """The figure as base64 PNG, for a data: URL."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: dict) -> list[tuple[str, str]]:
    """(caption, base64 PNG) per plot: per-target bars, then the per-layer views (stages/layer_report.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    names = [f"{r['target']}\n{r['precision']}" for r in results]
    labelled = any(r["accuracy_top1"] is not None for r in results)
    finite_sqnr = [r["sqnr_db"] for r in results if r["sqnr_db"] is not None]
    exact_height = max([*finite_sqnr, 100.0])  # an infinite SQNR is drawn as the tallest bar, labelled
    panels = [("top-1 agreement (%)", [None if r["agreement_top1"] is None else 100 * r["agreement_top1"]
                                       for r in results]),
              ("logit SQNR (dB)", [r["sqnr_db"] if r["sqnr_db"] is not None or r["nonfinite_outputs"]
                                   else exact_height for r in results])]
    if labelled:
        panels.append(("accuracy drop (points)", [r["accuracy_drop"] for r in results]))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5))
    for axis, (title, values) in zip(axes, panels):
        bars = axis.bar(range(len(values)), [0.0 if v is None else v for v in values], color="#4c72b0")
        for bar, result, value in zip(bars, results, values):
            label = ("NaN" if result["nonfinite_outputs"] else
                     "exact" if title.startswith("logit SQNR") and result["sqnr_db"] is None else None)
            if label:
                axis.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                              va="bottom", fontsize=8)
        axis.set_xticks(range(len(values)), names, fontsize=8)
        axis.set_title(title)
    figure.tight_layout()
    images = [("Drift per artifact", png_data(figure))]
    plt.close(figure)
    images += layer_report.figures(report, plt, png_data)
    return images


def html_table(columns, rows: list[list[str]], css_class: str) -> str:
    """One escaped table: a header row, then a row per list of cells."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><tr>{head}</tr>{body}</table>'


def html_document(title: str, body: str) -> str:
    """A self-contained page with the reports' one style sheet around `body` (already HTML)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def html_page(report: dict) -> str:
    escape = html.escape
    references = "".join(f"<li>{escape(ref['backbone'])} ({escape(str(ref['weights']))}): top-1 "
                         f"{_percent(ref['accuracy_top1'])}, top-5 {_percent(ref['accuracy_top5'])}</li>"
                         for ref in report["references"])
    sections = [layer_report.html_sections(report, html_table)]
    figures = "".join(f"<figure><img alt='{escape(caption)}' src='data:image/png;base64,{data}'>"
                      f"<figcaption>{escape(caption)}</figcaption></figure>" for caption, data in plots(report))
    data = report["data"]
    return html_document("bbdeploy drift", f"""<p>{data['images']} images from <code>{escape(data['folder'])}</code> (labels: {escape(data['labels'])}).</p>
<p class="device">{escape(device_line(report.get("device")))}</p>
{card_html("device", card(report))}
<ul>{references}</ul>
{html_table(COLUMNS, result_rows(report), "results")}
{html_table(MAP_COLUMNS, map_rows(report), "maps") if map_rows(report) else ""}
{''.join(sections)}
{figures}""")


def write_report(report: dict, folder: Path) -> Path:
    """Write drift.json, drift.md and drift.html into `folder` (replacing earlier ones)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    except OSError as exc:
        raise BBDeployError(f"cannot write the report to {str(folder)!r} ({exc.strerror or exc}); "
                            "pass --report to a writable folder") from None
    try:
        (staging / "drift.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "drift.md").write_text(markdown(report))
        (staging / "drift.html").write_text(html_page(report))
        for name in ("drift.json", "drift.md", "drift.html"):
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
