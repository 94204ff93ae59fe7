"""Under a 2-process CPU (gloo) run, the kNN bank and the RankMe buffer hold the union of both ranks'
training features, and the kNN accuracy averages both ranks' validation samples (one spawn for both)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ssl_lightning.callbacks import OnlineKNN, RankMe, rankme
from ssl_lightning.callbacks.knn import LABELS
from tests.distributed_utils import run_distributed
from tests.test_knn import brute_force_knn

CPU_MODULE = SimpleNamespace(device=torch.device("cpu"))


def knn_sees_every_rank(rank: int) -> None:
    """Rank 0 trains on 5 samples, rank 1 on 7 (two of the 12 unlabelled); each validates its own queries."""
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(12, 6, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    labels[[2, 9]] = -1
    queries, query_labels = torch.randn(9, 6, generator=gen), torch.randint(0, 3, (9,), generator=gen)
    train_rows, val_rows = [slice(0, 5), slice(5, 12)][rank], [slice(0, 4), slice(4, 9)][rank]

    knn = OnlineKNN(k=3, bank_size=100)
    knn.on_train_batch_end(None, CPU_MODULE, {"features": features[train_rows]}, (None, labels[train_rows]), 0)
    known = labels >= 0
    assert torch.equal(knn.bank[LABELS], labels[known])
    torch.testing.assert_close(knn.bank["features"], F.normalize(features[known], dim=1))

    knn.on_validation_epoch_start(None, CPU_MODULE)
    outputs, batch = {"features": queries[val_rows]}, (None, query_labels[val_rows])
    knn.on_validation_batch_end(None, CPU_MODULE, outputs, batch, 0)
    expected, _ = brute_force_knn(F.normalize(queries, dim=1), knn.bank["features"], labels[known], 3, 3, 0.07)
    expected_accuracy = (expected == query_labels).double().mean().item()
    assert knn.accuracy["features"].compute().item() == pytest.approx(expected_accuracy)


def rankme_sees_every_rank(rank: int) -> None:
    """Rank 0's embeddings span 2 dimensions, rank 1's 3 others: only their union has rank 5."""
    gen = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(16, 5, generator=gen))[0].T
    spans = [basis[:2], basis[2:]]
    embeddings = [torch.randn(n, len(span), generator=gen) @ span for n, span in zip((40, 60), spans)]

    monitor = RankMe(buffer_size=1000)
    monitor.on_train_batch_end(None, CPU_MODULE, {"features": embeddings[rank]}, None, 0)
    union = torch.cat(embeddings)
    assert torch.equal(monitor.buffer["features"], union)
    assert rankme(embeddings[rank]) < 3
    assert 4 < rankme(monitor.buffer["features"]) <= 5 + 1e-3


def monitors_see_every_rank(rank: int, world_size: int) -> None:
    knn_sees_every_rank(rank)
    rankme_sees_every_rank(rank)


@pytest.mark.distributed
def test_knn_and_rankme_see_the_union_of_both_ranks():
    run_distributed(monitors_see_every_rank, 2)
