"""Exact resume: 2N uninterrupted training steps equal N steps plus a resume from the step-N
checkpoint, bit for bit, for every method, mid-epoch and at an epoch boundary (#13).

Both runs train a tiny method on generated Fashion-MNIST files through the real DataModule (random
crops and flips), with the online probe, kNN and RankMe attached. The resumed run starts from other
initial weights and another global seed, so everything that matches came from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from ssl_lightning.callbacks import OnlineKNN, OnlineLinearProbe, RankMe
from ssl_lightning.data import FashionMNIST, IJEPAViews, JointEmbeddingViews
from tests.fake_data import write_fake_fashion_mnist
from tests.tiny_methods import JEPA_METHODS, METHOD_NAMES, quiet_trainer, tiny

BATCH = 8
TRAIN_IMAGES = 48  # 6 batches an epoch


@pytest.fixture(autouse=True)
def restore_deterministic_algorithms():
    """``Trainer(deterministic=True)`` switches torch's deterministic algorithms on for the whole process."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


class Recorder(Callback):
    """Every training batch's first view and, for JEPA methods, its masks, by global step."""

    def __init__(self) -> None:
        self.batches: dict[int, torch.Tensor] = {}
        self.masks: dict[int, tuple] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.batches[step] = batch[0][0].clone()
        if getattr(pl_module, "last_masks", None) is not None:
            context, targets = pl_module.last_masks
            self.masks[step] = (context.clone(), [t.clone() for t in targets])


def fashion_mnist(root: Path, name: str, num_workers: int = 0) -> FashionMNIST:
    views = IJEPAViews() if name in JEPA_METHODS else JointEmbeddingViews()
    size = 32 if name in JEPA_METHODS else 16
    return FashionMNIST(
        data_dir=str(root), batch_size=BATCH, num_workers=num_workers, views=views, image_size=size, download=False
    )


def train(root: Path, name: str, steps: int, every: int, ckpt_path: str | None, seed: int, num_workers: int = 0):
    """Train ``tiny(name)`` for ``steps`` steps, checkpointing every ``every`` steps into ``root/ck``;
    returns the model, the trainer and the :class:`Recorder`."""
    seed_everything(seed)
    recorder = Recorder()
    callbacks = [
        OnlineLinearProbe(),
        OnlineKNN(k=3, bank_size=32),
        RankMe(buffer_size=32),
        recorder,
        ModelCheckpoint(dirpath=root / "ck", filename="{step}", every_n_train_steps=every, save_top_k=-1),
    ]
    trainer = quiet_trainer(callbacks, max_steps=steps, enable_checkpointing=True, deterministic=True)
    model = tiny(name, seed=seed)
    trainer.fit(model, fashion_mnist(root, name, num_workers), ckpt_path=ckpt_path)
    return model, trainer, recorder


def assert_same_tree(actual, expected, where: str = "") -> None:
    """Equal nested dicts/lists of tensors and plain values, tensors bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), f"{where} differs (max |Δ| {(actual - expected).abs().max()})"
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_same_tree(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_tree(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, where


def assert_resumed_exactly(root: Path, name: str, resume_step: int, num_workers: int = 0) -> None:
    total = 2 * resume_step
    write_fake_fashion_mnist(root, num_train=TRAIN_IMAGES, num_test=16)
    full, full_trainer, full_record = train(root, name, total, resume_step, None, seed=0, num_workers=num_workers)
    checkpoint = str(root / "ck" / f"step={resume_step}.ckpt")
    resumed, resumed_trainer, resumed_record = train(
        root, name, total, total + 1, checkpoint, seed=1, num_workers=num_workers
    )

    later = [step for step in full_record.batches if step > resume_step]
    assert sorted(resumed_record.batches) == later
    for step in later:
        assert torch.equal(resumed_record.batches[step], full_record.batches[step]), f"batch of step {step}"
        if name in JEPA_METHODS:
            assert_same_tree(resumed_record.masks[step], full_record.masks[step], f"masks of step {step}")
    assert_same_tree(resumed.state_dict(), full.state_dict(), "weights")
    assert_same_tree(resumed_trainer.optimizers[0].state_dict(), full_trainer.optimizers[0].state_dict(), "optimizer")
    for resumed_callback, full_callback in zip(resumed_trainer.callbacks[:3], full_trainer.callbacks[:3]):
        assert_same_tree(resumed_callback.state_dict(), full_callback.state_dict(), type(full_callback).__name__)
    assert resumed_trainer.current_epoch == full_trainer.current_epoch


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_mid_epoch_resume_is_exact(tmp_path, name):
    assert_resumed_exactly(tmp_path, name, resume_step=4)  # step 4 of 6 in epoch 0; the rest crosses into epoch 1


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_epoch_boundary_resume_is_exact(tmp_path, name):
    assert_resumed_exactly(tmp_path, name, resume_step=6)  # the last batch of epoch 0


def test_resume_is_exact_with_workers(tmp_path):
    """Two loader workers prefetch ahead of training; the checkpoint still records the consumed position."""
    assert_resumed_exactly(tmp_path, "VICReg", resume_step=4, num_workers=2)
