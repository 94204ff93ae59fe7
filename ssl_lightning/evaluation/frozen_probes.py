"""Frozen-feature scores on features held in memory: the linear probe (a logistic regression fit to
convergence on standardised features), the weighted kNN classifier, and the raw pixels of the images
as the baseline every representation should beat.

These are the offline scores of ``benchmarks/reproduce.py``; unlike :class:`LinearEval` they train no
head with SGD and see no augmentation, so two runs on the same features give the same number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ssl_lightning.evaluation.logistic import fit_logistic_regression
from ssl_lightning.methods.ijepa import first_view

STD_FLOOR = 1e-6
"""Added to each feature's standard deviation: constant features become zeros instead of NaN."""


def standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """``train`` and ``others`` shifted and scaled by the mean and standard deviation of ``train``'s columns."""
    mean, std = train.mean(0), train.std(0) + STD_FLOOR
    return [(features - mean) / std for features in (train, *others)]


def linear_probe_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int | None = None,
    l2: float | None = None,
    tolerance: float = 1e-4,
    max_iterations: int = 2000,
) -> float:
    """Test top-1 accuracy of a multinomial logistic regression (with intercept) fit by L-BFGS on
    standardised training features.

    ``l2=None`` is ``1 / N``: scikit-learn's ``LogisticRegression()`` default (``C = 1`` on the summed
    loss) written on the mean loss that :func:`fit_logistic_regression` minimises, so the probe is the
    one most papers' "logistic regression on frozen features" baselines run. The objective is strongly
    convex, so the solve converges to the unique minimiser whatever the features.
    """
    train_x, test_x = standardise(train_x.double(), test_x.double())
    l2 = 1.0 / len(train_y) if l2 is None else l2
    fit = fit_logistic_regression(
        train_x,
        train_y,
        num_classes=num_classes,
        l2=l2,
        fit_intercept=True,
        tolerance=tolerance,
        max_iterations=max_iterations,
    )
    return (fit.logits(test_x).argmax(1) == test_y.to(fit.weight.device)).double().mean().item()


def knn_accuracies(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Test top-1 accuracy, for each ``k`` in ``ks``, of the temperature-weighted cosine kNN classifier
    with the training features as bank (Wu et al. 2018; the rule of
    :func:`~ssl_lightning.callbacks.knn.knn_votes`, whose deterministic tie-breaking is left out here:
    exact ties between real features do not occur). One similarity matrix per chunk serves every ``k``:
    the first ``k`` of its sorted top ``max(ks)``."""
    bank = nn.functional.normalize(train_x.float(), dim=1)
    queries = nn.functional.normalize(test_x.float(), dim=1)
    correct = dict.fromkeys(ks, 0)
    for start in range(0, len(queries), chunk_size):
        similarity, nearest = (queries[start : start + chunk_size] @ bank.T).topk(min(max(ks), len(bank)), dim=1)
        weights = ((similarity - similarity[:, :1]) / temperature).exp()
        labels, expected = train_y[nearest], test_y[start : start + chunk_size]
        for k in ks:
            votes = weights.new_zeros(len(weights), num_classes).scatter_add_(1, labels[:, :k], weights[:, :k])
            correct[k] += int((votes.argmax(1) == expected).sum())
    return {k: hits / len(test_y) for k, hits in correct.items()}


@torch.inference_mode()
def encode(encoder: nn.Module | None, loader: Iterable, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Features ``(N, D)`` (float32, on the CPU) and labels of every batch of ``loader``.

    ``encoder=None`` gives the raw pixels: each image flattened as the loader delivers it (after the
    DataModule's validation transform). The encoder runs in eval mode; its mode is restored afterwards.
    """
    was_training = encoder.training if encoder is not None else False
    if encoder is not None:
        encoder.eval()
    features, labels = [], []
    for images, batch_labels in loader:
        images = first_view(images)
        batch = images.flatten(1) if encoder is None else encoder(images.to(device))
        features.append(batch.float().cpu())
        labels.append(batch_labels)
    if encoder is not None:
        encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)
