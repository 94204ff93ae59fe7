"""Offline linear evaluation: the standard protocol for the numbers SSL papers publish (a linear
classifier trained to convergence on the features of a frozen pretrained encoder).

The papers' exact protocols are presets in ``examples/protocols/`` (see ``docs/evaluation.md``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.features import encoder_pool, select_pool
from ssl_lightning.evaluation.frozen import load_frozen_encoder
from ssl_lightning.evaluation.linear_heads import HeadType, head_specs, linear_head
from ssl_lightning.evaluation.step_schedule import check_milestones, step_decay
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.ijepa import first_view
from ssl_lightning.nn.schedules import linear_ramp

TOP_K = 5
Pool = Literal["avg", "last4"]


class LinearEval(SSLMethod):
    """Linear classifiers on a frozen encoder loaded from an ssl_lightning pretraining checkpoint.

    The encoder (any method's; see :meth:`~ssl_lightning.evaluation.Pretrained.features` for the
    choices) never trains: its parameters get no gradient and never reach the optimizer, and it
    stays in eval mode, so its BatchNorm statistics do not move either (Lightning's warning "Found N
    module(s) in eval mode at the start of training" counts these modules). Training batches are
    ``(views, labels)`` (the first view is used; use :class:`~ssl_lightning.data.LinearEvalViews`
    for the usual random-resized-crop + flip), validation batches ``(images, labels)``; labels
    ``-1`` are ignored.

    Heads (:func:`~ssl_lightning.evaluation.linear_heads.linear_head`): by default one
    ``BatchNorm1d(affine=False) → Linear``. ``head_type`` and ``pool`` may be lists: one head per
    pair is trained on the features of one encoder pass, each with its own loss (the summed loss
    gives every head its own gradient), e.g. VISSL's four heads (Goyal et al. 2021, the protocol of
    I-JEPA and StoP): ``head_type=["bn_linear", "linear"], pool=["avg", "last4"]``.

    Logged: ``train/loss`` (the sum over heads), ``val/top1`` (that of the best head when there are
    several) and ``val/top1_best``, the best ``val/top1`` of the validations so far (the "best epoch"
    number of the VICReg, Barlow Twins and VISSL evaluations; resumed from checkpoints, sanity checks
    left out). With one head also ``train/top1``, ``val/loss`` and ``val/top5``; with several, per
    head ``<name>`` (e.g. ``bn_linear_last4``): ``train/<name>/loss``, ``train/<name>/top1``,
    ``val/<name>/loss``, ``val/<name>/top1``, ``val/<name>/top5`` and ``val/<name>/top1_best``.
    ``forward`` returns the logits (a dict by head name when there are several).

    Its checkpoints hold the encoder's weights too, but rebuilding the module reads ``checkpoint``
    again (to know the encoder's architecture).

    Args:
        checkpoint: path of the pretraining ``.ckpt``.
        method: the method the checkpoint must hold (e.g. ``"IJEPA"``); ``None`` accepts any.
        encoder: JEPA methods: ``"target"`` (default) or ``"context"``.
        pool: JEPA methods: ``"avg"`` (default; average-pooled tokens), ``"last4"`` (the
            concatenated average-pooled outputs of the last 4 blocks, as in the I-JEPA paper), or a
            list of both (one encoder pass computes both).
        stage: blockwise methods: the block whose representation is evaluated, 1–4 (default 4).
        num_classes: number of classes; ``None`` = the DataModule's ``num_classes``.
        in_chans, image_size: evaluation images (linked from the DataModule by the CLI); the
            channels must match pretraining's.
        optimizer: builds the heads' optimizer, e.g. ``torch.optim.SGD`` with ``lr=0.1, momentum=0.9``
            (``nesterov=True`` for VISSL) or ``timm.optim.Lars``; in YAML a ``class_path``/``init_args`` pair.
        warmup_epochs, warmup_start_factor, final_lr_factor: learning-rate schedule (see
            :class:`SSLMethod`); default: no warmup, cosine decay to 0.
        head_type: ``"bn_linear"`` (default) or ``"linear"`` (no BatchNorm), or a list of both.
        lr_milestones: a step schedule instead of the cosine: the learning rate is multiplied by
            ``lr_gamma`` at the start of each of these epochs (VISSL: ``[8, 16, 24]`` over 28 epochs),
            after the optional warmup. ``None``: the cosine.
        lr_gamma: the step schedule's factor.
        lr_reference_batch_size: the optimizer's ``lr`` is for this global batch and scales linearly
            with the actual one (see :class:`SSLMethod`); ``None``: used as is.
    """

    def __init__(
        self,
        checkpoint: str,
        method: str | None = None,
        encoder: str | None = None,
        pool: Pool | list[Pool] | None = None,
        stage: int | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        image_size: int | None = None,
        optimizer: OptimizerCallable = torch.optim.SGD,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
        final_lr_factor: float = 0.0,
        head_type: HeadType | list[HeadType] = "bn_linear",
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        lr_reference_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            optimizer,
            warmup_epochs,
            warmup_start_factor,
            final_lr_factor,
            lr_reference_batch_size=lr_reference_batch_size,
        )
        self.save_init_arguments()
        self.lr_milestones = check_milestones(lr_milestones, lr_gamma, final_lr_factor)
        self.lr_gamma = lr_gamma
        self.specs = head_specs(head_type, pool)
        self.encoder_pool = encoder_pool([spec.pool for spec in self.specs])
        self.encoder, self.feature_dim = load_frozen_encoder(
            checkpoint, method, encoder, self.encoder_pool, stage, in_chans, image_size
        )
        self.heads: nn.ModuleDict | None = None
        if num_classes is not None:
            self.build_heads(num_classes)

    @property
    def several_heads(self) -> bool:
        return len(self.specs) > 1

    @property
    def head(self) -> nn.Sequential | None:
        """The classifier when there is only one (``None`` before :meth:`setup`); see ``heads`` otherwise."""
        if self.several_heads:
            raise AttributeError(f"LinearEval trains {len(self.specs)} heads; pick one in .heads[name]")
        return None if self.heads is None else self.heads[self.specs[0].name]

    def build_heads(self, num_classes: int) -> None:
        """The classifiers, their accuracy metrics and best accuracies, for ``num_classes`` classes."""
        if num_classes < 2:
            raise ConfigurationError(f"LinearEval needs at least 2 classes, got num_classes={num_classes}")
        probe = torch.zeros(1, self.feature_dim)
        self.heads = nn.ModuleDict(
            {
                spec.name: linear_head(
                    spec.head_type, select_pool(probe, self.encoder_pool, spec.pool).shape[1], num_classes
                )
                for spec in self.specs
            }
        )

        def accuracies(top_k: int) -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    spec.name: MulticlassAccuracy(num_classes, top_k=top_k, average="micro", ignore_index=-1)
                    for spec in self.specs
                }
            )

        self.train_top1, self.val_top1, self.val_top5 = (
            accuracies(1),
            accuracies(1),
            accuracies(min(TOP_K, num_classes)),
        )
        self.register_buffer("top1_best", torch.zeros(len(self.specs)))

    def setup(self, stage: str) -> None:
        if self.heads is not None:
            return
        num_classes = getattr(self.trainer.datamodule, "num_classes", None)
        if num_classes is None:
            raise ConfigurationError(
                "LinearEval does not know the number of classes: pass num_classes=... "
                "or use a DataModule with a `num_classes` attribute."
            )
        self.hparams.num_classes = num_classes  # saved, so that checkpoints rebuild the heads
        self.build_heads(num_classes)

    def head_logits(self, images: Tensor) -> dict[str, Tensor]:
        """Class logits ``(B, num_classes)`` of every head, from one pass of the encoder."""
        features = self.encoder(images).float()
        return {
            spec.name: self.heads[spec.name](select_pool(features, self.encoder_pool, spec.pool)) for spec in self.specs
        }

    def forward(self, images: Tensor) -> Tensor | dict[str, Tensor]:
        """Class logits ``(B, num_classes)`` of ``images`` (by head name when there are several heads)."""
        logits = self.head_logits(images)
        return logits if self.several_heads else logits[self.specs[0].name]

    def metric_name(self, split: str, head: str, metric: str) -> str:
        """``<split>/<metric>`` with one head, ``<split>/<head>/<metric>`` with several."""
        return f"{split}/{head}/{metric}" if self.several_heads else f"{split}/{metric}"

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        views, labels = batch
        known = labels >= 0
        if not known.any():
            return None  # nothing to learn from an unlabelled batch
        labels = labels[known]
        losses = []
        for name, logits in self.head_logits(first_view(views)[known]).items():
            losses.append(F.cross_entropy(logits, labels))
            self.train_top1[name](logits, labels)
            self.log(self.metric_name("train", name, "top1"), self.train_top1[name], prog_bar=not self.several_heads)
            if self.several_heads:
                self.log(f"train/{name}/loss", losses[-1])
        loss = torch.stack(losses).sum()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        known = labels >= 0
        for name, logits in self.head_logits(images).items():
            if known.any():
                loss = F.cross_entropy(logits[known], labels[known])
                self.log(self.metric_name("val", name, "loss"), loss, batch_size=int(known.sum()))
            self.val_top1[name].update(logits, labels)
            self.val_top5[name].update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every process's counts, so these values are the same on all of them
        # (sync_dist only keeps Lightning from warning about epoch-level values).
        names = [spec.name for spec in self.specs]
        top1 = torch.stack([self.val_top1[name].compute() for name in names])
        top5 = torch.stack([self.val_top5[name].compute() for name in names])
        for metric in (*self.val_top1.values(), *self.val_top5.values()):
            metric.reset()
        if not self.trainer.sanity_checking:
            self.top1_best.copy_(torch.maximum(self.top1_best, top1))
        if self.several_heads:
            for index, name in enumerate(names):
                self.log(f"val/{name}/top1", top1[index], sync_dist=True)
                self.log(f"val/{name}/top5", top5[index], sync_dist=True)
                self.log(f"val/{name}/top1_best", self.top1_best[index], sync_dist=True)
        else:
            self.log("val/top5", top5[0], sync_dist=True)
        self.log("val/top1", top1.max(), prog_bar=True, sync_dist=True)
        self.log("val/top1_best", self.top1_best.max(), sync_dist=True)

    def lr_factor(self, step: int) -> float:
        """The cosine of :class:`SSLMethod`, or with ``lr_milestones`` the warmup then ``lr_gamma`` to the
        power of the milestones reached (epoch ``m`` starts at step ``m`` × optimizer steps per epoch)."""
        if self.lr_milestones is None:
            return super().lr_factor(step)
        _, warmup = self.total_and_warmup_steps()
        warmup_factor = linear_ramp(step, warmup, self.warmup_start_factor, 1.0) if step < warmup else 1.0
        return warmup_factor * step_decay(step, self.lr_milestones, self.optimizer_steps_per_epoch(), self.lr_gamma)
