"""JEPA regression loss between predicted and target patch representations (I-JEPA, Assran et al.,
arXiv 2301.08243, Sec. 3 "Loss"; FlexPredict/StoP, Bar et al., arXiv 2308.00566, uses the same).

The paper writes the loss as the average squared L2 distance between predicted and target patch
representations, (1/M)·Σ_i Σ_{j∈B_i} ‖ŝ_{y_j} − s_{y_j}‖²₂; the official code (which produced the
published numbers) uses smooth-L1 with β = 1 instead. Both are means over every predicted
element, so each process's loss is a per-rank mean and DDP's gradient averaging turns it into the
global mean: no collective is needed (SPEC.md §1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError

JEPALossKind = Literal["smooth_l1", "mse"]

ELEMENTWISE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "smooth_l1": functools.partial(F.smooth_l1_loss, beta=1.0),  # official code
    "mse": F.mse_loss,  # the paper's squared L2, averaged over elements
}


def elementwise_loss(kind: JEPALossKind) -> Callable[[Tensor, Tensor], Tensor]:
    """The mean-reduced loss function named ``kind``, with a clear error for unknown names."""
    if kind not in ELEMENTWISE_LOSSES:
        raise ConfigurationError(f"Unknown JEPA loss {kind!r}: use one of {sorted(ELEMENTWISE_LOSSES)}.")
    return ELEMENTWISE_LOSSES[kind]


def jepa_loss(predictions: Tensor, targets: Tensor, kind: JEPALossKind = "smooth_l1") -> Tensor:
    """Mean regression loss of ``predictions`` against (detached) ``targets`` of equal shape.

    Args:
        predictions: predictor outputs, e.g. ``(T·B, Kt, D)``.
        targets: target-encoder features gathered at the same patches, same shape.
        kind: ``"smooth_l1"`` (official code, β = 1, default) or ``"mse"``.

    Computed in float32 whatever the autocast dtype.
    """
    if predictions.shape != targets.shape:
        raise ConfigurationError(
            f"JEPA predictions and targets must have equal shapes, got {tuple(predictions.shape)} "
            f"and {tuple(targets.shape)}"
        )
    return elementwise_loss(kind)(predictions.float(), targets.float())


class JEPALoss(nn.Module):
    """Module wrapper of :func:`jepa_loss`; rejects an unknown ``kind`` at construction."""

    def __init__(self, kind: JEPALossKind = "smooth_l1") -> None:
        super().__init__()
        elementwise_loss(kind)
        self.kind = kind

    def forward(self, predictions: Tensor, targets: Tensor) -> Tensor:
        return jepa_loss(predictions, targets, self.kind)
