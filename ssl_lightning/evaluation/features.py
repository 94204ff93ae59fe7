"""Pooled features of a JEPA method's ViT encoder, for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.nn.vit import MaskedViTEncoder

ViTPool = Literal["avg", "last4"]
LAST_LAYERS = 4


class ViTFeatures(nn.Module):
    """Pooled features of a :class:`MaskedViTEncoder` on full images.

    ``pool="avg"``: the average of the final (LayerNorm-ed) patch tokens, ``(B, D)``, the
    representation the JEPA methods' probes see. ``pool="last4"``: the output of each of the last
    four transformer blocks, passed through the encoder's final LayerNorm and averaged over the
    patches, concatenated into ``(B, 4·D)`` (the I-JEPA paper's linear-probe features for its
    largest models; per-layer normalisation as in DINO's ``n_last_blocks`` evaluation).
    """

    def __init__(self, encoder: MaskedViTEncoder, pool: ViTPool = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "last4"):
            raise ConfigurationError(f"pool must be 'avg' or 'last4', got {pool!r}")
        depth = len(encoder.vit.blocks)
        if pool == "last4" and depth < LAST_LAYERS:
            raise ConfigurationError(
                f"pool='last4' needs an encoder with at least {LAST_LAYERS} blocks, this one has {depth}"
            )
        self.encoder = encoder
        self.pool = pool

    def forward(self, images: Tensor) -> Tensor:
        if self.pool == "avg":
            return self.encoder(images).mean(dim=1)
        outputs: list[Tensor] = []
        hooks = [
            block.register_forward_hook(lambda module, args, output: outputs.append(output))
            for block in self.encoder.vit.blocks[-LAST_LAYERS:]
        ]
        try:
            self.encoder(images)
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat([self.encoder.vit.norm(tokens).mean(dim=1) for tokens in outputs], dim=1)


def encoder_pool(pools: Sequence[ViTPool | None]) -> ViTPool | None:
    """The one pooling to compute so that every pooling of ``pools`` is read from the same forward
    pass: ``"last4"`` when it is among them (it contains ``"avg"``, see :func:`select_pool`), else
    the only one asked (``None`` for encoders without pooling choice)."""
    if "last4" in pools:
        return "last4"
    if len(set(pools)) != 1:
        raise ConfigurationError(f"expected one pooling, or 'last4' among them, got {list(pools)}")
    return pools[0]


def select_pool(features: Tensor, computed: ViTPool | None, pool: ViTPool | None) -> Tensor:
    """The ``pool`` features out of ``(B, F)`` features pooled as ``computed``.

    The last quarter of ``"last4"`` features is the final block's output through the final
    LayerNorm, averaged over the patches: exactly the ``"avg"`` features (VISSL's ``lastPOOL`` is
    likewise the last of its ``concatPOOL4`` chunks), so both come from one encoder pass.
    """
    if pool == computed:
        return features
    if computed == "last4" and pool == "avg":
        return features[:, -(features.shape[1] // LAST_LAYERS) :]
    raise ConfigurationError(f"pool={pool!r} features cannot be read from pool={computed!r} features")
