"""Tiny pretraining checkpoints of every method, a few steps on generated images, for the tests of
offline evaluation and export."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer

from ssl_lightning.methods import IJEPA, BlockwiseBarlowTwins, FlexPredict, VICReg
from tests.jepa_helpers import TINY_JEPA
from tests.synthetic import NoisyClassDataModule

TINY_RESNET = {"backbone": "resnet18", "backbone_kwargs": {"channels": [4, 8, 8, 8], "stem_width": 4}}
OPTIMIZER = functools.partial(torch.optim.AdamW, lr=1e-3)


def tiny_method(name: str, in_chans: int = 1, image_size: int | None = None, **kwargs) -> LightningModule:
    """A small untrained method: a narrow ResNet-18 (16 px images by default), or (JEPA) a 4-block
    ViT with 4 px patches (32 px images by default)."""
    torch.manual_seed(0)
    jepa = name in ("IJEPA", "FlexPredict")
    image_size = image_size or (TINY_JEPA["image_size"] if jepa else 16)
    common = {"in_chans": in_chans, "image_size": image_size, "optimizer": OPTIMIZER, "warmup_epochs": 0}
    if name == "VICReg":
        return VICReg(**{**TINY_RESNET, "projector_dims": [16, 16], **common, **kwargs})
    if name == "BlockwiseBarlowTwins":
        return BlockwiseBarlowTwins(**{**TINY_RESNET, "head_dim": 16, "projector_dims": [16, 16], **common, **kwargs})
    return {"IJEPA": IJEPA, "FlexPredict": FlexPredict}[name](**{**TINY_JEPA, "depth": 4, **common, **kwargs})


def pretrain(model: LightningModule, directory: Path, steps: int = 2) -> Path:
    """Train ``model`` for ``steps`` steps on noisy class images and return the saved checkpoint."""
    num_views = 1 if isinstance(model, IJEPA) else 2
    data = NoisyClassDataModule(
        num_views=num_views, channels=model.hparams["in_chans"], image_size=model.hparams["image_size"], batch_size=8
    )
    trainer = Trainer(
        max_steps=steps,
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=directory,
    )
    trainer.fit(model, data)
    path = directory / f"{type(model).__name__}.ckpt"
    trainer.save_checkpoint(path)
    return path


def save_untrained(model: LightningModule, path: Path) -> Path:
    """A checkpoint of an untrained method: its weights and hyper-parameters, as a Trainer saves them."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@functools.cache
def pretrained_checkpoint(name: str, directory: Path, in_chans: int = 1, image_size: int | None = None) -> Path:
    """A checkpoint of method ``name`` after 2 training steps, written once per test session and folder."""
    directory = directory / f"{in_chans}-channels-{image_size or 'default'}-px"
    directory.mkdir(parents=True, exist_ok=True)
    return pretrain(tiny_method(name, in_chans, image_size), directory)
