"""LinearEval: the encoder stays exactly as pretrained (weights and BatchNorm statistics), the head trains."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from ssl_lightning.cli import main
from ssl_lightning.evaluation import LinearEval
from tests.fake_data import write_fake_fashion_mnist
from tests.pretrained import pretrained_checkpoint
from tests.synthetic import NoisyClassDataModule

LINEAR_EVAL = Path(__file__).parents[1] / "examples" / "linear_eval.yaml"
CASES = {
    "VICReg": ("VICReg", {}),
    "IJEPA-context-last4": ("IJEPA", {"encoder": "context", "pool": "last4"}),
    "Blockwise-stage2": ("BlockwiseBarlowTwins", {"stage": 2}),
}


class WatchTraining(Callback):
    """Asserts the encoder is in eval mode at every step; keeps the head's initial weights."""

    def on_train_start(self, trainer, pl_module):
        self.initial_head_weight = pl_module.head[1].weight.detach().clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert not any(module.training for module in pl_module.encoder.modules())


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "pretrained"


@pytest.mark.parametrize("case", CASES)
def test_training_leaves_the_encoder_unchanged(case, pretrained_dir):
    name, options = CASES[case]
    checkpoint = pretrained_checkpoint(name, pretrained_dir)
    torch.manual_seed(0)
    # Weight decay and momentum would move any encoder weight that reached the optimizer.
    optimizer = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.01)
    model = LinearEval(str(checkpoint), optimizer=optimizer, **options)
    encoder_before = {key: value.clone() for key, value in model.encoder.state_dict().items()}
    data = NoisyClassDataModule(num_views=1, image_size=16 if name != "IJEPA" else 32, train_size=48, batch_size=8)
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[watch := WatchTraining()],
    )
    assert model.head is None  # built in setup, from the DataModule's num_classes
    trainer.fit(model, data)
    assert model.hparams.num_classes == 3
    encoder_after = model.encoder.state_dict()
    assert encoder_after.keys() == encoder_before.keys()
    assert all(torch.equal(encoder_after[key], value) for key, value in encoder_before.items())
    assert not any(param.requires_grad for param in model.encoder.parameters())
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/top1", "val/top5"} <= metrics.keys()
    assert metrics["val/top5"] == 1.0  # 3 classes
    assert not torch.equal(model.head[1].weight, watch.initial_head_weight)  # only the head trained


def test_command_line_fit_then_validate_its_checkpoint(pretrained_dir, tmp_path, capsys):
    write_fake_fashion_mnist(tmp_path / "data")
    arguments = [
        "--config",
        str(LINEAR_EVAL),
        f"--model.init_args.checkpoint={pretrained_checkpoint('VICReg', pretrained_dir)}",
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=0",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.version=run",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *arguments, "--trainer.limit_train_batches=2"])
    last = tmp_path / "linear_eval" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["hyper_parameters"]["num_classes"] == 10
    capsys.readouterr()
    main(["validate", *arguments, f"--ckpt_path={last}"])
    assert "val/top1" in capsys.readouterr().out
