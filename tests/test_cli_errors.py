"""Each bad input gives one clear line from ``ssl-lightning``, exit status 1 and no traceback;
``--debug`` shows the traceback; exceptions that are not ours keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_lightning.cli import main
from ssl_lightning.errors import ConfigurationError
from tests.fake_data import write_fake_fashion_mnist, write_fake_image_folder

ROOT = Path(__file__).parents[1]
TINY_VICREG = [
    "--model=VICReg",
    "--model.init_args.backbone_kwargs={channels: [8, 8, 8, 8]}",
    "--model.init_args.projector_dims=[32, 32]",
    "--model.init_args.warmup_epochs=0",
    "--trainer.accelerator=cpu",
    "--trainer.max_steps=3",
    "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=false",
]


def fashion_mnist(root: Path, *extra: str) -> list[str]:
    """Data arguments for generated Fashion-MNIST files in ``root``, where the run also writes."""
    write_fake_fashion_mnist(root / "data", num_train=32, num_test=8)
    data = ["--data=FashionMNIST", f"--data.init_args.data_dir={root / 'data'}", "--data.init_args.image_size=16"]
    options = ["--data.init_args.batch_size=8", "--data.init_args.num_workers=0", f"--trainer.default_root_dir={root}"]
    return [*data, *options, *extra]


def fails_cleanly(arguments: list[str], capsys) -> str:
    """Run ``ssl-lightning`` in this process; it must exit with status 1. Returns its error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1
    return lines[0]


def test_bad_configuration(tmp_path, capsys):
    line = fails_cleanly(["fit", *TINY_VICREG, *fashion_mnist(tmp_path), "--model.init_args.warmup_epochs=-1"], capsys)
    assert line == "error: warmup_epochs must be ≥ 0, got -1.0"


def test_missing_data(tmp_path, capsys):
    line = fails_cleanly(["fit", *TINY_VICREG, "--data=ImageFolder", f"--data.init_args.data_dir={tmp_path}"], capsys)
    assert f"no training folder {tmp_path / 'train'}" in line and "Arrange the images as" in line


def test_bad_image(tmp_path, capsys):
    write_fake_image_folder(tmp_path, num_classes=2, train_per_class=4, val_per_class=1)
    victim = min((tmp_path / "train" / "class_0").iterdir())
    victim.write_bytes(victim.read_bytes()[:300])
    data = [f"--data.init_args.data_dir={tmp_path}", "--data.init_args.image_size=32", "--data.init_args.batch_size=8"]
    data.append(f"--trainer.default_root_dir={tmp_path}")
    line = fails_cleanly(["fit", *TINY_VICREG, "--data=ImageFolder", *data, "--data.init_args.num_workers=0"], capsys)
    assert f"Cannot decode the image {victim}" in line and "Replace it or delete it" in line


def test_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "encoder.ckpt"
    torch.save({"weight": torch.zeros(2)}, bad)
    line = fails_cleanly(["export", f"--checkpoint={bad}", f"--output={tmp_path / 'out.safetensors'}"], capsys)
    assert str(bad) in line and "a plain state dict of 1 tensors (weight)" in line


def test_batch_too_small_for_batchnorm(tmp_path, capsys):
    line = fails_cleanly(["fit", *TINY_VICREG, *fashion_mnist(tmp_path, "--data.init_args.batch_size=1")], capsys)
    assert "a training batch of 1 image per device is too small" in line and "--data.init_args.batch_size" in line


def test_diverged_training_keeps_the_checkpoint_written_before(tmp_path, capsys):
    every_step = (
        "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: "
        f"{{dirpath: {tmp_path / 'ck'}, every_n_train_steps: 1, save_top_k: 0, save_last: true}}}}]"
    )
    huge_lr = "--model.init_args.optimizer={class_path: torch.optim.SGD, init_args: {lr: 1.0e+30}}"
    line = fails_cleanly(["fit", *TINY_VICREG, *fashion_mnist(tmp_path), huge_lr, every_step], capsys)
    assert "training stopped" in line or "not writing a checkpoint" in line
    checkpoint = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] >= 1
    assert all(t.isfinite().all() for t in checkpoint["state_dict"].values() if t.is_floating_point())


def test_the_command_prints_no_traceback(tmp_path):
    command = [sys.executable, "-m", "ssl_lightning", "fit", *TINY_VICREG, *fashion_mnist(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [*command, "--model.init_args.warmup_epochs=-1"], check=False, capture_output=True, text=True, env=env
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-2:] == [
        "error: warmup_epochs must be ≥ 0, got -1.0",
        "(--debug shows the traceback)",
    ]


def test_debug_raises_and_errors_not_ours_are_not_caught(tmp_path, monkeypatch):
    command = ["fit", *TINY_VICREG, *fashion_mnist(tmp_path)]
    # jsonargparse re-raises the method's ConfigurationError as its own ValueError: --debug lets it through
    with pytest.raises(ValueError, match="warmup_epochs must be ≥ 0"):
        main([*command, "--model.init_args.warmup_epochs=-1", "--debug"])
    monkeypatch.setenv("SSL_LIGHTNING_DEBUG", "1")
    with pytest.raises(ConfigurationError, match="a training batch of 1 image per device"):
        main([*command, "--data.init_args.batch_size=1"])
    monkeypatch.delenv("SSL_LIGHTNING_DEBUG")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):  # Lightning's own error: not caught
        main([*command, f"--ckpt_path={tmp_path / 'missing.ckpt'}"])
