"""SIGReg and the LeJEPA loss (Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised
Learning Without the Heuristics", arXiv 2511.08544, 2025; SPEC.md §9).

SIGReg (Sketched Isotropic Gaussian Regularisation) pushes the distribution of the projections
``z`` towards an isotropic Gaussian by testing M random 1-D slices ``y = a·z`` (unit directions
``a``) with the Epps–Pulley statistic, a weighted L2 distance between the slice's empirical
characteristic function and the standard normal's, φ(t) = exp(−t²/2) (paper §4, Eq. 7, Algorithm 1):

    T = N · ∫ w(t) · [(C(t) − φ(t))² + S(t)²] dt,   C(t) = mean_n cos(t·y_n),  S(t) = mean_n sin(t·y_n)

with the window w(t) = exp(−t²/2) and N the number of samples of the *global* batch. The integral is
a trapezoid rule: by default the official code's 17 knots on [0, 3] with doubled weights (the
integrand is even, so this is the trapezoid over [−3, 3]); ``grid="paper"`` is Algorithm 1's 17
knots on [−5, 5]. SIGReg is the mean of T over slices (and views).

Distributed: C and S are means over the global batch, formed from per-rank sums with a
gradient-carrying all-reduce (SPEC.md §5): after DDP averages the parameter gradients they equal
single-process gradients on the whole batch. The directions come from a generator seeded by the
caller (the training step's position), so every rank draws the same ones.

The LeJEPA loss (Eq. 9, as the official code computes it) mixes SIGReg with a prediction term that
pulls every view's projection to the mean of the global views' projections:

    L = λ · SIGReg + (1 − λ) · mean_{v, n, k} (μ_{n,k} − z_{v,n,k})²,   μ_n = mean over global views of z_{v,n}

No stop-gradient anywhere. Both terms run in float32 with autocast off.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ssl_lightning.distributed import all_reduce_sum_with_grad, world_size
from ssl_lightning.errors import ConfigurationError

Grid = Literal["official", "paper"]

OFFICIAL_T_MAX = 3.0
"""The official code integrates over [0, 3] and doubles (the integrand is even)."""

PAPER_T_MAX = 5.0
"""Algorithm 1 of the paper integrates over [−5, 5]."""


def epps_pulley_quadrature(knots: int = 17, grid: Grid = "official") -> tuple[Tensor, Tensor]:
    """Knots ``t`` and weights ``W`` (trapezoid weights × the window exp(−t²/2)) such that
    ``Σ_j W_j f(t_j)`` approximates ``∫ exp(−t²/2) f(t) dt`` over [−t_max, t_max] for an even ``f``.

    ``"official"``: ``knots`` points on [0, 3], weights (Δ, 2Δ, …, 2Δ, Δ) — the trapezoid over [0, 3]
    doubled. ``"paper"``: ``knots`` points on [−5, 5], weights (Δ/2, Δ, …, Δ, Δ/2). Returned in float32.
    """
    if not isinstance(knots, int) or knots < 3 or knots % 2 == 0:
        raise ConfigurationError(
            f"the Epps-Pulley quadrature needs an odd number of knots ≥ 3 (the paper and the official code use 17), "
            f"got {knots!r}"
        )
    if grid == "official":
        t = torch.linspace(0.0, OFFICIAL_T_MAX, knots, dtype=torch.float64)
        step = OFFICIAL_T_MAX / (knots - 1)
        trapezoid = torch.full((knots,), 2 * step, dtype=torch.float64)
        trapezoid[[0, -1]] = step
    elif grid == "paper":
        t = torch.linspace(-PAPER_T_MAX, PAPER_T_MAX, knots, dtype=torch.float64)
        step = 2 * PAPER_T_MAX / (knots - 1)
        trapezoid = torch.full((knots,), step, dtype=torch.float64)
        trapezoid[[0, -1]] = step / 2
    else:
        raise ConfigurationError(f"grid must be 'official' ([0, 3], doubled) or 'paper' ([-5, 5]), got {grid!r}")
    weights = trapezoid * torch.exp(-t.square() / 2)
    return t.float(), weights.float()


def random_directions(dim: int, num_slices: int, generator: torch.Generator) -> Tensor:
    """``(dim, num_slices)`` matrix whose columns are i.i.d. uniform unit vectors (normalised Gaussian
    draws from ``generator``, on its device): ranks with equally seeded generators get the same ones."""
    check_num_slices(num_slices)
    directions = torch.randn(dim, num_slices, generator=generator, device=generator.device)
    return directions / directions.norm(dim=0, keepdim=True)


def check_num_slices(num_slices: int) -> None:
    if not isinstance(num_slices, int) or num_slices < 1:
        raise ConfigurationError(
            f"SIGReg needs at least one slice direction (num_slices ≥ 1; recommended 1024), got {num_slices!r}"
        )


def sigreg(
    z: Tensor,
    directions: Tensor,
    knots: Tensor,
    weights: Tensor,
    gather_distributed: bool = True,
) -> Tensor:
    """SIGReg: the Epps–Pulley statistic T of each slice ``z @ directions``, averaged over slices and
    over any leading (view) dimensions (paper Algorithm 1). The characteristic functions of every view
    are summed over ranks in one all-reduce.

    Args:
        z: ``(..., N, K)`` projections of this rank's samples, e.g. ``(V, N, K)`` for V views.
        directions: ``(K, M)`` unit slice directions, the same on every rank (:func:`random_directions`).
        knots, weights: the quadrature of :func:`epps_pulley_quadrature`.
        gather_distributed: form C and S over all ranks' samples (gradient-carrying all-reduce); every
            rank must then contribute the same number of samples.
    """
    if z.ndim < 2 or directions.ndim != 2 or z.shape[-1] != directions.shape[0]:
        raise ConfigurationError(
            f"SIGReg expects (N, K) projections (or (..., N, K): one statistic per leading index) and (K, M) "
            f"directions, got {tuple(z.shape)} and {tuple(directions.shape)}"
        )
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, directions = z.float(), directions.float().to(z.device)
        knots, weights = knots.to(z.device), weights.to(z.device)
        count = z.shape[-2] * (world_size() if gather_distributed else 1)
        if count < 2:
            raise ConfigurationError(
                "SIGReg needs at least 2 samples in the (global) batch to compare their distribution with a Gaussian; "
                "raise the batch size."
            )
        angles = (z @ directions).unsqueeze(-1) * knots  # (..., N, M, knots)
        sums = torch.stack([angles.cos().sum(dim=-3), angles.sin().sum(dim=-3)])  # (2, ..., M, knots)
        if gather_distributed:
            sums = all_reduce_sum_with_grad(sums)
        cos_mean, sin_mean = sums / count
        target = torch.exp(-knots.square() / 2)
        error = (cos_mean - target).square() + sin_mean.square()
        return (error @ weights).mean() * count


def prediction_loss(projections: Tensor, num_global: int) -> Tensor:
    """Mean over views, samples and dimensions of (μ − z_v)², μ the mean of the first ``num_global``
    views' projections (``projections``: ``(V, N, K)``); every view is pulled to μ, globals included."""
    centre = projections[:num_global].mean(dim=0)
    return (centre - projections).square().mean()


def lejepa_loss(
    projections: Tensor,
    num_global: int,
    directions: Tensor,
    knots: Tensor,
    weights: Tensor,
    sigreg_weight: float = 0.05,
    gather_distributed: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """λ · SIGReg + (1 − λ) · prediction of ``(V, N, K)`` projections, the first ``num_global`` views
    global; SIGReg is averaged over the V views. Returns ``(loss, {"sigreg": …, "prediction": …})``."""
    check_sigreg_weight(sigreg_weight)
    if projections.ndim != 3:
        raise ConfigurationError(f"LeJEPA expects (views, N, K) projections, got shape {tuple(projections.shape)}")
    if not 2 <= num_global <= projections.shape[0]:
        raise ConfigurationError(
            f"LeJEPA needs at least 2 global views (and no more than the {projections.shape[0]} views of the batch), "
            f"got num_global={num_global}"
        )
    with torch.autocast(device_type=projections.device.type, enabled=False):
        projections = projections.float()
        prediction = prediction_loss(projections, num_global)
        regulariser = sigreg(projections, directions, knots, weights, gather_distributed)
        loss = sigreg_weight * regulariser + (1 - sigreg_weight) * prediction
    return loss, {"sigreg": regulariser, "prediction": prediction}


def check_sigreg_weight(sigreg_weight: float) -> None:
    if not (isinstance(sigreg_weight, (int, float)) and 0.0 <= sigreg_weight <= 1.0):
        raise ConfigurationError(
            f"LeJEPA's trade-off λ (sigreg_weight) mixes λ·SIGReg + (1 − λ)·prediction and must lie in [0, 1] "
            f"(paper: 0.05; official small-data run: 0.02), got {sigreg_weight!r}"
        )


class LeJEPALoss(nn.Module):
    """Module form of :func:`lejepa_loss`: holds λ and the quadrature; the directions are passed per call
    (drawn by the caller from the step, identical on every rank)."""

    def __init__(
        self,
        sigreg_weight: float = 0.05,
        knots: int = 17,
        grid: Grid = "official",
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        check_sigreg_weight(sigreg_weight)
        self.sigreg_weight = sigreg_weight
        self.gather_distributed = gather_distributed
        t, w = epps_pulley_quadrature(knots, grid)
        self.register_buffer("knots", t, persistent=False)
        self.register_buffer("weights", w, persistent=False)

    def forward(self, projections: Tensor, num_global: int, directions: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return lejepa_loss(
            projections,
            num_global,
            directions,
            self.knots,
            self.weights,
            self.sigreg_weight,
            self.gather_distributed,
        )
