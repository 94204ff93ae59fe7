"""Barlow Twins loss against SPEC.md's reference values, an independent computation, and 2-process DDP."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.losses import BarlowTwinsLoss, barlow_twins_loss
from tests.distributed_utils import assert_two_process_loss_gradients_equal

TOY_BATCH = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def reference_barlow_twins(z1, z2, lam=0.0051, scale=1.0, eps=1e-5):
    """Double-precision Barlow Twins written from the paper's equations, with explicit loops; the
    normalisation is torch's own BatchNorm1d(affine=False) in training mode."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape
    bn = torch.nn.BatchNorm1d(d, affine=False, eps=eps).double()
    c = bn(z1).T @ bn(z2) / n
    on_diagonal = sum((1 - c[i, i]) ** 2 for i in range(d))
    off_diagonal = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return scale * (on_diagonal + lam * off_diagonal)


def test_spec_toy_batch():
    loss, terms = barlow_twins_loss(TOY_BATCH, TOY_BATCH)
    # c_ii = 0.5 / (0.5 + 1e-5) = 0.99998, so loss = 2 · (2e-5)² = 8.0e-10 (float32 rounding ≈ 1%)
    assert loss.item() == pytest.approx(8.0e-10, rel=2e-2)
    assert terms["off_diagonal"].item() == 0


def test_constant_embeddings_give_the_dimension():
    z = torch.full((16, 7), 3.0)
    loss, terms = barlow_twins_loss(z, z)
    assert loss.item() == pytest.approx(7.0)  # every c_ii = 0
    assert terms["off_diagonal"].item() == 0


@pytest.mark.parametrize(("lam", "scale"), [(0.0051, 1.0), (0.5, 0.024)])
def test_matches_independent_computation(lam, scale):
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(32, 12, generator=gen) * 2 + 1
    z2 = z1 + 0.5 * torch.randn(32, 12, generator=gen)
    loss, _ = barlow_twins_loss(z1, z2, lam, scale)
    assert loss.item() == pytest.approx(reference_barlow_twins(z1, z2, lam, scale).item(), rel=1e-5)


def test_biased_variance_not_unbiased_std():
    """SPEC.md §8: normalising by the unbiased std + eps gives a different loss; ours is batch norm's."""

    def standardize_unbiased(z):
        return (z - z.mean(0)) / (z.std(0) + 1e-5)

    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    c = standardize_unbiased(z1).T @ standardize_unbiased(z2) / 8
    wrong = ((1 - c.diagonal()) ** 2).sum() + 0.0051 * (c.pow(2).sum() - c.diagonal().pow(2).sum())
    ours = barlow_twins_loss(z1, z2)[0]
    assert ours.item() == pytest.approx(reference_barlow_twins(z1, z2).item(), rel=1e-5)
    assert abs(ours.item() - wrong.item()) > 1e-3 * ours.item()


def test_float32_under_bf16_autocast():
    gen = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(64, 16, generator=gen), torch.randn(64, 16, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = barlow_twins_loss(z1.bfloat16(), z2.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_barlow_twins(z1.bfloat16(), z2.bfloat16()).item(), rel=1e-5)


def test_module_equals_function_and_rejects_bad_input():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    assert BarlowTwinsLoss(0.01, 0.5)(z1, z2)[0] == barlow_twins_loss(z1, z2, 0.01, 0.5)[0]
    with pytest.raises(ValueError, match="equal shape"):
        barlow_twins_loss(z1, torch.randn(8, 5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        barlow_twins_loss(z1[:1], z2[:1])


@pytest.mark.distributed
def test_two_process_gradients_equal_single_process(tmp_path):
    assert_two_process_loss_gradients_equal(barlow_twins_loss, str(tmp_path / "grads.pt"))
