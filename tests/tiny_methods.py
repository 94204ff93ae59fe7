"""Every method at a CPU-cheap size, with a matching batch and DataModule, for tests that run all
methods the same way (torch.compile, bf16)."""

from __future__ import annotations

import functools

import torch
from lightning.pytorch import Trainer

from ssl_lightning.methods import BarlowTwins, BlockwiseBarlowTwins, LeJEPA, SSLMethod, VICReg
from tests.jepa_helpers import tiny_method
from tests.synthetic import NoisyClassDataModule

NARROW = {"channels": (8, 16, 32, 64), "stem_width": 8}
JOINT = {
    "backbone": "resnet18",
    "backbone_kwargs": NARROW,
    "projector_dims": [32, 32],
    "in_chans": 1,
    "image_size": 16,
    "optimizer": functools.partial(torch.optim.AdamW, lr=1e-3),
    "warmup_epochs": 0,
}
JEPA_METHODS = ("IJEPA", "FlexPredict")
METHOD_NAMES = ("VICReg", "BarlowTwins", "BlockwiseBarlowTwins", *JEPA_METHODS, "LeJEPA")


def tiny(name: str, seed: int = 0, **kwargs) -> SSLMethod:
    """Method ``name`` at test size, its weights drawn from ``seed``."""
    if name in JEPA_METHODS:
        return tiny_method(name, seed, **kwargs)
    torch.manual_seed(seed)
    builders = {
        "VICReg": VICReg,
        "BarlowTwins": BarlowTwins,
        "BlockwiseBarlowTwins": functools.partial(BlockwiseBarlowTwins, head_dim=16),
        "LeJEPA": functools.partial(LeJEPA, num_slices=64),
    }
    projector = {"projector_dims": [32, 32, 16]} if name == "LeJEPA" else {}
    return builders[name](**{**JOINT, **projector, **kwargs})


def tiny_batch(name: str, batch_size: int = 8, seed: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A training batch ``(views, labels)`` for ``tiny(name)``: 1×32 px for JEPA, 2 views of 16 px otherwise."""
    generator = torch.Generator().manual_seed(seed)
    num_views, size = (1, 32) if name in JEPA_METHODS else (2, 16)
    views = [torch.randn(batch_size, 1, size, size, generator=generator) for _ in range(num_views)]
    return views, torch.zeros(batch_size, dtype=torch.long)


def tiny_data(name: str, batch_size: int = 8, train_size: int = 64) -> NoisyClassDataModule:
    """The DataModule that ``tiny(name)`` trains on."""
    num_views, size = (1, 32) if name in JEPA_METHODS else (2, 16)
    return NoisyClassDataModule(num_views=num_views, image_size=size, batch_size=batch_size, train_size=train_size)


def quiet_trainer(callbacks=(), **trainer_options) -> Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar, model summary or validation, unless
    ``trainer_options`` say otherwise."""
    quiet = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_val_batches": 0,
    }
    return Trainer(callbacks=list(callbacks), **{**quiet, **trainer_options})


def fit(model: SSLMethod, name: str, steps: int, callbacks=(), **trainer_options) -> Trainer:
    """``steps`` training steps of ``tiny(name)``-sized ``model`` on CPU on :func:`tiny_data`, quietly
    (see :func:`quiet_trainer`)."""
    trainer = quiet_trainer(callbacks, max_steps=steps, **trainer_options)
    trainer.fit(model, tiny_data(name, batch_size=8, train_size=max(64, 8 * steps)))
    return trainer
