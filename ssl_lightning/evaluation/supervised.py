"""Supervised training of an encoder: the upper reference a self-supervised encoder of the same
architecture is compared with (same initial weights, same number of steps, labels instead of views)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ssl_lightning.methods.base import SSLMethod, base_arguments
from ssl_lightning.methods.ijepa import first_view


class SupervisedBaseline(SSLMethod):
    """An encoder and a linear classifier trained end to end with cross-entropy on labelled batches.

    Training batches are the DataModules' ``(views, labels)`` (the first view is used; give the
    DataModule a one-view recipe such as :class:`~ssl_lightning.data.LinearEvalViews`); labels
    ``-1`` (unlabelled) are left out of the loss. ``forward`` returns the encoder's features, so the
    online probes and the frozen-feature scores read this model like any method. The optimizer groups,
    warmup + cosine schedule and the finite-loss stop are :class:`SSLMethod`'s.

    Args:
        encoder: maps ``(B, C, H, W)`` images to ``(B, feature_dim)`` features; trained in place.
        feature_dim: the encoder's output width.
        num_classes: classes of the labels.
        optimizer, warmup_epochs, warmup_start_factor, final_lr_factor, compile, compile_options,
            warmup_steps, lr_reference_batch_size, channels_last: see :class:`SSLMethod`.
        init_from: weights to start the encoder from (fine-tuning; see :class:`SSLMethod`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.0,
        final_lr_factor: float = 1e-3,
        compile: bool = False,
        compile_options: dict | None = None,
        warmup_steps: int | None = None,
        lr_reference_batch_size: int | None = None,
        channels_last: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__(**base_arguments(locals()))
        self.save_init_arguments()
        self.encoder = encoder
        self.classifier = nn.Linear(feature_dim, num_classes)

    def weight_parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}

    def compiled_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        views, labels = batch
        features = self.encoder(first_view(views))
        loss = F.cross_entropy(self.classifier(features), labels, ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss, "features": features.detach()}

    def validation_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        images, labels = batch
        features = self.encoder(images)
        accuracy = (self.classifier(features).argmax(1) == labels).float().mean()
        self.log("val/top1", accuracy, prog_bar=True)
        return {"features": features}
