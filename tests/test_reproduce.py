"""benchmarks/reproduce.py end to end on generated Fashion-MNIST files: the pixel row, the checkpoints'
scores, the plot, a second call that adds only the missing supervised twin, and a run cut short by the time cap."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from reproduce import Score, cut_short_warning, summary_rows
from reproduce import main as reproduce

from tests.fake_data import write_fake_fashion_mnist


def run(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["reproduce.py", *argv])
    reproduce()


def tiny_vicreg(data: Path, out: Path) -> list[str]:
    """reproduce.py's arguments for 4 steps of a tiny VICReg on generated data."""
    return [
        "--methods", "vicreg", "--steps", "4", "--checkpoints", "2", "--data-dir", str(data),
        "--out", str(out), "--no-publish",
        "--data.init_args.batch_size=16", "--data.init_args.num_workers=0", "--model.init_args.projector_dims=[32, 32]",
    ]  # fmt: skip


def test_a_second_call_runs_only_the_missing_supervised_twin(tmp_path, monkeypatch, capsys):
    write_fake_fashion_mnist(tmp_path / "data")
    out = tmp_path / "out"
    common = tiny_vicreg(tmp_path / "data", out)
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


def test_a_run_the_time_cap_stopped_says_so(tmp_path, monkeypatch, capsys):
    """With a zero-minute cap, Lightning's timer stops the run before its first step (and before the
    step-0 checkpoint): the run says so and records no scores."""
    write_fake_fashion_mnist(tmp_path / "data")
    out = tmp_path / "out"
    run(monkeypatch, *tiny_vicreg(tmp_path / "data", out), "--no-supervised", "--minutes", "0")
    assert "stopped pretraining before its first step" in capsys.readouterr().out
    rows = json.loads((out / "fashion_mnist" / "results.json").read_text())
    assert [r["kind"] for r in rows] == ["pixels"]


def test_the_table_and_the_warning_show_a_schedule_cut_short():
    """A run stopped at step 300 of 1200 after 10 minutes: "300 of 1200" in the table, and a warning with
    the machine's rate and both fixes (the minutes the whole schedule needs, or a shorter schedule)."""
    common = {"train_seconds": 600.0, "linear": 0.8, "knn20": 0.8, "knn200": 0.8, "rankme": 10.0, "dim": 128}
    scores = [
        Score("vicreg", "random init", 0, **{**common, "train_seconds": 0.0}, scheduled_steps=1200),
        Score("vicreg", "pretrained", 300, **common, scheduled_steps=1200),
        Score("barlow", "random init", 0, **{**common, "train_seconds": 0.0}, scheduled_steps=300),
        Score("barlow", "pretrained", 300, **common, scheduled_steps=300),
    ]
    assert [row[:2] for row in summary_rows(scores)] == [["vicreg", "300 of 1200"], ["barlow", "300"]]
    warning = cut_short_warning("vicreg", 300, 1200, 600.0)
    assert "step 300 of the 1200 scheduled (30.0 steps/min" in warning
    assert "--minutes 42;" in warning  # 1200 steps at 30 per minute, 5% to spare
    assert warning.endswith("--steps 300.")
