"""The frozen encoder of offline evaluations, loaded from a pretraining checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.evaluation.pretrained import load_pretrained
from ssl_lightning.nn.backbone import probe_feature_dim


class FrozenEncoder(nn.Module):
    """An encoder that never trains: no parameter requires a gradient, the module stays in eval mode
    whatever ``train()`` asks (BatchNorm statistics and dropout are frozen too), and features are
    computed without autograd."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(images)


def load_frozen_encoder(
    checkpoint: str | Path,
    method: str | None = None,
    encoder: str | None = None,
    pool: str | None = None,
    stage: int | None = None,
    in_chans: int | None = None,
    image_size: int | None = None,
) -> tuple[FrozenEncoder, int]:
    """The chosen encoder of a pretraining checkpoint, frozen, and its feature dimension.

    Args:
        checkpoint, method: see :func:`~ssl_lightning.evaluation.load_pretrained`.
        encoder, pool, stage: see :meth:`~ssl_lightning.evaluation.Pretrained.features`.
        in_chans: channels of the evaluation images; must be those of pretraining (``None``: not checked).
        image_size: side of the evaluation images, checked by one dummy forward pass (``None``: pretraining's).

    Raises:
        ValueError: the images do not fit the encoder; plus the errors of ``load_pretrained``.
    """
    pretrained = load_pretrained(checkpoint, method)
    if in_chans is not None and in_chans != pretrained.in_chans:
        raise ConfigurationError(
            f"{pretrained.path} holds a {pretrained.name} encoder trained on {pretrained.in_chans}-channel images, "
            f"but the evaluation data has {in_chans} channels. Evaluate it on data like its pretraining data."
        )
    frozen = FrozenEncoder(pretrained.features(encoder, pool, stage))
    return frozen, probe_feature_dim(frozen, pretrained.in_chans, image_size or pretrained.image_size)
