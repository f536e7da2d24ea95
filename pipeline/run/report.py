"""The report of `bbdeploy run`: which artifact to ship to which device.

One row per artifact x device (an artifact that never got made is one row per device too, failed at
its stage). `report.json` holds the data, `report.md` a table for a pull request, `report.html` one
self-contained page with the table and, per device, latency against drift with the Pareto front.
With a baseline report, rows slower than the measured spread or less faithful than the baseline's
bootstrap interval are marked as regressions.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from bbdeploy.rows import Outcome, failed
from bbdeploy.stages.manifest import now, write_json_atomic
from bbdeploy.run.pipeline_file import Pipeline
from bbdeploy.stages import layer_report
from bbdeploy.stages.device_card import card_html, card_markdown, precision_note
from bbdeploy.stages.drift_report import html_document, html_table, png_data
from bbdeploy.run.matrix import Outcomes, model_key
from bbdeploy.run.scatter_svg import scatter_svg

COLUMNS = ("model", "target", "precision", "device", "status", "size MB", "accuracy", "agreement [95% CI]", "cosine",
           "p50 ms", "p90 ms", "vs fp32", "note")


def build_report(pipeline: Pipeline, outcomes: Outcomes, baseline: dict | None = None) -> dict:
    rows = []
    devices = [device.name for device in pipeline.devices] or [None]
    for index, model in enumerate(pipeline.models):
        for precision in pipeline.precisions:
            export = outcomes.exports.get((index, precision.name), {"rows": []})
            for export_row in export["rows"]:
                for device in devices:
                    rows.append(_row(model, precision.name, device, export_row, outcomes, pipeline))
    _speedups(rows)
    gates = {"max_drop": pipeline.validation.max_drop, "min_agreement": pipeline.validation.min_agreement}
    report = {"created": now(), "pipeline": pipeline.source, "output": str(pipeline.output), "gates": gates,
              "wall_s": round(outcomes.wall_s, 1), "rows": rows, "jobs": outcomes.jobs,
              "devices": {device: _device_facts(rows, device) for device in devices if device is not None},
              "device_cards": {device: device_card(rows, device) for device in devices if device is not None},
              "recommended": {device: _recommended(rows, device) for device in devices if device is not None}}
    if baseline is not None:
        mark_regressions(rows, baseline)
    return report


def _row(model, precision: str, device: str | None, export_row: dict, outcomes: Outcomes, pipeline: Pipeline) -> dict:
    artifact = export_row.get("artifact")
    row = {"model": model.name, "model_key": model_key(model), "target": export_row["target"], "precision": precision,
           "device": device, "artifact": artifact, "size_bytes": export_row.get("bytes"), "status": "ok",
           "stage": None, "reason": None, "drift": None, "latency_ms": None, "speedup_vs_fp32": None,
           "stages": {"export": "cached" if export_row["status"] == "cached" else
                      "failed" if export_row["status"] == "failed" else "ran"},
           "bench_started": None, "bench_finished": None, "regressions": [], "drift_device": None, "emulated": False,
           "emulated_latency_ms": None, "bench_device": None,
           "device_url": next((d.url for d in pipeline.devices if d.name == device), None)}
    if export_row["status"] == "failed":
        return {**row, "status": "failed", "stage": "export", "reason": export_row["error"]}
    # the device's own drift where it measured one (ssh, qemu), else the one here (local, and adb,
    # which cannot return outputs)
    drift = (outcomes.drifts.get((artifact, device)) or outcomes.drifts.get((artifact, None))
             or failed(Outcome, "drift did not run"))
    row["stages"]["drift"] = drift["status"]
    if drift["status"] == "failed":
        return {**row, "status": "failed", "stage": "drift", "reason": drift["error"]}
    result = drift["result"]
    row["drift"] = {key: result.get(key) for key in ("samples", "accuracy_top1", "accuracy_drop", "accuracy_drop_ci95",
                                                    "agreement_top1", "agreement_top1_ci95", "cosine", "sqnr_db",
                                                    "exec_precision", "runtime", "runtime_version")}
    if result.get("layers_check"):  # validation: layers: true (stages/layer_diff.py)
        row["drift"].update({key: result.get(key) for key in LAYER_KEYS})
    row["drift_device"] = result.get("device")
    row["emulated"] = bool((result.get("device") or {}).get("emulated"))
    gate = _gate_failure(row["drift"], pipeline)
    if device is not None:
        bench = outcomes.benches.get((artifact, device), failed(Outcome, "bench did not run"))
        row["stages"]["bench"] = bench["status"]
        if bench["status"] == "failed":
            return {**row, "status": "failed", "stage": "bench", "reason": bench["error"],
                    "bench_started": bench.get("started"), "bench_finished": bench.get("finished")}
        if bench["status"] == "unsupported":
            return {**row, "status": "unsupported", "stage": "bench", "reason": bench["error"]}
        measured = bench["row"]
        latency = {k: measured["latency_ms"][k] for k in ("p50", "p90", "mean")}
        row.update(bench_started=bench["started"], bench_finished=bench["finished"], bench_device=measured.get("device"),
                   runtime=measured.get("runtime"), warnings=measured.get("warnings", []),
                   bench_threads=measured.get("threads"), bench_runtime_version=measured.get("runtime_version"),
                   bench_exec_precision=measured.get("exec_precision"),
                   state_before=measured.get("state_before"), state_after=measured.get("state_after"))
        if (measured.get("device") or {}).get("emulated"):  # qemu's speed, not the board's: never compared
            row.update(emulated=True, emulated_latency_ms=latency)
        else:
            row["latency_ms"] = latency
    if gate:
        row.update(status="gated", stage="drift", reason=gate)
    return row


def _device_facts(rows: list[dict], device: str) -> dict | None:
    """What the device said of itself (its bench, else its drift), for the report's device lines."""
    for key in ("bench_device", "drift_device"):
        for row in rows:
            if row["device"] == device and (row.get(key) or {}).get("name") == row["device_url"]:
                return row[key]
    return None


def device_card(rows: list[dict], device: str) -> dict:
    """What the report's card says of a device: its facts, its state at the start of its first
    benchmark and at the end of its last, the runtimes, threads and execution precisions that ran."""
    mine = [r for r in rows if r["device"] == device]
    timed = sorted((r for r in mine if r.get("state_before")), key=lambda r: r["state_before"]["time"])
    runtimes, precisions = {}, {}
    for r in mine:
        drift = r["drift"] or {}
        name, version = r.get("runtime") or drift.get("runtime"), r.get("bench_runtime_version") or drift.get("runtime_version")
        if name:
            runtimes[name] = version or "-"
        ran = drift.get("exec_precision") or r.get("bench_exec_precision")
        if ran:
            precisions[f"{r['target']} {r['precision']}"] = ran
    return {"url": next((r["device_url"] for r in mine), None), "facts": _device_facts(rows, device),
            "state_before": timed[0]["state_before"] if timed else None,
            "state_after": timed[-1]["state_after"] if timed else None,
            "threads": sorted({r["bench_threads"] for r in mine if r.get("bench_threads")}),
            "runtimes": runtimes, "exec_precisions": precisions}


LAYER_KEYS = ("layers", "worst", "layers_check", "layer_samples")  # of a drift row with its per-layer view


def _gate_failure(drift: dict, pipeline: Pipeline) -> str | None:
    validation = pipeline.validation
    if validation.max_drop is not None and drift["accuracy_drop"] is not None and drift["accuracy_drop"] > validation.max_drop:
        return f"accuracy drop {drift['accuracy_drop']:.2f} points > max_drop {validation.max_drop:g}"
    if validation.min_agreement is not None and drift["agreement_top1"] < validation.min_agreement:
        return f"top-1 agreement {drift['agreement_top1']:.4f} < min_agreement {validation.min_agreement:g}"
    return None


def _speedups(rows: list[dict]) -> None:
    """p50 of the fp32 artifact of the same model and target on the same device over this row's p50."""
    fp32 = {(r["model_key"], r["target"], r["device"]): r["latency_ms"]["p50"] for r in rows
            if r["precision"] == "fp32" and r["latency_ms"]}
    for row in rows:
        base = fp32.get((row["model_key"], row["target"], row["device"]))
        if base is not None and row["latency_ms"]:
            row["speedup_vs_fp32"] = base / row["latency_ms"]["p50"]


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both latency (p50, lower) and top-1 agreement (higher)."""
    points = [r for r in rows if r["status"] == "ok" and r["latency_ms"] and r["drift"]]

    def dominated(a: dict) -> bool:
        return any(b["latency_ms"]["p50"] <= a["latency_ms"]["p50"] and b["drift"]["agreement_top1"] >=
                   a["drift"]["agreement_top1"] and (b["latency_ms"]["p50"] < a["latency_ms"]["p50"] or
                                                     b["drift"]["agreement_top1"] > a["drift"]["agreement_top1"])
                   for b in points)

    return sorted((a for a in points if not dominated(a)), key=lambda r: r["latency_ms"]["p50"])


EMULATED_NOTE = "emulated: ARM numerics, qemu's latency (never compared)"


def _recommended(rows: list[dict], device: str) -> dict | None:
    """The fastest artifact on the device among the rows that passed every check and gate, by that
    device's own drift; on an emulated device, whose latency means nothing, the most faithful one."""
    passed = [r for r in rows if r["device"] == device and r["status"] == "ok"]
    emulated = any(r["emulated"] for r in passed)
    if emulated:
        candidates, order = passed, lambda r: (-r["drift"]["agreement_top1"], -(r["drift"]["cosine"] or 0), r["size_bytes"] or 0)
    else:
        candidates, order = [r for r in passed if r["latency_ms"]], lambda r: (r["latency_ms"]["p50"], -r["drift"]["agreement_top1"])
    if not candidates:
        return None
    best = min(candidates, key=order)
    return {"artifact": best["artifact"], "model": best["model"], "target": best["target"],
            "precision": best["precision"], "p50_ms": None if emulated else best["latency_ms"]["p50"],
            "agreement_top1": best["drift"]["agreement_top1"], "cosine": best["drift"]["cosine"],
            "basis": "agreement on the emulated board (its latency means nothing)" if emulated else
                     "latency p50 among the rows that passed"}


def _match_key(row: dict) -> tuple:
    return (row["model"], row["target"], row["precision"], row["device"])


def mark_regressions(rows: list[dict], baseline: dict) -> None:
    """Latency: p50 slower than the baseline's by more than either run's p50-to-p90 spread.
    Fidelity: top-1 agreement below the baseline's 95% bootstrap interval."""
    old_rows = {_match_key(r): r for r in baseline.get("rows", [])}
    for row in rows:
        old = old_rows.get(_match_key(row))
        if old is None or row["status"] != "ok":
            continue
        if row["latency_ms"] and old.get("latency_ms"):
            new, before = row["latency_ms"], old["latency_ms"]
            spread = max(before["p90"] - before["p50"], new["p90"] - new["p50"])
            if new["p50"] - before["p50"] > spread:
                row["regressions"].append(f"latency p50 {new['p50']:.2f} ms vs {before['p50']:.2f} ms in the baseline "
                                          f"(beyond the spread {spread:.2f} ms)")
        if row["drift"] and old.get("drift") and old["drift"].get("agreement_top1_ci95"):
            low = old["drift"]["agreement_top1_ci95"][0]
            if row["drift"]["agreement_top1"] < low:
                row["regressions"].append(f"top-1 agreement {row['drift']['agreement_top1']:.4f} below the baseline's "
                                          f"interval [{low:.4f}, {old['drift']['agreement_top1_ci95'][1]:.4f}]")


def _figure(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


MARKS = {"ok": "✓", "failed": "✗", "gated": "⊘", "unsupported": "–"}  # text symbols: no emoji font needed


def row_notes(r: dict) -> list[str]:
    """What a reader needs to read the row: why it failed, where its figures come from, a precision
    the runtime chose, what its benchmark saw (int8 not faster, the device's state, noise)."""
    drift = r["drift"] or {}
    notes = [r["reason"], where_drift_note(r), layers_note(drift),
             precision_note(r["precision"], drift.get("exec_precision"), drift.get("runtime") or r.get("runtime"))]
    if not r["emulated"]:  # an emulated row's latency is qemu's: its own note says so
        notes += r.get("warnings") or []
    speedup = r["speedup_vs_fp32"]  # its fp32 sibling is timed in another session: bench could not say it
    if speedup is not None and r["precision"] != "fp32" and speedup < 1.0 and not any("not faster" in n for n in notes if n):
        notes.append(f"{r['precision']} not faster than fp32 here ({speedup:.2f}x its p50)")
    return [note for note in notes if note]


def _with_interval(value, interval, spec: str) -> str:
    """A figure and its 95% bootstrap interval: `0.911 [0.875, 0.943]`."""
    if value is None:
        return "-"
    return format(value, spec) + (f" [{format(interval[0], spec)}, {format(interval[1], spec)}]" if interval else "")


def table_rows(report: dict) -> list[list[str]]:
    cells = []
    for r in report["rows"]:
        drift, latency = r["drift"] or {}, r["latency_ms"] or {}
        note = "; ".join(row_notes(r))
        if r["regressions"]:
            note = "REGRESSION: " + "; ".join(r["regressions"]) + (f"; {note}" if note else "")
        cells.append([r["model"], r["target"], r["precision"], r["device"] or "-",
                      f"{MARKS[r['status']]} {r['status']}", _figure(r["size_bytes"], ".2f", 1e-6),
                      _figure(drift.get("accuracy_top1"), ".2f", 100),
                      _with_interval(drift.get("agreement_top1"), drift.get("agreement_top1_ci95"), ".3f"),
                      _figure(drift.get("cosine"), ".4f"), _figure(latency.get("p50"), ".2f"),
                      _figure(latency.get("p90"), ".2f"), _figure(r["speedup_vs_fp32"], ".2f") +
                      ("x" if r["speedup_vs_fp32"] else ""), note])
    return cells


def layers_note(drift: dict) -> str | None:
    """The per-layer view in a word (validation: layers: true); its failed check is a note, not a gate:
    it says the view does not describe the artifact, not that the artifact is wrong."""
    check = drift.get("layers_check") or {}
    if check.get("error"):
        return f"per-layer view: {check['error']}"
    return f"most error enters at {drift['worst']}" if drift.get("worst") else None


def where_drift_note(row: dict) -> str | None:
    """What a reader must know of where the row's figures come from."""
    if row["emulated"]:
        return EMULATED_NOTE
    drift_device = (row.get("drift_device") or {}).get("name")
    if row["device"] not in (None, drift_device) and drift_device is not None:
        return f"drift measured on {drift_device} (this device cannot return outputs)"
    return None


def markdown(report: dict) -> str:
    lines = ["# bbdeploy run", "", f"Pipeline: {report['pipeline']}; {len(report['rows'])} rows; "
             f"{report['wall_s']} s.", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows(report)]
    lines += ["", "## Devices", ""]
    for name, card in report["device_cards"].items():
        lines += card_markdown(name, card)
    lines += ["", "## Recommended per device", ""]
    for device, choice in report["recommended"].items():
        lines.append(f"- **{device}**: " + (f"`{Path(choice['artifact']).name}` ({recommendation_text(choice)})"
                                           if choice else "none passed every check and gate"))
    lines += layer_report.markdown_lines(layer_views(report))
    return "\n".join(lines) + "\n"


def layer_views(report: dict) -> dict:
    """The per-layer views of the run's drifts (validation: layers: true), once per artifact and the
    device that measured it, shaped as drift's report for stages/layer_report.py."""
    views = {}
    for row in report["rows"]:
        drift = row["drift"] or {}
        if drift.get("layers_check"):
            device = row.get("drift_device") or {"name": "local"}
            views.setdefault((row["artifact"], device.get("name")), {
                "artifact": row["artifact"], "target": row["target"], "precision": row["precision"], "device": device,
                **{key: drift[key] for key in LAYER_KEYS}})
    return {"results": list(views.values())}


def recommendation_text(choice: dict) -> str:
    speed = "" if choice["p50_ms"] is None else f"{choice['p50_ms']:.2f} ms p50, "
    return f"{speed}agreement {choice['agreement_top1']:.3f}; by {choice['basis']}"


def device_plots(report: dict) -> list[tuple[str, str]]:
    """(device, inline SVG): latency p50 against top-1 agreement, the Pareto front joined by a line,
    labels placed where they meet no other (run/scatter_svg.py)."""
    several_models = len({r["model"] for r in report["rows"]}) > 1
    images = []
    for device in report["recommended"]:
        rows = [r for r in report["rows"] if r["device"] == device and r["status"] in ("ok", "gated")
                and r["latency_ms"] and r["drift"]]
        if not rows:  # e.g. an emulated board: no latency to plot
            continue
        front = {id(r) for r in pareto_front(rows)}
        points = [{"x": r["latency_ms"]["p50"], "y": 100 * r["drift"]["agreement_top1"], "ok": r["status"] == "ok",
                   "front": id(r) in front,
                   "label": f"{r['model'] + ' ' if several_models else ''}{r['target']} {r['precision']}"} for r in rows]
        images.append((device, scatter_svg(points, title=device, x_label="latency p50 (ms)",
                                           y_label="top-1 agreement with float (%)")))
    return images


def layer_plots(report: dict) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of the per-layer views (SQNR against depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return layer_report.figures(layer_views(report), plt, png_data)


def html_page(report: dict) -> str:
    escape = html.escape
    figures = "".join(f"<figure class='device-plot'>{svg}<figcaption>{escape(device)}</figcaption></figure>"
                      for device, svg in device_plots(report))
    layers = "".join(f"<figure class='layer-plot'><img alt='{escape(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{escape(caption)}</figcaption></figure>" for caption, data in layer_plots(report))
    devices = "".join(card_html(name, card) for name, card in report["device_cards"].items())
    recommended = "".join(f"<li><b>{escape(device)}</b>: " + (escape(Path(c["artifact"]).name) if c else "none")
                          + "</li>" for device, c in report["recommended"].items())
    return html_document("bbdeploy run", f"""<p>{escape(report['pipeline'])}: {len(report['rows'])} rows, {report['wall_s']} s</p>
{html_table(COLUMNS, table_rows(report), "results")}
<h2>Devices</h2>{devices}
<h2>Recommended per device</h2><ul>{recommended}</ul>
{figures}
{layer_report.html_sections(layer_views(report), html_table)}
{layers}""")


def write_run_report(report: dict, folder: Path) -> Path:
    """report.json, report.md and report.html in `folder` (each written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "report.json", report)
    for name, text in (("report.md", markdown(report)), ("report.html", html_page(report))):
        temp = folder / f".{name}.tmp"
        temp.write_text(text, encoding="utf-8")
        temp.replace(folder / name)
    return folder / "report.html"


def read_baseline(path: Path) -> dict:
    from bbdeploy.errors import BBDeployError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise BBDeployError(f"--baseline {str(path)!r} is not readable JSON ({error}); pass the report.json of an "
                            "earlier `bbdeploy run`") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BBDeployError(f"--baseline {str(path)!r} is not a bbdeploy run report; pass OUTPUT/report.json")
    return data
