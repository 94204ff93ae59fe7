"""Offline linear evaluation: the standard protocol for the numbers SSL papers publish (a linear
classifier trained to convergence on the features of a frozen pretrained encoder)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.evaluation.frozen import load_frozen_encoder
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.ijepa import first_view

TOP_K = 5


class LinearEval(SSLMethod):
    """A linear classifier on a frozen encoder loaded from an ssl_lightning pretraining checkpoint.

    The encoder (any method's; see :meth:`~ssl_lightning.evaluation.Pretrained.features` for the
    choices) never trains: its parameters get no gradient and never reach the optimizer, and it
    stays in eval mode, so its BatchNorm statistics do not move either (Lightning's warning "Found N
    module(s) in eval mode at the start of training" counts these modules). The head is
    ``BatchNorm1d(affine=False) → Linear`` (the normalisation makes one learning rate fit every
    encoder). Training batches are ``(views, labels)`` (the first view is used; use
    :class:`~ssl_lightning.data.LinearEvalViews` for the usual random-resized-crop + flip),
    validation batches ``(images, labels)``; labels ``-1`` are ignored. Logs ``train/loss``,
    ``train/top1``, ``val/loss``, ``val/top1`` and ``val/top5``. ``forward`` returns the logits.

    Its checkpoints hold the encoder's weights too, but rebuilding the module reads ``checkpoint``
    again (to know the encoder's architecture).

    Args:
        checkpoint: path of the pretraining ``.ckpt``.
        method: the method the checkpoint must hold (e.g. ``"IJEPA"``); ``None`` accepts any.
        encoder: JEPA methods: ``"target"`` (default) or ``"context"``.
        pool: JEPA methods: ``"avg"`` (default; average-pooled tokens) or ``"last4"`` (the
            concatenated average-pooled outputs of the last 4 blocks, as in the I-JEPA paper).
        stage: blockwise methods: the block whose representation is evaluated, 1–4 (default 4).
        num_classes: number of classes; ``None`` = the DataModule's ``num_classes``.
        in_chans, image_size: evaluation images (linked from the DataModule by the CLI); the
            channels must match pretraining's.
        optimizer: builds the head's optimizer, e.g. ``torch.optim.SGD`` with ``lr=0.1, momentum=0.9``
            or ``timm.optim.Lars``; in YAML a ``class_path``/``init_args`` pair.
        warmup_epochs, warmup_start_factor, final_lr_factor: learning-rate schedule (see
            :class:`SSLMethod`); default: no warmup, cosine decay to 0.
    """

    def __init__(
        self,
        checkpoint: str,
        method: str | None = None,
        encoder: str | None = None,
        pool: Literal["avg", "last4"] | None = None,
        stage: int | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        image_size: int | None = None,
        optimizer: OptimizerCallable = torch.optim.SGD,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
        final_lr_factor: float = 0.0,
    ) -> None:
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, final_lr_factor)
        self.save_init_arguments()
        self.encoder, self.feature_dim = load_frozen_encoder(
            checkpoint, method, encoder, pool, stage, in_chans, image_size
        )
        self.head: nn.Sequential | None = None
        if num_classes is not None:
            self.build_head(num_classes)

    def build_head(self, num_classes: int) -> None:
        """The classifier and its accuracy metrics, for ``num_classes`` classes."""
        if num_classes < 2:
            raise ValueError(f"LinearEval needs at least 2 classes, got num_classes={num_classes}")
        linear = nn.Linear(self.feature_dim, num_classes)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        self.head = nn.Sequential(nn.BatchNorm1d(self.feature_dim, affine=False), linear)
        top_k = min(TOP_K, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=-1)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=-1)
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro", ignore_index=-1)

    def setup(self, stage: str) -> None:
        if self.head is not None:
            return
        num_classes = getattr(self.trainer.datamodule, "num_classes", None)
        if num_classes is None:
            raise ValueError(
                "LinearEval does not know the number of classes: pass num_classes=... "
                "or use a DataModule with a `num_classes` attribute."
            )
        self.hparams.num_classes = num_classes  # saved, so that checkpoints rebuild the head
        self.build_head(num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of ``images``."""
        return self.head(self.encoder(images).float())

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        views, labels = batch
        known = labels >= 0
        if not known.any():
            return None  # nothing to learn from an unlabelled batch
        logits = self(first_view(views)[known])
        loss = F.cross_entropy(logits, labels[known])
        self.train_top1(logits, labels[known])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/top1", self.train_top1, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        known = labels >= 0
        if known.any():
            self.log("val/loss", F.cross_entropy(logits[known], labels[known]), batch_size=int(known.sum()))
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        self.log("val/top1", self.val_top1, prog_bar=True)
        self.log("val/top5", self.val_top5)
