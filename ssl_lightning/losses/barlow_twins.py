"""Barlow Twins loss (Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021, arXiv 2103.03230, Eqs. 1–2).

    L = Σ_i (1 − C_ii)² + λ · Σ_i Σ_{j≠i} C_ij²,    C = ẑ1ᵀ ẑ2 / N        (Eqs. 1, 2)

where ẑ is each view's embedding normalised per dimension over the *global* batch of N samples,
exactly like ``BatchNorm1d(affine=False)`` in training mode: mean and *biased* variance, ε = 1e-5
(SPEC.md §4; normalising by the unbiased std instead shifts the value and ≈2% of the gradient,
SPEC.md §8).

Under DDP the per-dimension sums and the cross-correlation are summed over ranks with a
gradient-carrying all-reduce (SPEC.md §5): every rank then holds the global C, and after DDP
averages the parameter gradients they equal single-process gradients on the whole batch. Summing
the D×D matrix instead of gathering the N×D embeddings keeps each rank's matmul at its own batch
size, as in the authors' implementation. Every rank must contribute the same number of samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_lightning.distributed import all_reduce_sum_with_grad, world_size
from ssl_lightning.errors import ConfigurationError

BATCH_NORM_EPS = 1e-5


def batch_standardize(z: Tensor, global_size: int, eps: float, reduce: bool) -> Tensor:
    """Per-dimension standardisation of ``z`` with the global batch mean and biased variance, i.e.
    ``BatchNorm1d(affine=False)`` in training mode over all ranks' samples when ``reduce``."""
    total = z.sum(dim=0)
    mean = (all_reduce_sum_with_grad(total) if reduce else total) / global_size
    centered = z - mean
    squares = centered.pow(2).sum(dim=0)
    variance = (all_reduce_sum_with_grad(squares) if reduce else squares) / global_size
    return centered / torch.sqrt(variance + eps)


def barlow_twins_loss(
    z1: Tensor,
    z2: Tensor,
    off_diagonal_weight: float = 0.0051,
    loss_scale: float = 1.0,
    eps: float = BATCH_NORM_EPS,
    gather_distributed: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Barlow Twins loss of two ``(N, D)`` embedding batches; returns ``(loss, {term: value})``.

    Args:
        z1, z2: the two views' embeddings (this rank's samples).
        off_diagonal_weight: λ of Eq. 1 (paper: 0.0051).
        loss_scale: factor on the whole loss (1 in the paper; the blockwise paper's code uses 0.024).
        eps: the batch-norm ε added to the variance.
        gather_distributed: normalise and correlate over all ranks' samples.

    The terms ``on_diagonal`` and ``off_diagonal`` are returned unweighted and unscaled. Computed in
    float32 with autocast disabled: the D×D correlation is too coarse in bf16.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ConfigurationError(
            f"Barlow Twins expects two (N, D) embeddings of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    reduce = gather_distributed and world_size() > 1
    global_size = z1.shape[0] * (world_size() if reduce else 1)
    if global_size < 2:
        raise ConfigurationError("Barlow Twins' batch normalisation needs at least 2 samples in the (global) batch")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1 = batch_standardize(z1.float(), global_size, eps, reduce)
        z2 = batch_standardize(z2.float(), global_size, eps, reduce)
        local_correlation = z1.T @ z2
        correlation = (all_reduce_sum_with_grad(local_correlation) if reduce else local_correlation) / global_size
        diagonal = correlation.diagonal()
        on_diagonal = (1.0 - diagonal).pow(2).sum()
        # Σ_{i≠j} C_ij² as Σ C² − Σ C_ii²: no off-diagonal index mask (SPEC.md §8).
        off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
        loss = loss_scale * (on_diagonal + off_diagonal_weight * off_diagonal)
    return loss, {"on_diagonal": on_diagonal, "off_diagonal": off_diagonal}


class BarlowTwinsLoss(nn.Module):
    """Module wrapper of :func:`barlow_twins_loss` with the paper's λ = 0.0051."""

    def __init__(
        self,
        off_diagonal_weight: float = 0.0051,
        loss_scale: float = 1.0,
        eps: float = BATCH_NORM_EPS,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.off_diagonal_weight = off_diagonal_weight
        self.loss_scale = loss_scale
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return barlow_twins_loss(z1, z2, self.off_diagonal_weight, self.loss_scale, self.eps, self.gather_distributed)
