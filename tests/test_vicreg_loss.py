"""VICReg loss against SPEC.md's reference values, an independent computation, and 2-process DDP."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.losses import VICRegLoss, vicreg_loss
from tests.distributed_utils import assert_two_process_loss_gradients_equal


def reference_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0, eps=1e-4):
    """Plain double-precision VICReg written from the paper's equations, with explicit loops."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape
    invariance = ((z1 - z2) ** 2).sum() / (n * d)
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        std = torch.sqrt(torch.var(z, dim=0, unbiased=True) + eps)
        variance += torch.clamp(1 - std, min=0).mean() / 2
        cov = torch.cov(z.T)
        off_diagonal = sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
        covariance += off_diagonal / d
    return lam * invariance + mu * variance + nu * covariance


def test_collapsed_embeddings_give_spec_value():
    z = torch.ones(16, 8)
    loss, terms = vicreg_loss(z, z)
    assert loss.item() == pytest.approx(25 * (1 - 1e-4**0.5), abs=1e-5)  # 24.75
    assert terms["invariance"].item() == 0 and terms["covariance"].item() == 0


def test_spec_toy_batch():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    loss, _ = vicreg_loss(x, x)
    assert loss.item() == pytest.approx(4.58605, abs=1e-5)


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_matches_independent_computation(weights):
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(32, 12, generator=gen) * 0.7
    z2 = z1 + 0.3 * torch.randn(32, 12, generator=gen)
    loss, _ = vicreg_loss(z1, z2, *weights)
    assert loss.item() == pytest.approx(reference_vicreg(z1, z2, *weights).item(), rel=1e-5)


def test_module_equals_function_and_rejects_bad_shapes():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    assert VICRegLoss()(z1, z2)[0] == vicreg_loss(z1, z2)[0]
    with pytest.raises(ValueError, match="equal shape"):
        vicreg_loss(z1, torch.randn(8, 5))


@pytest.mark.distributed
def test_two_process_gradients_equal_single_process(tmp_path):
    assert_two_process_loss_gradients_equal(vicreg_loss, str(tmp_path / "grads.pt"))
