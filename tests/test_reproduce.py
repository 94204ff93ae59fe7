"""benchmarks/reproduce.py end to end on generated Fashion-MNIST files: the pixel row, the checkpoints'
scores, the plot, and a second call that adds only the missing supervised twin."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from reproduce import main as reproduce

from tests.fake_data import write_fake_fashion_mnist


def run(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["reproduce.py", *argv])
    reproduce()


def test_a_second_call_runs_only_the_missing_supervised_twin(tmp_path, monkeypatch, capsys):
    write_fake_fashion_mnist(tmp_path / "data")
    out = tmp_path / "out"
    common = [
        "--methods", "vicreg", "--steps", "4", "--checkpoints", "2", "--data-dir", str(tmp_path / "data"),
        "--out", str(out), "--no-publish",
        "--data.init_args.batch_size=16", "--data.init_args.num_workers=0", "--model.init_args.projector_dims=[32, 32]",
    ]  # fmt: skip
    run(monkeypatch, *common, "--no-supervised")
    first = json.loads((out / "fashion_mnist" / "results.json").read_text())
    assert [(r["kind"], r["step"]) for r in first] == [
        ("pixels", 0), ("random init", 0), ("pretrained", 2), ("pretrained", 4)
    ]  # fmt: skip
    assert (out / "reproduce_fashion_mnist.png").read_bytes()[:4] == b"\x89PNG"
    assert "| raw pixels |" in capsys.readouterr().out

    run(monkeypatch, *common)
    second = json.loads((out / "fashion_mnist" / "results.json").read_text())
    assert second[:4] == first  # the pretraining was not run again: same scores, same times
    assert [(r["kind"], r["step"], r["method"]) for r in second[4:]] == [("supervised", 4, first[1]["method"])]
    assert 0.0 <= second[4]["linear"] <= 1.0
