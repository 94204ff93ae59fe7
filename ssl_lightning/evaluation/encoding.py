"""Encoding the training images for the offline evaluations that fit on them (kNN bank, low-shot
classifier): which loader gives them, and their frozen features."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.methods.ijepa import first_view

DEFAULT_BATCH_SIZE = 256


def training_images(trainer: Trainer, evaluation: str) -> DataLoader:
    """The training images as the offline evaluations see them: the DataModule's
    ``train_eval_dataloader()`` (every ssl_lightning DataModule has one: all training images,
    validation transform, in order), else its ``train_dataloader()``.

    Raises:
        ValueError: the Trainer runs without a DataModule (``evaluation`` names the caller).
    """
    datamodule = trainer.datamodule
    if datamodule is None:
        raise ConfigurationError(f"{evaluation} encodes the training images: run it with a DataModule.")
    return getattr(datamodule, "train_eval_dataloader", datamodule.train_dataloader)()


def limited_batches(trainer: Trainer, loader: DataLoader) -> Iterable:
    """The batches of ``loader`` that the Trainer's ``limit_train_batches`` allows, counted as
    Lightning counts them (an int is a number of batches, a float a fraction of them).

    The offline evaluations encode the training images outside Lightning's loops, which would
    otherwise encode all of them even in a smoke run; ``fast_dev_run=N`` sets the limit to ``N``.
    """
    limit = trainer.limit_train_batches
    if isinstance(limit, float):
        if limit >= 1.0:
            return loader
        limit = int(len(loader) * limit)
    return islice(loader, limit)


def subset_loader(loader: DataLoader, indices: Tensor) -> DataLoader:
    """The items ``indices`` of ``loader``'s dataset, in that order, in batches like ``loader``'s."""
    return DataLoader(
        Subset(loader.dataset, indices.tolist()),
        batch_size=loader.batch_size or DEFAULT_BATCH_SIZE,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def encode_labelled(module: LightningModule, loader: Iterable) -> tuple[Tensor, Tensor]:
    """``module(images)`` and the labels of every labelled image of ``loader`` (label ``-1`` skipped),
    on the module's device, under the Trainer's precision (``(views, labels)`` batches: first view)."""
    features, labels = [], []
    with module.trainer.precision_plugin.forward_context():
        for views, batch_labels in loader:
            known = batch_labels >= 0
            features.append(module(first_view(views)[known].to(module.device)))
            labels.append(batch_labels[known].to(module.device))
    if not features:
        return torch.empty(0, device=module.device), torch.empty(0, dtype=torch.long, device=module.device)
    return torch.cat(features), torch.cat(labels)
