"""RankMe: the SPEC.md §6 value of I₈, ≈ r for rank-r matrices, logged per feature key and every N
epochs, and a collapsed model (constant output) warns once, and stops training when asked."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import Callback

from ssl_lightning.callbacks import CollapseWarning, RankMe, rankme
from ssl_lightning.callbacks.rankme import normalized_std
from ssl_lightning.methods import VICReg
from tests.synthetic import NoisyClassDataModule
from tests.test_knn import with_two_blocks
from tests.test_linear_probe import fit, tiny_vicreg


def test_rankme_of_identity_matches_the_spec():
    assert rankme(torch.eye(8, dtype=torch.float64)).item() == pytest.approx(8.0000069, abs=1e-7)


def equal_singular_values(rows: int, columns: int, rank: int, seed: int = 0) -> torch.Tensor:
    """A ``rows × columns`` matrix of the given rank whose non-zero singular values are all 1."""
    gen = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(rows, rank, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(columns, rank, generator=gen, dtype=torch.float64))
    return left @ right.T


@pytest.mark.parametrize("rank", [1, 3, 10, 32])
def test_rankme_of_a_rank_r_matrix_is_about_r(rank):
    assert rankme(equal_singular_values(64, 32, rank)).item() == pytest.approx(rank, abs=1e-3)
    gen = torch.Generator().manual_seed(rank)
    gaussian = torch.randn(256, rank, generator=gen) @ torch.randn(rank, 32, generator=gen)
    assert rank / 2 < rankme(gaussian).item() <= rank + 1e-3  # unequal singular values: below r
    assert rankme(3.5 * gaussian).item() == pytest.approx(rankme(gaussian).item(), rel=1e-4)


def test_normalized_std_is_one_for_isotropic_and_zero_for_constant_embeddings():
    assert normalized_std(torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))).item() == pytest.approx(
        1.0, abs=0.02
    )
    assert normalized_std(torch.ones(100, 64)).item() == 0.0


def test_logs_rankme_per_feature_key_every_n_epochs_without_false_alarm():
    model = tiny_vicreg()
    model.training_step = with_two_blocks(model.training_step)
    model.validation_step = with_two_blocks(model.validation_step)
    logged_at_epoch_end = {}

    class SeeLogs(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            logged_at_epoch_end[trainer.current_epoch] = "rankme/block1" in trainer.callback_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        trainer = fit(
            model,
            NoisyClassDataModule(),
            RankMe(every_n_epochs=2),
            max_epochs=2,
            callbacks=[SeeLogs()],
            enable_checkpointing=False,
        )
    assert logged_at_epoch_end == {0: False, 1: True}
    metrics = trainer.callback_metrics
    assert 1 < metrics["rankme/block1"] <= 16 and 1 < metrics["rankme/block2"] <= 8
    assert metrics["rankme/block2/normalized"] == pytest.approx(metrics["rankme/block2"].item() / 8)
    assert "rankme" not in metrics


class ConstantBackbone(torch.nn.Module):
    """A deliberately collapsed backbone: the same learned 16-d vector for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.randn(16))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(images), -1)


def collapsed_vicreg() -> VICReg:
    return VICReg(ConstantBackbone(), projector_dims=[32, 32], in_chans=1, image_size=16, warmup_epochs=0)


@pytest.mark.parametrize(
    "thresholds",
    [{"collapse_rank_fraction": 0.5, "min_normalized_std": 0.0}, {"collapse_rank_fraction": 0.0}],
    ids=["rankme", "std"],
)
def test_collapse_warns_once_with_step_and_numbers(thresholds):
    with pytest.warns(CollapseWarning, match=r"global step 4 \(epoch 0\).*RankMe 1\.0") as caught:
        trainer = fit(
            collapsed_vicreg(),
            NoisyClassDataModule(),
            RankMe(**thresholds),
            max_epochs=2,
            limit_val_batches=0,
            enable_checkpointing=False,
        )
    assert len([w for w in caught if w.category is CollapseWarning]) == 1  # two checks, one warning
    assert trainer.current_epoch == 2  # warned, not stopped


def test_collapse_stops_training_when_asked():
    with pytest.warns(CollapseWarning, match="Stopping training"):
        trainer = fit(
            collapsed_vicreg(),
            NoisyClassDataModule(),
            RankMe(stop_on_collapse=True),
            max_epochs=3,
            limit_val_batches=0,
            enable_checkpointing=False,
        )
    assert trainer.global_step == 4  # stopped after the first epoch's check
