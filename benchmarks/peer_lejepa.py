"""Our LeJEPA loss next to lightly's (``lightly.loss.LeJEPALoss``, a peer, installed separately with
``pip install lightly``) on the same projections and the same slice directions, single process: the
loss value and the gradient with respect to the projections.

lightly draws its directions from torch's global RNG (``randn(K, M)``, columns normalised); here the
same draw is made from the same seed and handed to ours, so any difference is the computation's. The
views are global then local, as both losses expect.

    python benchmarks/peer_lejepa.py
"""

from __future__ import annotations

import torch
from report import header_lines, markdown_table, publish

from ssl_lightning.losses.sigreg import epps_pulley_quadrature, lejepa_loss

# (global views, local views, batch, projection dim, slices, λ, projection scale)
# lightly refuses batches without a local view, so every case has at least one.
CASES = [
    (2, 6, 128, 64, 1024, 0.05, 1.0),
    (2, 1, 256, 16, 1024, 0.02, 1.0),
    (3, 1, 64, 16, 256, 0.5, 3.0),
    (2, 2, 32, 8, 64, 1.0, 0.1),
]


def lightly_loss(projections: torch.Tensor, num_global: int, sigreg_weight: float, num_slices: int, seed: int):
    from lightly.loss import LeJEPALoss

    loss_fn = LeJEPALoss(lambda_param=sigreg_weight, sigreg_num_vectors=num_slices, gather_distributed=False)
    torch.manual_seed(seed)
    return loss_fn(global_proj=projections[:num_global], local_proj=projections[num_global:])


def our_loss(projections: torch.Tensor, num_global: int, sigreg_weight: float, num_slices: int, seed: int):
    torch.manual_seed(seed)
    directions = torch.randn(projections.shape[-1], num_slices)
    directions = directions / directions.norm(dim=0)
    knots, weights = epps_pulley_quadrature()
    return lejepa_loss(projections, num_global, directions, knots, weights, sigreg_weight, gather_distributed=False)[0]


def value_and_gradient(loss_fn, projections: torch.Tensor, *args) -> tuple[float, torch.Tensor]:
    projections = projections.clone().requires_grad_()
    loss = loss_fn(projections, *args)
    loss.backward()
    return loss.item(), projections.grad


def main() -> None:
    rows = []
    for num_global, num_local, batch, dim, slices, weight, scale in CASES:
        generator = torch.Generator().manual_seed(batch + dim)
        projections = scale * torch.randn(num_global + num_local, batch, dim, generator=generator)
        args = (num_global, weight, slices, 0)
        ours, our_grad = value_and_gradient(our_loss, projections, *args)
        theirs, their_grad = value_and_gradient(lightly_loss, projections, *args)
        gradient_gap = ((our_grad - their_grad).abs().max() / their_grad.abs().max()).item()
        rows.append(
            [
                f"{num_global} + {num_local} views, N {batch}, K {dim}, M {slices}, λ {weight}, scale {scale}",
                f"{ours:.6f}",
                f"{theirs:.6f}",
                f"{abs(ours - theirs) / abs(theirs):.1e}",
                f"{gradient_gap:.1e}",
            ]
        )
    import lightly

    notes = [
        f"lightly {lightly.__version__}, LeJEPALoss(lambda_param=λ, sigreg_num_vectors=M, gather_distributed=False)",
        "same projections (Gaussian × scale), same directions (seeded randn(K, M), columns normalised), float32",
        "gradient gap: max |ours − lightly's| over max |lightly's| of d loss / d projections",
    ]
    columns = ["case", "ours", "lightly", "relative value gap", "gradient gap"]
    publish(
        header_lines("LeJEPA loss: ours vs lightly's (benchmarks/peer_lejepa.py)", torch.device("cpu"), *notes)
        + markdown_table(columns, rows)
    )


if __name__ == "__main__":
    main()
