"""The Rich tables the commands print (on stderr): one function per table, fed the rows the library
returns, so a command reads as what it asks for and what it prints."""

from __future__ import annotations

from pathlib import Path


def backbones_table(rows: list[dict], detail: bool):
    """`bbdeploy models`: one row per backbone; with --detail its channels and receptive field."""
    from rich.table import Table

    table = Table(title="bbdeploy backbones")
    columns = ["name", "params", "MACs", "input", "widths", "ImageNet weights"]
    if detail:
        columns += ["channels s2/s4/s8/s16/s32", "receptive field"]
    for column in columns:
        table.add_column(column, no_wrap=column == "name",
                         justify="right" if column in ("params", "MACs", "input", "receptive field") else "left")
    for row in rows:
        cells = [row["name"], f"{row['params'] / 1e6:.2f}M", f"{row['macs'] / 1e6:.0f}M",
                 str(row["input_size"]), " ".join(str(w) for w in row["widths"]) or "-",
                 _weights_status(row["imagenet"])]
        if detail:
            stages = row["stages"]
            cells += ["/".join(str(s["channels"]) for s in stages["stages"]), receptive_field(stages["stages"][-1])]
        table.add_row(*cells)
    return table


def receptive_field(stage: dict) -> str:
    """A stage's receptive field in pixels, "+ global" where squeeze-excite sees the whole image."""
    return f"{stage['receptive_field']} px" + (" + global (SE)" if stage["global_context"] else "")


def stage_table(described: dict):
    """The --stages table: one row per stage, the receptive field marked where it exceeds the input."""
    from rich.table import Table

    size = described["input_size"]
    table = Table(title=f"stages at {size}x{size} px (receptive field: r += (k-1)*j, j *= s; max over branches)")
    for column in ("stage", "stride", "feature map", "channels", "receptive field", "params", "MACs", "ends at"):
        table.add_column(column, justify="left" if column == "ends at" else "right")
    for stage in described["stages"]:
        field = receptive_field(stage) + (" > input" if stage["receptive_field"] >= size else "")
        table.add_row(str(stage["index"]), str(stage["stride"]), "x".join(map(str, stage["size"])),
                      str(stage["channels"]), field, f"{stage['params'] / 1e6:.3f}M", f"{stage['macs'] / 1e6:.1f}M",
                      stage["end"])
    return table


def print_export_table(console, rows: list[dict]) -> None:
    """One row per artifact; failures are spelled out in full under the table."""
    from rich.table import Table

    table = Table(title="bbdeploy export")
    for column in ("", "target", "precision", "artifact", "MB", "max |diff|", "top-1 agree", "cosine"):
        table.add_column(column, no_wrap=column == "artifact")
    for row in rows:
        parity = row["parity"]
        if row["artifact"] is None:  # nothing converted
            table.add_row("✗", row["target"], row["precision"], "failed (see below)", "", "", "", "")
            continue
        table.add_row("✗" if row["status"] == "failed" else "✓", row["target"], row["precision"],
                      Path(row["artifact"]).name + (" (cached)" if row["status"] == "cached" else ""),
                      f"{row['bytes'] / 1e6:.1f}", _figure(parity["max_abs_diff"], ".1e"),
                      _figure(parity["top1_agreement"], ".0%"), _figure(parity["cosine"], ".4f"))
    console.print(table)
    for row in rows:
        if row["status"] == "failed":
            console.print(f"✗ {row['target']} {row['precision']}: {row['error']}", soft_wrap=True)


def print_drift_table(console, result: dict) -> None:
    from rich.table import Table

    from bbdeploy.stages.drift_report import COLUMNS, device_line, result_rows

    table = Table(title=f"bbdeploy drift ({result['data']['images']} images, labels: {result['data']['labels']})",
                  caption=device_line(result["device"]))
    keep = [COLUMNS.index(c) for c in ("", "artifact", "precision", "exec", "top-1", "drop (pts)", "agree top-1",
                                       "agree 95% CI", "cosine", "SQNR dB")]
    for index in keep:
        table.add_column(COLUMNS[index], no_wrap=COLUMNS[index] == "artifact")
    for row in result_rows(result):
        table.add_row(*(row[index] for index in keep))
    console.print(table)
    for row in result["results"]:
        if row.get("worst"):
            worst = next(layer for layer in row["layers"] if layer["layer"] == row["worst"])
            console.print(f"{Path(row['artifact']).name}: the most error enters at {row['worst']} "
                          f"(loses {worst['delta_db']:.1f} dB, SQNR {worst['sqnr_db']:.1f} dB after it; "
                          f"{row['layer_samples']} images, on its runtime)", soft_wrap=True)
        if row.get("simulated_sensitivity"):
            simulated = row["simulated_sensitivity"]
            console.print(f"{Path(row['artifact']).name}: most sensitive layers when quantized alone in PyTorch "
                          f"(simulated) {', '.join(r['layer'] for r in simulated['ranked'][:5])}; try "
                          f"{simulated['suggest']}", soft_wrap=True)


def print_bench_table(console, result: dict) -> None:
    from rich.table import Table

    from bbdeploy.stages.drift_report import device_line

    facts = result["device"]
    table = Table(title=f"bbdeploy bench on {facts['name']} ({facts.get('cpu')}, {facts.get('cores')} cores)",
                  caption=device_line(facts))
    # MLPerf Mobile's headline is p90: first where a row was timed by that rule
    order = ("p90", "p50", "p99") if any(row.get("profile") == "mlperf" for row in result["results"]) else ("p50", "p90", "p99")
    for column in ("", "artifact", "precision", "exec", "threads", "runs", *(f"{q} ms" for q in order), "mean ms",
                   "MB", "load RSS MB", "device state"):
        table.add_column(column, no_wrap=column == "artifact")
    for row in result["results"]:
        if row["status"] == "failed":
            table.add_row("✗", Path(row["artifact"]).name, row["precision"], *[""] * 7, f"{row['size_bytes'] / 1e6:.1f}",
                          "", "")
            continue
        latency = row["latency_ms"]
        rss = row["load_rss_bytes"]
        ms = {key: "-" if value is None else f"{value:.3f}" for key, value in latency.items()}
        table.add_row("✓", Path(row["artifact"]).name, row["precision"], row["exec_precision"] or "-",
                      str(row["threads"]), str(row["runs"]), *(ms[q] for q in order), ms["mean"],
                      f"{row['size_bytes'] / 1e6:.1f}", "-" if rss is None else f"{rss / 1e6:.0f}", state_cell(row))
    console.print(table)
    for row in result["results"]:
        if row["status"] == "failed":
            console.print(f"✗ {Path(row['artifact']).name}: {row['error']}", soft_wrap=True)
        for warning in row["warnings"]:
            console.print(f"[bold yellow]warning:[/] {Path(row['artifact']).name}: {warning}", soft_wrap=True)


def state_cell(row: dict) -> str:
    """The device's state around a row's runs in a few words: governor, MHz and hottest °C before ->
    after, the cores it was pinned to; "-" where the device exposes none of it."""
    from bbdeploy.targets.runner.device_state import hottest_c

    before, after = row.get("state_before") or {}, row.get("state_after") or {}
    parts = []
    governors = sorted({core["governor"] for core in after.get("cpus") or [] if core["governor"]})
    if governors:
        parts.append("/".join(governors))

    def mhz(state: dict) -> float | None:
        values = [core["cur_mhz"] for core in state.get("cpus") or [] if core["cur_mhz"] is not None]
        return max(values) if values else None

    for unit, read in (("MHz", mhz), ("°C", hottest_c)):
        start, end = read(before), read(after)
        if start is not None and end is not None:
            parts.append(f"{start:.0f}->{end:.0f} {unit}")
    if row.get("cpus"):
        parts.append("cpus " + ",".join(map(str, row["cpus"])))
    return ", ".join(parts) or "-"


def print_run_table(console, source, report: dict) -> None:
    """`bbdeploy run`: one row per job; long reasons as numbered notes under the table."""
    from rich.table import Table

    from bbdeploy.run.report import COLUMNS, table_rows

    table = Table(title=f"bbdeploy run: {source}")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    reasons = []
    for row in table_rows(report):
        if row[-1]:
            reasons.append(row[-1])
            row[-1] = f"[{len(reasons)}]"
        table.add_row(*row)
    console.print(table)
    for number, reason in enumerate(reasons, 1):
        console.print(f"[{number}] {reason}", markup=False, highlight=False)
    for device, choice in report["recommended"].items():
        console.print(f"recommended on {device}: " + (Path(choice["artifact"]).name if choice else "none passed"))


def _figure(value: float | None, spec: str) -> str:
    """A parity figure, or "n/a" where the artifact's outputs were not finite."""
    return "n/a" if value is None else format(value, spec)


def _weights_status(imagenet: dict | None) -> str:
    """Where `--weights imagenet` would come from, in a few words."""
    if imagenet is None:
        return "none published"
    if imagenet["offline"]:
        return "offline (" + imagenet["source"].split()[0] + ")"
    return "download" if imagenet["url"] else "bring your own"
