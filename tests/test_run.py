"""`bbdeploy run` and `bbdeploy init`: the pipeline file, cached stages, fairness to devices, the report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from bbdeploy.exporters.registry import TARGETS
from bbdeploy.run.example import EXAMPLE
from bbdeploy.run.pipeline_file import load_pipeline, parse_pipeline
from tests.conftest import PLUMBING_TARGET, run_cli
from tests.target_checks import target_checks

SMALL_MODEL = {"name": "mobilenet_v1", "weights": "random", "width": 0.25, "input_size": 32}
QUICK_BENCH = {"runs": 3, "warmup": 1, "min_time": 0}
WARM_START_S = 3.0  # what a run costs with every stage cached, before any stage: start-up, imports, manifests


def _write(folder: Path, pipeline: dict) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


def _run(pipeline_file: Path, *args: str, jobs: int = 2, guard=None) -> tuple[int, dict | None, str, float]:
    """`bbdeploy run`; with `guard` (the offline_guard fixture), as a user's shell with every lookup and
    connection recorded."""
    started = time.perf_counter()
    arguments = ("run", str(pipeline_file), "--jobs", str(jobs), "--json", *args)
    done = guard.command(*arguments) if guard else run_cli(*arguments, timeout=900)
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, report, done.stderr, seconds


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith("report.")}


def _overlap(a: dict, b: dict) -> bool:
    return a["started"] < b["finished"] and b["started"] < a["finished"]


def test_init_writes_the_builtin_default(tmp_path):
    done = run_cli("init", str(tmp_path / "bbdeploy.yaml"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bbdeploy.yaml").read_text() == EXAMPLE
    written, builtin = load_pipeline(tmp_path / "bbdeploy.yaml"), load_pipeline(None)
    assert written.output == str(tmp_path / "bbdeploy-run")  # relative to the file's folder
    assert (written.models, written.targets, written.precisions, written.devices) == (
        builtin.models, builtin.targets, builtin.precisions, builtin.devices)
    assert builtin.targets == tuple(TARGETS) and [p.name for p in builtin.precisions] == ["fp32", "int8"]
    again = run_cli("init", str(tmp_path / "bbdeploy.yaml"))
    assert again.returncode == 2 and again.stderr.strip().endswith("exists; pass another path or --force to overwrite it")


BAD_PIPELINES = {
    "malformed yaml": ("models:\n  - name: mobilenet_v2\n targets: [onnx\n", r"^error: FILE:3: not valid YAML \("),
    "unknown key": ("models: [mobilenet_v2]\nprecisions:\n  int8:\n    calib_metod: minmax\n",
                    r"^error: FILE:4: precisions\.int8\.calib_metod: unknown key \(did you mean 'calib_method'\?\)"),
    "wrong type": ("models: [mobilenet_v2]\nbench:\n  runs: many\n",
                   r"^error: FILE:3: bench\.runs: 'many' is a str; pass an integer$"),
    "unknown model": ("models:\n  - name: mobilenet_v9\n",
                      r"^error: FILE:2: models\.0\.name: unknown backbone 'mobilenet_v9' \(did you mean "),
    "unknown target": (f"models: [mobilenet_v2]\ntargets: [{PLUMBING_TARGET}, {PLUMBING_TARGET}x]\n",
                       rf"^error: FILE:2: targets\.1: unknown target '{PLUMBING_TARGET}x' \(did you mean '{PLUMBING_TARGET}'\?\)"),
    "bad exec precision": ("models: [mobilenet_v2]\nbench:\n  exec_precision: f64\n",
                           r"^error: FILE:3: bench\.exec_precision: unknown 'f64'; pass one of default, "),
    "bad int8 choice": ("models: [mobilenet_v2]\nprecisions:\n  int8:\n    calib_method: kl\n",
                        r"^error: FILE:4: precisions\.int8\.calib_method: unknown calib_method 'kl'; pass one of "),
    "unknown top-level key": ("model: [mobilenet_v2]\n", r"^error: FILE:1: model: unknown key \(did you mean 'models'\?\)"),
    "bad device": ("models: [mobilenet_v2]\ndevices:\n  pi:\n    url: telnet://pi\n",
                   r"^error: FILE:4: devices\.pi\.url: 'telnet://pi' is not a device; pass url: local, "),
    # what the device would refuse only at bench time, after the exports, is said at load
    "ssh option as a flag": ("models: [mobilenet_v2]\ndevices:\n  pi:\n    url: ssh://pi@host\n"
                             "    ssh_options: [-i, ~/.ssh/id_ed25519]\n",
                             r"^error: FILE:5: devices\.pi\.ssh_options: item 1: '-i' is not KEY=VALUE \(an `ssh -o` "
                             r"option\); write e\.g\. \[IdentityFile=~/\.ssh/id_ed25519, Port=2222\]$"),
    "unknown emulated board": ("models: [mobilenet_v2]\ndevices:\n  pi:\n    url: qemu://pi9\n",
                               r"^error: FILE:4: devices\.pi\.url: unknown emulated board 'pi9'; pass one of qemu://pi5"),
    "bad ssh address": ("models: [mobilenet_v2]\ndevices:\n  pi:\n    url: ssh://pi@host:99999\n",
                        r"^error: FILE:4: devices\.pi\.url: port 99999 of device 'ssh://pi@host:99999' is out of range"),
}


@pytest.mark.parametrize("case", BAD_PIPELINES)
def test_bad_pipeline_is_one_line_naming_line_and_key(case, tmp_path):
    import re

    text, expected = BAD_PIPELINES[case]
    path = tmp_path / "pipeline.yaml"
    path.write_text(text + f"output: {tmp_path / 'out'}\n")
    done = run_cli("run", str(path))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.search(expected.replace("FILE", re.escape(str(path))), done.stderr.strip()), done.stderr
    assert not (tmp_path / "out").exists()


def test_every_example_line_of_the_init_file_loads_uncommented():
    """`bbdeploy init`'s file documents each option as a commented line: each one, uncommented, is a
    valid pipeline (its devices, options and gates as written), so the template never shows a form the
    code refuses."""
    import re

    commented = re.compile(r"^(\s*)# (\s*)([\w-]+:.*)$")  # `  # key: value`: an example line, not prose
    lines = [commented.sub(r"\1\2\3", line) for line in EXAMPLE.splitlines()]
    assert sum(1 for a, b in zip(EXAMPLE.splitlines(), lines) if a != b) >= 25  # every example line taken
    pipeline = parse_pipeline("\n".join(lines), "uncommented")
    assert [device.url for device in pipeline.devices] == ["local", "qemu://pi5", "ssh://pi@192.168.1.20",
                                                         "adb://SERIAL"]
    assert pipeline.devices[2].ssh_options == ("IdentityFile=~/.ssh/id_ed25519",)
    assert [p.name for p in pipeline.precisions] == ["fp32", "int8", "int8-qat"]
    assert (pipeline.validation.labels, pipeline.validation.limit, pipeline.validation.max_drop) == (
        str(Path.cwd() / "labels.csv"), 1000, 1.0)  # a path of the pipeline, absolute from load on


def test_every_path_is_absolute_from_load_on(tmp_path, monkeypatch):
    """Paths are resolved once, at load: those written in a file from the file's folder, the default
    output from the folder `bbdeploy run` starts in. A job that runs in another folder (a Ray worker
    started elsewhere) gets the same absolute paths."""
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text("models: [{name: mobilenet_v2, weights: ckpt/m.pth, calibration: calib}]\n"
                                          "validation: {data: photos, labels: labels.csv}\noutput: out\n")
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline("lab/pipeline.yaml")
    (model,) = pipeline.models
    assert (model.weights, model.calibration) == (str(folder / "ckpt" / "m.pth"), str(folder / "calib"))
    assert (pipeline.validation.data, pipeline.validation.labels) == (str(folder / "photos"), str(folder / "labels.csv"))
    assert pipeline.output == str(folder / "out")
    assert load_pipeline(None).output == str(tmp_path / "bbdeploy-run")  # the built-in default, from here


def test_parse_reads_lists_and_mappings_alike():
    """The short forms (a model by name, precisions and devices as lists) mean their long forms."""
    short = parse_pipeline("models: [mobilenet_v2]\nprecisions: [fp32, int8]\ndevices: [local]\n", "short")
    long = parse_pipeline("models:\n  - name: mobilenet_v2\nprecisions:\n  fp32: {}\n  int8: {}\ndevices:\n  local: {}\n",
                          "long")
    assert short == long


def _two_device_runs(sshd, folder: Path, guard) -> tuple[Path, dict]:
    """A small model on every target, fp32 and int8, on this machine and on a second device (the
    loopback sshd), with one cold run (two jobs at once) and one warm run of it, both under `guard`."""
    options = sshd["options"]
    pipeline = {"models": [SMALL_MODEL], "targets": "all",
                "precisions": {"fp32": {}, "int8": {"min_cosine": 0.0}},
                "calibration": {"size": 8}, "validation": {"limit": 32},
                "devices": {"local": {}, "board": {"url": sshd["device"], "python": str(guard.board_python),
                                                   "ssh_options": options[1::2]}},
                "bench": QUICK_BENCH, "output": str(folder / "out")}
    path = _write(folder, pipeline)
    code, first, stderr, first_s = _run(path, guard=guard)
    assert code == 0, stderr
    first["stderr"] = stderr
    before = _files(folder / "out")
    code, second, stderr, second_s = _run(path, jobs=1, guard=guard)  # one process: no worker starts for cached results
    assert code == 0, stderr
    return path, {"pipeline": pipeline, "first": first, "second": second, "first_s": first_s,
                  "second_s": second_s, "unchanged": before == _files(folder / "out")}


@pytest.mark.long(seconds=180)
def test_two_devices_cached_stages_fair_benchmarks_and_the_report(sshd, offline_guard, tmp_path):
    """One test, as the runs take two minutes: the cache, device fairness, the report and that nothing
    left the machine (issue 25, see tests/test_offline.py) are each checked on the same pipeline's runs."""
    path, runs = _two_device_runs(sshd, tmp_path, offline_guard)
    assert offline_guard.violations() == []
    _check_benchmarks_never_share_a_device_and_local_ones_run_alone(runs)
    _check_the_report_answers_which_artifact_per_device(runs)
    _check_runs_are_cached_by_branch(path, runs)  # last: it runs the pipeline once more


def _check_runs_are_cached_by_branch(path: Path, runs: dict) -> None:
    first, second = runs["first"], runs["second"]
    rows = first["rows"]
    assert {(r["target"], r["precision"], r["device"]) for r in rows} == {
        (t, p, d) for t in TARGETS for p in ("fp32", "int8") for d in ("local", "board")}
    assert all(r["status"] == "ok" and r["latency_ms"]["p50"] > 0 and r["drift"]["samples"] == 32 for r in rows), rows
    assert all(set(r["stages"].values()) == {"ran"} for r in rows), [r["stages"] for r in rows]
    # the warm run: every stage answered from its cached result, no file rewritten, in < 10% of the time
    # beyond a fixed start-up (interpreter, torch import, manifests: a warm local-only run of the same
    # model took 2.9 s; this cold run got down to 54 s once float exports folded batch norm)
    assert all(set(r["stages"].values()) == {"cached"} for r in second["rows"]), [r["stages"] for r in second["rows"]]
    assert runs["unchanged"]
    assert runs["second_s"] < 0.1 * runs["first_s"] + WARM_START_S, (runs["second_s"], runs["first_s"])
    # one precision's options change: only its branch runs again
    pipeline = runs["pipeline"]
    pipeline["precisions"]["int8"]["bias_correction"] = False
    code, third, stderr, _ = _run(_write(path.parent, pipeline))
    assert code == 0, stderr
    for row in third["rows"]:
        expected = "ran" if row["precision"] == "int8" else "cached"
        assert set(row["stages"].values()) == {expected}, (row["precision"], row["stages"])


def _check_benchmarks_never_share_a_device_and_local_ones_run_alone(runs: dict) -> None:
    jobs = [job for job in runs["first"]["jobs"] if job["started"] is not None]
    benches = [job for job in jobs if job["kind"] == "bench"]
    assert {job["device"] for job in benches} == {"local", "board"}
    for index, a in enumerate(jobs):
        for b in jobs[index + 1:]:
            if a["kind"] == "bench" and b["kind"] == "bench" and a["device"] == b["device"]:
                assert not _overlap(a, b), (a, b)
            if (a["kind"] == "bench" and a["device"] == "local") or (b["kind"] == "bench" and b["device"] == "local"):
                assert not _overlap(a, b), (a, b)


def _check_the_report_answers_which_artifact_per_device(runs: dict) -> None:
    from selenium.webdriver.common.by import By

    from tests.browser import BOXES, chromium, overlapping

    report = runs["first"]
    # stderr is a pipe here: one line per finished job (issue 30: `make demo | tee` showed nothing for minutes)
    done = [line for line in report["stderr"].splitlines() if " done " in line]
    assert {line.split(" done ")[1].split()[0] for line in done} == {"export", "drift", "bench"}, report["stderr"]
    assert len(done) == len(report["jobs"])
    out = Path(runs["pipeline"]["output"])
    for device in ("local", "board"):
        measured = [r for r in report["rows"] if r["device"] == device]
        fastest = min(measured, key=lambda r: r["latency_ms"]["p50"])
        assert report["recommended"][device]["artifact"] == fastest["artifact"]
        for row in measured:
            fp32 = next(r for r in measured if r["target"] == row["target"] and r["precision"] == "fp32")
            assert row["speedup_vs_fp32"] == pytest.approx(fp32["latency_ms"]["p50"] / row["latency_ms"]["p50"])
    markdown = (out / "report.md").read_text()
    assert markdown.count("| mobilenet_v1 |") == len(report["rows"]) and "## Recommended per device" in markdown
    assert json.loads((out / "report.json").read_text())["rows"] == runs["second"]["rows"]  # the last run's
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not any(0x1F000 <= ord(c) <= 0x1FAFF or 0x2600 <= ord(c) <= 0x26FF or ord(c) in (0x2705, 0x274C)
                   for c in page), "a status mark that needs an emoji font"
    with chromium() as browser:
        browser.get((out / "report.html").as_uri())
        table = browser.find_elements(By.CSS_SELECTOR, "table.results tr")
        assert len(table) == len(report["rows"]) + 1
        header = [cell.text for cell in table[0].find_elements(By.TAG_NAME, "th")]
        for tr, row in zip(table[1:], report["rows"]):  # the rows are in report order
            cells = dict(zip(header, (td.text for td in tr.find_elements(By.TAG_NAME, "td"))))
            low, high = row["drift"]["agreement_top1_ci95"]
            assert cells["agreement [95% CI]"] == f"{row['drift']['agreement_top1']:.3f} [{low:.3f}, {high:.3f}]"
            assert cells["status"] == "✓ ok"
            exec_precision = row["drift"]["exec_precision"]
            if exec_precision in ("bf16", "f16"):  # e.g. OpenVINO on a CPU with native bf16
                assert f"ran in {exec_precision}: " in cells["note"], cells
            for warning in row["warnings"]:  # what its benchmark saw (int8 not faster, the device's state)
                assert warning in cells["note"]
        cards = browser.find_elements(By.CSS_SELECTOR, "section.device-card")
        assert [card.get_attribute("data-device") for card in cards] == ["local", "board"]
        for card in cards:
            fields = dict(zip((dt.text for dt in card.find_elements(By.TAG_NAME, "dt")),
                              (dd.text for dd in card.find_elements(By.TAG_NAME, "dd"))))
            assert fields["cores"] == str(os.cpu_count()) and fields["threads"] == "1"
            assert fields["load average"].count(".") == 3  # read on the device
            assert set(fields["execution precision"].split(", ")) == {
                f"{r['target']} {r['precision']}: {r['drift']['exec_precision']}" for r in report["rows"]
                if r["device"] == card.get_attribute("data-device") and r["drift"]["exec_precision"]}
            assert all(name in fields["runtimes"] for name in {r["runtime"] for r in report["rows"]})
        plots = browser.find_elements(By.CSS_SELECTOR, "figure.device-plot")
        assert [p.find_element(By.TAG_NAME, "figcaption").text for p in plots] == ["local", "board"]
        for laid_out in browser.execute_script(BOXES):
            assert len(laid_out["labels"]) == len(report["rows"]) // 2  # one per artifact on that device
            assert overlapping([label["box"] for label in laid_out["labels"]]) == []


@pytest.mark.long(seconds=60)
def test_a_failing_row_is_reported_and_the_others_finish(tmp_path):
    """One model's calibration folder is missing: its rows fail at export with the reason, the other
    model's rows are measured, exit 1."""
    pipeline = {"models": [SMALL_MODEL, {**SMALL_MODEL, "width": 0.5, "calibration": "no-such-folder"}],
                "targets": [PLUMBING_TARGET], "precisions": {"int8": {"min_cosine": 0.0}}, "calibration": {"size": 8},
                "validation": {"limit": 16}, "devices": {"local": {}}, "bench": QUICK_BENCH,
                "output": str(tmp_path / "out")}
    code, report, stderr, _ = _run(_write(tmp_path, pipeline))
    assert code == 1, stderr
    good, bad = report["rows"]
    assert good["status"] == "ok" and good["latency_ms"] is not None
    assert bad["status"] == "failed" and bad["stage"] == "export" and "no-such-folder" in bad["reason"], bad
    assert report["recommended"]["local"]["artifact"] == good["artifact"]


@pytest.mark.long(seconds=60)
def test_baseline_marks_a_slowed_artifact_as_a_regression(tmp_path):
    """The baseline is a real run at width 0.25 and 32 px; the same row (model, target, precision, device)
    at width 1.0 and 224 px is ~700x the MACs, slower by far more than either run's p50-to-p90 spread even
    beside the other test worker (at width 0.25 and 224 px, 1.2 ms against a p90 of 5.3 ms once did not)."""
    pipeline = {"models": [SMALL_MODEL], "targets": [PLUMBING_TARGET], "precisions": ["fp32"],
                "validation": {"limit": 8}, "devices": {"local": {}}, "bench": {**QUICK_BENCH, "runs": 20},
                "output": str(tmp_path / "before")}
    code, before, stderr, _ = _run(_write(tmp_path, pipeline))
    assert code == 0, stderr
    slowed = {**pipeline, "models": [{**SMALL_MODEL, "width": 1.0, "input_size": 224}],
              "output": str(tmp_path / "after")}
    baseline = str(tmp_path / "before" / "report.json")
    code, after, stderr, _ = _run(_write(tmp_path, slowed), "--baseline", baseline, "--fail-on-regression")
    assert code == 1, stderr
    (row,) = after["rows"]
    assert row["regressions"] and row["regressions"][0].startswith("latency p50"), row
    assert "REGRESSION: latency p50" in (tmp_path / "after" / "report.md").read_text()
    # against itself nothing regresses
    code, again, stderr, _ = _run(_write(tmp_path, pipeline), "--baseline", baseline, "--fail-on-regression")
    assert code == 0 and again["rows"][0]["regressions"] == [], (stderr, again["rows"][0])


@pytest.mark.long(seconds=40)
def test_an_unreachable_device_fails_its_rows_and_the_others_finish(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    pipeline = {"models": [SMALL_MODEL], "targets": [PLUMBING_TARGET], "precisions": ["fp32"], "validation": {"limit": 8},
                "devices": {"local": {}, "gone": {"url": f"ssh://nobody@127.0.0.1:{closed}",
                                                  "ssh_options": ["ConnectTimeout=5", "BatchMode=yes"]}},
                "bench": QUICK_BENCH, "output": str(tmp_path / "out")}
    code, report, stderr, _ = _run(_write(tmp_path, pipeline))
    assert code == 1, stderr
    rows = {row["device"]: row for row in report["rows"]}
    assert rows["local"]["status"] == "ok" and rows["local"]["latency_ms"]["p50"] > 0
    # its drift is measured there too (issue 26): the row fails at the first stage that needs the board
    assert rows["gone"]["status"] == "failed" and rows["gone"]["stage"] == "drift", rows["gone"]
    assert rows["gone"]["reason"].startswith(f"cannot connect to ssh://nobody@127.0.0.1:{closed}: ")
    assert report["recommended"] == {"local": report["recommended"]["local"], "gone": None}


@pytest.mark.long(seconds=50)
def test_drift_is_measured_on_each_device_and_emulated_latency_is_never_compared(on_board, tmp_path):
    """local + qemu://pi5: each row's drift is its device's own (a target whose runtime picks another
    precision on the board, EXEC_PRECISION_ON_PI5 in its test module: OpenVINO computes an fp32 IR in f16
    on a Cortex-A76 by default, in f32 or bf16 here), the board's rows are marked emulated, carry no
    latency for speed-ups, and its recommendation is by agreement; a rerun is answered from the cache."""
    import platform

    from bbdeploy.run.report import EMULATED_NOTE

    target = next(name for name in TARGETS if getattr(target_checks(name), "EXEC_PRECISION_ON_PI5", None))
    checks = target_checks(target)
    pipeline = {"models": [SMALL_MODEL], "targets": [target],
                "precisions": {"fp32": {}, "int8": {"min_cosine": 0.0}}, "calibration": {"size": 8},
                "validation": {"limit": 8, "layers": True, "layer_samples": 4},
                "devices": {"local": {}, "pi5": {"url": "qemu://pi5"}}, "bench": QUICK_BENCH, "output": str(tmp_path / "out")}
    path = _write(tmp_path, pipeline)
    code, report, stderr, _ = _run(path)
    assert code == 0, stderr
    rows = {(r["target"], r["precision"], r["device"]): r for r in report["rows"]}
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values()), rows
    # validation: layers: the per-layer view of each artifact where its drift ran, on the board too
    layers = {key: [layer["layer"] for layer in row["drift"]["layers"]] for key, row in rows.items()}
    assert len(set(map(tuple, layers.values()))) == 1 and len(layers[(target, "int8", "pi5")]) > 10, layers
    assert all(row["drift"]["layer_samples"] == 4 for row in rows.values())
    for (target, precision, device), row in rows.items():
        measured_on = row["drift_device"]
        if device == "local":
            assert (measured_on["name"], measured_on["emulated"], row["emulated"]) == ("local", False, False)
            assert row["latency_ms"]["p50"] > 0 and row["speedup_vs_fp32"] is not None
        else:
            assert (measured_on["name"], measured_on["machine"], measured_on["emulated"]) == ("qemu://pi5", "aarch64", True)
            assert row["emulated"] and row["latency_ms"] is None and row["speedup_vs_fp32"] is None
            assert row["emulated_latency_ms"]["p50"] > 0
    assert rows[(target, "fp32", "pi5")]["drift"]["exec_precision"] == checks.EXEC_PRECISION_ON_PI5
    assert rows[(target, "fp32", "local")]["drift"]["exec_precision"] == checks.exec_precision_reported(None)
    assert rows[(target, "fp32", "pi5")]["drift"]["cosine"] != rows[(target, "fp32", "local")]["drift"]["cosine"]
    pi5, local = report["recommended"]["pi5"], report["recommended"]["local"]
    assert pi5["p50_ms"] is None and pi5["basis"].startswith("agreement on the emulated board")
    best = max((r for r in rows.values() if r["device"] == "pi5"), key=lambda r: r["drift"]["agreement_top1"])
    assert pi5["agreement_top1"] == best["drift"]["agreement_top1"]
    assert local["p50_ms"] == min(r["latency_ms"]["p50"] for r in rows.values() if r["device"] == "local")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.count(EMULATED_NOTE) == 2
    # each device's card: what the board said of itself (qemu's Pi 5 record), this machine's own facts
    pi5_card = markdown.split("### pi5\n", 1)[1].split("###", 1)[0]
    assert "- URL: qemu://pi5\n" in pi5_card and "- CPU: aarch64 Cortex-A76\n" in pi5_card, pi5_card
    assert "- board: Raspberry Pi 5 Model B" in pi5_card and "- emulated: yes, by qemu-user on " in pi5_card
    local_card = markdown.split("### local\n", 1)[1].split("###", 1)[0]
    assert f"- CPU: {platform.machine()} " in local_card and "- emulated: no\n" in local_card, local_card
    for precision in ("fp32", "int8"):  # the run's per-layer sections, one per artifact and device
        name = Path(rows[(target, precision, "local")]["artifact"]).name
        assert f"## Where the error enters {name} (on its runtime on qemu://pi5, 4 images)" in markdown
        assert f"## Where the error enters {name} (on its runtime on local, 4 images)" in markdown
    code, again, stderr, _ = _run(path, jobs=1)
    assert code == 0, stderr
    assert all(set(r["stages"].values()) == {"cached"} for r in again["rows"]), [r["stages"] for r in again["rows"]]
