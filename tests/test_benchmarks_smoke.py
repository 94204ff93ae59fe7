"""Smoke runs of ``benchmarks/roofline.py`` and ``benchmarks/gpu.py`` at tiny sizes on the CPU: they
run to the end, print (roofline) or write (gpu) their tables, and every number in them is finite and
positive. ``gpu.py`` runs without jsonargparse and litdata (``tests/hide_packages.py``), as on the GPU
machine it is written for, and keeps going past a part that fails. Nothing is appended to
``benchmarks/RESULTS.md``."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
HIDE_PACKAGES = Path(__file__).with_name("hide_packages.py")
TINY_ROOFLINE = ["--accelerator", "cpu", "--batch-size", "4", "--steps", "1", "--warmup", "1", "--no-publish"]
TRAINING_PARTS = ["vicreg", "ijepa", "fsdp", "ijepa_compiled", "vicreg_compiled"]


def run(script: str, *args: str, hide_packages: bool = False, expect: int = 0) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> args`` (through ``hide_packages.py`` if asked) in a subprocess;
    its exit status must be ``expect``."""
    command = [sys.executable, *([str(HIDE_PACKAGES)] if hide_packages else []), f"benchmarks/{script}", *args]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == expect, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def table(text: str, first_column: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with ``first_column``, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    columns = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True)))
    return rows


def positive(cell: str) -> float:
    """A table cell's number (``1,234.5``, ``42.0%``), which must be finite and positive."""
    value = float(cell.replace(",", "").rstrip("%"))
    assert math.isfinite(value) and value > 0, cell
    return value


@pytest.fixture
def results_unchanged():
    """The smoke runs must not append to RESULTS.md."""
    before = RESULTS.read_text()
    yield
    assert RESULTS.read_text() == before


def roofline_rows(*args: str) -> list[dict[str, str]]:
    """The method table of a tiny ``roofline.py`` run, each row's FLOP/s and share checked against its own
    FLOPs per step, speed and the printed roofline."""
    output = run("roofline.py", *TINY_ROOFLINE, "--matmul-size", "512", *args).stdout
    roofline = positive(re.search(r"- roofline: ([\d,.]+) GFLOP/s", output).group(1))
    rows = table(output, "method")
    for row in rows:
        flops, speed, achieved = (positive(row[key]) for key in ("GFLOP/step", "images/s", "GFLOP/s"))
        # batch 4; images/s and GFLOP/s are printed to 0.1, which on a loaded machine is several percent
        rounding = 0.05 / speed + 0.05 / achieved
        assert achieved == pytest.approx(flops * speed / 4, rel=0.01 + rounding)
        assert positive(row["share of roofline"]) == pytest.approx(
            100 * achieved / roofline, rel=0.02 + rounding, abs=0.1
        )
    return rows


def test_roofline_every_method_eager(results_unchanged):
    rows = roofline_rows("--no-compile")
    methods = ["vicreg", "barlow_twins", "blockwise_barlow_twins", "ijepa", "flexpredict", "lejepa"]
    assert [(row["method"], row["variant"]) for row in rows] == [
        (method, variant) for method in methods for variant in ("eager", "eager, oneDNN linears")
    ]
    jepa = {row["method"]: row["shape"] for row in rows}
    assert jepa["ijepa"] == "64 px, batch 4" and jepa["vicreg"] == "32 px, batch 4"  # ViT-Tiny's 64 px by default


def test_roofline_compiled_rows(results_unchanged):
    """The compiled variant of one method (every method compiling: tests/test_compile.py)."""
    rows = roofline_rows("--methods", "vicreg", "--compile-backend", "aot_eager")
    assert [row["variant"] for row in rows] == ["eager", "eager, oneDNN linears", "torch.compile"]


def test_roofline_profile_splits_matmuls_from_the_rest(results_unchanged):
    output = run("roofline.py", *TINY_ROOFLINE, "--profile", "ijepa", "--profile-steps", "2", "--top", "5").stdout
    top = table(output, "op")
    assert len(top) == 5 and all(positive(row["ms/step"]) for row in top)
    # on a CPU the profiled step runs its linear layers as oneDNN convolutions
    matmuls = {"aten::mm", "aten::addmm", "aten::mkldnn_convolution", "aten::convolution_backward"}
    assert matmuls & {row["op"] for row in top if row["group"] == "matmul/conv/attention"}
    groups = {row["group"]: row["share"] for row in table(output, "group")}
    assert list(groups) == ["matmul/conv/attention", "everything else", "outside the ops"]
    assert positive(groups["matmul/conv/attention"]) and positive(groups["everything else"])
    assert sum(float(share.rstrip("%")) for share in groups.values()) == pytest.approx(100, abs=0.2)


def test_gpu_smoke_without_jsonargparse_and_litdata(tmp_path, results_unchanged):
    output = run("gpu.py", "--smoke", "--accelerator", "cpu", "--out", str(tmp_path), hide_packages=True).stdout
    parts = json.loads((tmp_path / "gpu_results.json").read_text())["parts"]
    assert list(parts) == ["matmul", "data", *TRAINING_PARTS]
    assert all(part["status"] == "ok" for part in parts.values()), parts
    assert positive(str(parts["matmul"]["tflops"]))
    assert positive(str(parts["data"]["images_per_second"])) and positive(str(parts["data"]["ijepa_images_per_second"]))
    for name in TRAINING_PARTS:
        for key in ("images_per_second", "gflop_per_step", "tflops", "mfu_measured_peak"):
            positive(str(parts[name][key]))
    assert parts["ijepa_compiled"]["gflop_per_step"] == parts["ijepa"]["gflop_per_step"]
    rows = table((tmp_path / "gpu_results.md").read_text(), "part")
    assert [row["part"] for row in rows] == list(parts)
    for row in rows[2:]:
        for column in ("images/s", "GFLOP/step", "TFLOP/s"):
            positive(row[column])
        # a tiny step on a loaded CPU can be below 0.05% of the matmul peak: the cell is the JSON's, rounded
        mfu = parts[row["part"]]["mfu_measured_peak"]
        assert float(row["MFU (measured)"].rstrip("%")) == pytest.approx(100 * mfu, abs=0.05)
    assert all(f'{{"{name}": ' in output for name in parts)  # each part printed as it finished


def test_gpu_part_failure_is_recorded_and_the_next_part_runs(tmp_path):
    args = ["--smoke", "--accelerator", "cpu", "--out", str(tmp_path), "--compile-backend", "no_such_backend"]
    result = run("gpu.py", *args, "--parts", "ijepa_compiled", "data", hide_packages=True, expect=1)
    parts = json.loads((tmp_path / "gpu_results.json").read_text())["parts"]
    assert parts["ijepa_compiled"]["status"] == "error" and "no_such_backend" in parts["ijepa_compiled"]["error"]
    assert parts["data"]["status"] == "ok" and positive(str(parts["data"]["images_per_second"]))
    assert "parts that failed: ijepa_compiled" in result.stderr


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("gpu", ["--accelerator", "cpu", "--out", "unused"], "no CUDA GPU here"),
        ("gpu", ["--smoke", "--steps", "0", "--out", "unused"], "--steps must be at least 1"),
        ("roofline", ["--warmup", "0"], "--warmup must be at least 1"),
        ("roofline", ["--batch-size", "-2"], "--batch-size must be a positive integer"),
    ],
)
def test_argument_errors(script, args, message, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(script).parse_args()
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_host_syncs_counts_the_sync_warnings_of_the_timed_steps(monkeypatch):
    """``gpu.py --sync-debug``'s counter, with CUDA's sync debug mode stood in for (no GPU here)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    gpu = importlib.import_module("gpu")
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    counter = gpu.HostSyncs(warmup=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch_idx in range(3):
            counter.on_train_batch_start(None, None, None, batch_idx)
            warnings.warn(gpu.HostSyncs.MESSAGE, stacklevel=1)  # one host sync per step; the first is untimed
            warnings.warn("not a sync", stacklevel=1)
        counter.on_train_epoch_end(None, None)
        warnings.warn(gpu.HostSyncs.MESSAGE, stacklevel=1)  # after the timed steps
        counter.on_train_end(None, None)
    assert counter.count == 2 and modes == ["warn", "default"]
    assert counter.sites[0][1] == 2 and counter.sites[0][0].startswith(__file__)
