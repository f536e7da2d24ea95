"""The per-layer parts of the drift report: the runtime's own per-layer view (`drift --layers`,
stages/layer_diff.py) as a table and a plot of SQNR against depth, one line per artifact with its worst
layer marked; and the simulated ranking (`--simulate-layers`, quantization/sensitivity.py), which is
said to be simulated wherever it is shown."""

from __future__ import annotations

import html
from pathlib import Path

SIMULATED_SHOWN = 15  # layers of the simulated ranking shown per artifact
RUNTIME_VIEW = ("On its runtime: each layer's output against the float model's at the same point, on the "
                "same images; *loses* is the SQNR a layer loses against its own input (the error it adds).")
SIMULATED_VIEW = ("Simulated in PyTorch: each layer quantized alone in the float model, ranked by the logits' "
                  "SQNR; a guide for --keep-float, not what a runtime computed.")


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _runtime_rows(result: dict) -> list[list[str]]:
    rows = []
    for depth, row in enumerate(result["layers"]):
        name = " + ".join([row["layer"], *row["fused_with"]])
        mark = "worst" if row["layer"] == result["worst"] else ""
        rows.append([str(depth), name, _number(row["input_sqnr_db"]), _number(row["sqnr_db"]),
                     _number(row["delta_db"], 2), _number(row["cosine"], 4), mark, row["note"] or ""])
    return rows


RUNTIME_COLUMNS = ["depth", "layer", "input SQNR dB", "SQNR dB", "loses dB", "cosine", "", "note"]


def _where(result: dict) -> str:
    device = (result.get("device") or {}).get("name") or "local"
    return f"on its runtime on {device}, {result['layer_samples']} images"


def _check_text(result: dict) -> str:
    check = result["layers_check"]
    if check.get("error"):
        return f"Check failed: {check['error']}."
    points = [point for point in check.get("points", []) if point["seen"]]
    if result.get("outputs"):  # feature maps: each at the layer that writes or reads it
        seen = "; ".join(f"{p['output']} {_number(p['output_sqnr_db'], 2)} dB, {p['layer']}'s {p['point']} "
                         f"{_number(p['layer_sqnr_db'], 2)} dB" for p in points)
        unseen = [p["output"] for p in check["points"] if not p["seen"]]
        return (f"Check: {seen} on the same {result['layer_samples']} images (within {check['tolerance_db']} dB)"
                + (f"; {', '.join(unseen)}: no layer writes or reads it" if unseen else "") + ".")
    return (f"Check: the last layer ({check['last_layer']}) reads {_number(check['last_sqnr_db'], 2)} dB, the "
            f"artifact's output {_number(check['output_sqnr_db'], 2)} dB on the same {result['layer_samples']} "
            f"images (within {check['tolerance_db']} dB).")


def markdown_lines(report: dict) -> list[str]:
    lines = []
    for result in report["results"]:
        name = Path(result["artifact"]).name
        if result.get("layers_check"):
            lines += ["", f"## Where the error enters {name} ({_where(result)})", "",
                      RUNTIME_VIEW, "", _check_text(result)]
            if result["layers"]:
                lines += ["", "| " + " | ".join(RUNTIME_COLUMNS) + " |", "|" + "---|" * len(RUNTIME_COLUMNS)]
                lines += ["| " + " | ".join(row) + " |" for row in _runtime_rows(result)]
        if result.get("simulated_sensitivity"):
            simulated = result["simulated_sensitivity"]
            lines += ["", f"## Most sensitive layers of {name} (simulated in PyTorch)", "", SIMULATED_VIEW, "",
                      "| layer | logit SQNR dB | cosine | agree top-1 |", "|---|---|---|---|"]
            lines += [f"| `{row['layer']}` | {_number(row['sqnr_db'])} | {row['cosine']:.4f} | "
                      f"{100 * row['agreement_top1']:.2f}% |" for row in simulated["ranked"][:SIMULATED_SHOWN]]
            lines += ["", f"Suggestion: `{simulated['suggest']}`"]
    return lines


def html_sections(report: dict, html_table) -> str:
    escape = html.escape
    sections = []
    for result in report["results"]:
        name = escape(Path(result["artifact"]).name)
        if result.get("layers_check"):
            sections.append(f"<h2>Where the error enters {name} ({escape(_where(result))})</h2>"
                            f"<p>{escape(RUNTIME_VIEW)}</p><p class='check'>{escape(_check_text(result))}</p>"
                            + (html_table(RUNTIME_COLUMNS, _runtime_rows(result), "layers") if result["layers"] else ""))
        if result.get("simulated_sensitivity"):
            simulated = result["simulated_sensitivity"]
            rows = [[row["layer"], _number(row["sqnr_db"]), f"{row['cosine']:.4f}",
                     f"{100 * row['agreement_top1']:.2f}%"] for row in simulated["ranked"][:SIMULATED_SHOWN]]
            sections.append(f"<h2>Most sensitive layers of {name} (simulated in PyTorch)</h2>"
                            f"<p>{escape(SIMULATED_VIEW)}</p>"
                            + html_table(["layer", "logit SQNR dB", "cosine", "agree top-1"], rows, "simulated")
                            + f"<p>Suggestion: <code>{escape(simulated['suggest'] or '')}</code></p>")
    return "".join(sections)


def figures(report: dict, plt, png_data) -> list[tuple[str, str]]:
    """SQNR against depth, one line per artifact (and device), the worst layer marked; then the
    simulated ranking's bars per int8 artifact."""
    images = []
    # a line per artifact with at least one compared layer (not one whose runtime could not be probed)
    probed = [r for r in report["results"] if any(row["sqnr_db"] is not None for row in r.get("layers") or [])]
    if probed:
        figure, axis = plt.subplots(figsize=(9, 4))
        for result in probed:
            depths = [d for d, row in enumerate(result["layers"]) if row["sqnr_db"] is not None]
            values = [result["layers"][d]["sqnr_db"] for d in depths]
            device = (result.get("device") or {}).get("name", "local")
            (line,) = axis.plot(depths, values, marker=".", linewidth=1,
                                label=f"{result['target']} {result['precision']} ({device})")
            worst = next((d for d, row in enumerate(result["layers"]) if row["layer"] == result["worst"]), None)
            if worst is not None and result["layers"][worst]["sqnr_db"] is not None:
                axis.plot([worst], [result["layers"][worst]["sqnr_db"]], marker="v", markersize=10,
                          color=line.get_color())
                axis.annotate(result["worst"], (worst, result["layers"][worst]["sqnr_db"]), fontsize=7,
                              xytext=(4, -12), textcoords="offset points", color=line.get_color())
        axis.set_xlabel("layer (network order)")
        axis.set_ylabel("SQNR of the layer's output (dB)")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        images.append(("SQNR against depth, on each artifact's runtime (▼ the layer that loses the most)",
                       png_data(figure)))
        plt.close(figure)
    for result in report["results"]:
        if not result.get("simulated_sensitivity"):
            continue
        ranked = result["simulated_sensitivity"]["ranked"][:SIMULATED_SHOWN]
        figure, axis = plt.subplots(figsize=(7, 0.3 * len(ranked) + 1))
        axis.barh([row["layer"] for row in ranked][::-1], [row["sqnr_db"] or 0.0 for row in ranked][::-1],
                  color="#dd8452")
        axis.set_xlabel("logit SQNR with only this layer quantized (dB, lower = more sensitive)")
        axis.tick_params(axis="y", labelsize=8)
        figure.tight_layout()
        images.append((f"Per-layer sensitivity of {Path(result['artifact']).name} (simulated in PyTorch)",
                       png_data(figure)))
        plt.close(figure)
    return images
