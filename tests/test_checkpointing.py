"""Atomic checkpoint writes, and a resumable checkpoint in every training example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ssl_lightning.checkpointing import AtomicCheckpointIO
from ssl_lightning.cli import build

ROOT = Path(__file__).parents[1]
EVALUATE_ONLY = {"knn_eval.yaml", "low_shot_eval.yaml"}


def cut_write(self, checkpoint, path, storage_options=None) -> None:
    """Lightning's save, stopped by a kill half-way through writing ``path``."""
    Path(path).write_bytes(b"half a checkpoint")
    raise KeyboardInterrupt


@pytest.mark.parametrize(("checkpoint_io", "survives"), [(AtomicCheckpointIO, True), (TorchCheckpointIO, False)])
def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, checkpoint_io, survives):
    target = tmp_path / "last.ckpt"
    checkpoint_io().save_checkpoint({"global_step": 1}, target)
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", cut_write)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io().save_checkpoint({"global_step": 2}, target)
    monkeypatch.undo()
    if survives:
        assert TorchCheckpointIO().load_checkpoint(target) == {"global_step": 1}
        assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    else:  # the control: Lightning's own writer leaves the cut file in place
        assert target.read_bytes() == b"half a checkpoint"


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert TorchCheckpointIO().load_checkpoint(tmp_path / "last.ckpt") == {"step": 1}


@pytest.mark.parametrize(
    "example", [p for p in sorted((ROOT / "examples").glob("*.yaml")) if p.name not in EVALUATE_ONLY], ids=str
)
def test_every_training_example_saves_a_last_checkpoint_every_few_steps(example):
    callbacks = yaml.safe_load(example.read_text())["trainer"]["callbacks"]
    resumable = [
        cb.get("init_args") or {}
        for cb in callbacks
        if cb["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
        and (cb.get("init_args") or {}).get("save_last")
    ]
    assert len(resumable) == 1 and resumable[0].get("every_n_train_steps", 0) > 0


def test_the_cli_writes_checkpoints_atomically(tmp_path):
    cli = build(["--config", str(ROOT / "examples" / "quickstart.yaml"), f"--trainer.default_root_dir={tmp_path}"])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
