"""The optimizer wiring every method shares: warmup length in optimizer steps however the run's length
is set, the linear learning-rate scaling rule, and Barlow Twins' learning rate for biases and norms."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import pytest
import timm.optim
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, IterableDataset

from ssl_lightning.methods import BarlowTwins, VICReg
from tests.synthetic import NoisyClassDataModule
from tests.tiny_methods import JOINT, quiet_trainer

EXAMPLES = Path(__file__).parents[1] / "examples"


class LearningRates(Callback):
    """The first group's learning rate before every optimizer step, and each group's peak rate."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.peaks: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.peaks = [group["initial_lr"] for group in trainer.optimizers[0].param_groups]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])


def fit_vicreg(train_size: int, batch_size: int = 8, model_options=None, **trainer_options):
    model = VICReg(**{**JOINT, **(model_options or {})})
    rates = LearningRates()
    trainer = quiet_trainer([rates], **trainer_options)
    data = NoisyClassDataModule(num_views=2, image_size=16, batch_size=batch_size, train_size=train_size)
    trainer.fit(model, data)
    return model, rates


@pytest.mark.parametrize(
    ("trainer_options", "model_options", "expected_warmup"),
    [
        # 40 images / batch 8 = 5 optimizer steps per epoch.
        ({"max_steps": 20}, {"warmup_epochs": 1}, 5),  # was 20: the whole run
        ({"max_epochs": 4}, {"warmup_epochs": 1}, 5),
        ({"max_steps": 12}, {"warmup_epochs": 0.4}, 2),
        # 5 batches, 2 per optimizer step: ceil(5 / 2) = 3 optimizer steps per epoch.
        ({"max_steps": 8, "accumulate_grad_batches": 2}, {"warmup_epochs": 2}, 6),
        # 2 batches per epoch after limit_train_batches.
        ({"max_steps": 10, "limit_train_batches": 2}, {"warmup_epochs": 1.5}, 3),
        ({"max_steps": 10}, {"warmup_epochs": 1, "warmup_steps": 7}, 7),  # warmup_steps wins
    ],
)
def test_warmup_lasts_warmup_epochs_of_optimizer_steps(trainer_options, model_options, expected_warmup):
    model, rates = fit_vicreg(40, model_options={"warmup_start_factor": 0.1, **model_options}, **trainer_options)
    total = trainer_options.get("max_steps", 20)
    assert model.total_and_warmup_steps() == (total, expected_warmup)
    peak = rates.peaks[0]
    # The rates the optimizer used: linear from 0.1 × peak up to the peak at the end of warmup, then cosine.
    expected = [peak * (0.1 + 0.9 * step / expected_warmup) for step in range(expected_warmup)]
    expected += [
        peak * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * step / (total - expected_warmup))))
        for step in range(total - expected_warmup)
    ]
    assert rates.rates == pytest.approx(expected, rel=1e-6)


class EndlessNoise(IterableDataset):
    """Two-view training batches from a dataset without a length (a stream)."""

    def __iter__(self):
        while True:
            yield [torch.randn(1, 16, 16), torch.randn(1, 16, 16)], 0


def test_warmup_epochs_on_a_stream_is_a_clear_error():
    model = VICReg(**{**JOINT, "warmup_epochs": 1})
    trainer = Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="warmup_steps=N"):
        trainer.fit(model, DataLoader(EndlessNoise(), batch_size=4))


@pytest.mark.parametrize("bad", [-1, 0.5, "3"])
def test_bad_warmup_steps_and_reference_batch_are_refused(bad):
    with pytest.raises(ValueError, match="warmup_steps"):
        VICReg(**{**JOINT, "warmup_steps": bad})
    with pytest.raises(ValueError, match="lr_reference_batch_size"):
        VICReg(**{**JOINT, "lr_reference_batch_size": bad if bad != -1 else 0})


def test_learning_rate_scales_with_the_global_batch(caplog):
    """lr = base × per-device batch × accumulation / reference (one process here), said at fit start."""
    options = {"optimizer": functools.partial(torch.optim.SGD, lr=0.2), "lr_reference_batch_size": 256}
    with caplog.at_level(logging.INFO):
        _, rates = fit_vicreg(64, batch_size=8, model_options=options, max_steps=2, accumulate_grad_batches=4)
    assert rates.peaks == pytest.approx([0.2 * 32 / 256] * 2)
    assert "global batch 32 = lr_reference_batch_size 256 × 0.125; peak learning rates 0.025." in caplog.text


def test_barlow_imagenet_recipe_group_learning_rates_at_batch_2048():
    """examples/barlow_resnet50_imagenet.yaml at a global batch of 2048: the paper's LARS rates,
    0.2 × 2048/256 for weights and 0.0048 × 2048/256 for biases and BatchNorm parameters."""
    config = yaml.safe_load((EXAMPLES / "barlow_resnet50_imagenet.yaml").read_text())
    arguments = config["model"]["init_args"]
    recipe = {name: arguments[name] for name in ("bias_and_norm_lr_factor", "lr_reference_batch_size", "loss_scale")}
    lars = arguments["optimizer"]
    assert lars["class_path"] == "timm.optim.Lars"
    optimizer = functools.partial(timm.optim.Lars, **lars["init_args"])
    model = BarlowTwins(**{**JOINT, **recipe, "optimizer": optimizer, "warmup_epochs": 0})
    rates = LearningRates()
    # 8 images × 256 accumulated batches = a global batch of 2048 on one process
    trainer = quiet_trainer([rates], max_steps=1, accumulate_grad_batches=256)
    trainer.fit(model, NoisyClassDataModule(num_views=2, image_size=16, batch_size=8, train_size=2048))
    assert rates.peaks == pytest.approx([0.2 * 2048 / 256, 0.0048 * 2048 / 256])
    weights, biases = trainer.optimizers[0].param_groups
    assert weights["weight_decay"] == pytest.approx(1.5e-6) and biases["weight_decay"] == 0.0
