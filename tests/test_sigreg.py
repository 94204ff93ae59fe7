"""SIGReg and the LeJEPA loss against SPEC.md §9's reference values and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.losses.sigreg import (
    LeJEPALoss,
    epps_pulley_quadrature,
    lejepa_loss,
    random_directions,
    sigreg,
)
from tests.distributed_utils import assert_two_process_loss_gradients_equal

KNOTS, WEIGHTS = epps_pulley_quadrature()


def statistic(z: torch.Tensor, directions: torch.Tensor, grid: str = "official") -> torch.Tensor:
    t, w = epps_pulley_quadrature(grid=grid)
    return sigreg(z, directions, t, w)


def independent_weights() -> tuple[np.ndarray, np.ndarray]:
    """The official quadrature written out (SPEC §9 step 5): t_j = 3j/16, weights (Δ, 2Δ, …, 2Δ, Δ)·e^{−t²/2}."""
    t = np.arange(17) * 3 / 16
    trapezoid = np.full(17, 2 * 3 / 16)
    trapezoid[[0, -1]] = 3 / 16
    return t, trapezoid * np.exp(-(t**2) / 2)


def test_collapsed_batch_gives_the_reference_statistic_and_no_gradient():
    z = torch.zeros(50, 8, requires_grad=True)
    directions = random_directions(8, 32, torch.Generator().manual_seed(0))
    per_slice = [statistic(z, directions[:, m : m + 1]) for m in range(32)]
    torch.testing.assert_close(torch.stack(per_slice) / 50, torch.full((32,), 0.4020476), rtol=1e-6, atol=0)
    statistic(z, directions).backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("c", [1.0, 0.3, -2.0])
def test_constant_slice_matches_the_closed_form(c):
    direction = torch.nn.functional.normalize(torch.tensor([[1.0], [2.0], [-2.0]]), dim=0)
    z = c * direction.T.repeat(20, 1)  # every sample projects to c on this slice
    t, w = independent_weights()
    phi = np.exp(-(t**2) / 2)
    expected = float(np.sum(w * (1 - 2 * phi * np.cos(t * c) + phi**2)))
    if c == 1.0:
        assert expected == pytest.approx(1.186006, abs=1e-6)  # SPEC §9
    assert statistic(z, direction).item() / 20 == pytest.approx(expected, rel=1e-5)


def test_exact_gaussian_samples_give_the_expected_statistic():
    # 4096 coordinates of i.i.d. N(0, 1) samples, each its own slice (identity directions): independent
    # draws of T, whose mean is 1.052464 for any N (SPEC §9) and per-slice sd ≈ 0.97.
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4096, generator=generator)
    assert statistic(z, torch.eye(4096)).item() == pytest.approx(1.052464, abs=4 * 0.97 / 64)


def test_wide_gaussian_at_large_n_approaches_the_closed_form():
    sigma = 2.0
    per_sample = (
        math.sqrt(math.pi / (sigma**2 + 0.5)) - 2 * math.sqrt(math.pi / (sigma**2 / 2 + 1)) + math.sqrt(2 * math.pi / 3)
    )
    assert per_sample == pytest.approx(0.236092, abs=1e-6)
    n = 200_000
    z = sigma * torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    assert statistic(z, torch.eye(4)).item() == pytest.approx(per_sample * n + 1.05, rel=0.01)


def test_matches_a_plain_float64_loop_over_slices_and_knots():
    generator = torch.Generator().manual_seed(6)
    z = torch.randn(12, 5, generator=generator) * 1.3 + 0.2
    directions = random_directions(5, 7, generator)
    t, w = independent_weights()
    rows, columns = z.double().tolist(), directions.double().T.tolist()
    total = 0.0
    for direction in columns:
        y = [sum(zi * ai for zi, ai in zip(row, direction)) for row in rows]
        for knot, weight in zip(t, w):
            cos_mean = sum(math.cos(knot * yn) for yn in y) / len(y)
            sin_mean = sum(math.sin(knot * yn) for yn in y) / len(y)
            total += weight * ((cos_mean - math.exp(-(knot**2) / 2)) ** 2 + sin_mean**2) * len(y)
    assert statistic(z, directions).item() == pytest.approx(total / len(columns), rel=1e-6)


def test_both_grids_approximate_the_exact_integral_of_a_collapsed_batch():
    # ∫ e^{−t²/2} (1 − e^{−t²/2})² dt over ℝ = √(2π) − 2√π + √(2π/3), computed by hand.
    exact = math.sqrt(2 * math.pi) - 2 * math.sqrt(math.pi) + math.sqrt(2 * math.pi / 3)
    z = torch.zeros(10, 2)
    for grid in ("official", "paper"):
        assert statistic(z, torch.eye(2), grid).item() / 10 == pytest.approx(exact, rel=0.02)


def test_statistic_is_nonnegative_and_invariant_to_order_and_sign():
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(40, 6, generator=generator) * 1.7 + 0.3
    directions = random_directions(6, 16, generator)
    value = statistic(z, directions)
    assert value.item() >= 0
    torch.testing.assert_close(statistic(z[torch.randperm(40, generator=generator)], directions), value)
    torch.testing.assert_close(statistic(-z, directions), value)


def test_per_sample_gradient_is_bounded():
    bound = 8 * (1 - math.exp(-4.5))
    generator = torch.Generator().manual_seed(3)
    for scale in (0.1, 1.0, 5.0):
        y = (scale * torch.randn(32, 1, generator=generator)).requires_grad_()
        statistic(y, torch.ones(1, 1)).backward()
        assert y.grad.abs().max().item() <= bound * 1.01


def test_directions_are_unit_columns_and_reproducible():
    a = random_directions(5, 7, torch.Generator().manual_seed(4))
    b = random_directions(5, 7, torch.Generator().manual_seed(4))
    assert a.shape == (5, 7) and torch.equal(a, b)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(7))


def test_lejepa_loss_matches_an_independent_computation():
    generator = torch.Generator().manual_seed(5)
    projections = torch.randn(4, 10, 3, generator=generator)  # 2 global + 2 local views
    directions = random_directions(3, 8, generator)
    loss, terms = lejepa_loss(projections, 2, directions, KNOTS, WEIGHTS, sigreg_weight=0.1)
    z = projections.double().numpy()
    centre = (z[0] + z[1]) / 2
    prediction = np.mean([(centre - z[v]) ** 2 for v in range(4)])
    t, w = independent_weights()
    phi = np.exp(-(t**2) / 2)
    statistics = []
    for v in range(4):
        y = z[v] @ directions.double().numpy()  # (N, M)
        angles = y[..., None] * t
        err = (np.cos(angles).mean(0) - phi) ** 2 + np.sin(angles).mean(0) ** 2
        statistics.append((err @ w).mean() * 10)
    assert terms["prediction"].item() == pytest.approx(prediction, rel=1e-5)
    assert terms["sigreg"].item() == pytest.approx(np.mean(statistics), rel=1e-5)
    assert loss.item() == pytest.approx(0.1 * np.mean(statistics) + 0.9 * prediction, rel=1e-5)


def test_prediction_gradient_reaches_the_global_views():
    # No stop-gradient: the target (mean of the globals) is trained too, so with λ = 0 a global view
    # that sits away from the other views is pulled towards them, and the locals towards the globals.
    projections = torch.zeros(3, 4, 2)
    projections[0] += 1.0
    projections.requires_grad_()
    lejepa_loss(projections, 2, torch.eye(2), KNOTS, WEIGHTS, sigreg_weight=0.0)[0].backward()
    assert (projections.grad[0] > 0).all() and (projections.grad[2] < 0).all()


def test_loss_module_runs_in_float32_under_autocast():
    projections = torch.randn(2, 16, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms = LeJEPALoss(0.05)(projections, 2, torch.eye(4))
    assert loss.dtype == terms["sigreg"].dtype == torch.float32


def two_view_lejepa(z1: torch.Tensor, z2: torch.Tensor):
    """LeJEPA on two global views with fixed directions (spawned by the distributed test)."""
    directions = random_directions(z1.shape[1], 16, torch.Generator().manual_seed(0))
    return lejepa_loss(torch.stack([z1, z2]), 2, directions, KNOTS, WEIGHTS, sigreg_weight=0.5)


def test_two_process_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    assert_two_process_loss_gradients_equal(two_view_lejepa, str(tmp_path / "grads.pt"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: epps_pulley_quadrature(16), "odd number of knots"),
        (lambda: epps_pulley_quadrature(1), "odd number of knots"),
        (lambda: epps_pulley_quadrature(17, "wide"), "grid must be"),
        (lambda: random_directions(4, 0, torch.Generator()), "at least one slice"),
        (lambda: LeJEPALoss(1.5), r"must lie in \[0, 1\]"),
        (lambda: LeJEPALoss(-0.1), r"must lie in \[0, 1\]"),
        (lambda: sigreg(torch.randn(1, 3), torch.eye(3), KNOTS, WEIGHTS), "at least 2 samples"),
        (lambda: sigreg(torch.randn(4, 3), torch.eye(2), KNOTS, WEIGHTS), r"\(N, K\) projections"),
        (lambda: lejepa_loss(torch.randn(3, 4, 2), 1, torch.eye(2), KNOTS, WEIGHTS), "at least 2 global views"),
    ],
)
def test_bad_input_is_refused_with_the_fix(call, message):
    with pytest.raises(ConfigurationError, match=message):
        call()
