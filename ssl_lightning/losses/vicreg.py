"""VICReg loss (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, arXiv 2105.04906, Eqs. 1–6).

    L = λ·s(Z, Z') + μ·[v(Z) + v(Z')]/2 + ν·[c(Z) + c(Z')]

* invariance s: mean squared error between the two views' embeddings (each rank's own batch;
  DDP's gradient averaging turns it into the global mean);
* variance v: mean over dimensions of relu(1 − sqrt(Var(z_j) + ε)), Var unbiased over the
  *global* batch;
* covariance c: Σ_{i≠j} C_ij² / D with C the covariance matrix over the *global* batch.

The global statistics are computed on embeddings gathered with a gradient-carrying all-gather
(SPEC.md §5), so multi-process gradients equal single-process gradients on the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.distributed import gather_with_grad
from ssl_lightning.errors import ConfigurationError


def variance_loss(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Hinge on the per-dimension standard deviation, v(Z) of VICReg Eq. 1 (target std 1)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension, c(Z) of VICReg Eq. 4.

    Uses Σ C² − Σ diag(C)², which avoids an off-diagonal index mask (≈2× faster, SPEC.md §8).
    """
    n, dim = z.shape
    centered = z - z.mean(dim=0)
    cov = centered.T @ centered / (n - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / dim


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg loss of two ``(N, D)`` embedding batches; returns ``(loss, {term: value})``.

    Computed in float32 with autocast disabled: ``.float()`` alone is not enough, since autocast
    would still run the covariance matmul in bf16, which loses too much precision for large embeddings.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ConfigurationError(
            f"VICReg expects two (N, D) embeddings of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)
        if gather_distributed:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        if z1.shape[0] < 2:
            raise ConfigurationError("VICReg's variance and covariance need at least 2 samples in the (global) batch")
        variance = (variance_loss(z1, eps) + variance_loss(z2, eps)) / 2
        covariance = covariance_loss(z1) + covariance_loss(z2)
        loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}


class VICRegLoss(nn.Module):
    """Module wrapper of :func:`vicreg_loss` with the paper's default weights (25, 25, 1)."""

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return vicreg_loss(
            z1,
            z2,
            self.invariance_weight,
            self.variance_weight,
            self.covariance_weight,
            self.eps,
            self.gather_distributed,
        )
