"""Online k-nearest-neighbour classifier: a cheap, training-free monitor of representation quality
(SPEC.md §6). Validation features are classified by the temperature-weighted votes of their ``k``
most cosine-similar training features (Wu et al., "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", CVPR 2018, §3.4; k = 20 or 200, τ = 0.07 as in DINO)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from ssl_lightning.callbacks.outputs import (
    NonFiniteFeatureCheck,
    features_by_name,
    labels_of,
    metric_name,
    outputs_features,
)
from ssl_lightning.callbacks.ring_buffer import RingBuffer
from ssl_lightning.distributed import gather_variable_length
from ssl_lightning.errors import ConfigurationError

# The bank's name for the labels next to the feature keys (a name no method uses for features).
LABELS = "__labels__"


def knn_votes(
    queries: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 20, temperature: float = 0.07
) -> Tensor:
    """Temperature-weighted k-nearest-neighbour votes per class, ``(Q, num_classes)``; ``argmax`` is the prediction.

    Each query's ``k`` most similar bank rows (all rows when the bank is smaller) vote for their
    label with weight ``exp(s / temperature)``, ``s`` their cosine similarity to the query; a
    query's votes are all scaled by ``exp(−s_max / temperature)`` (``s_max`` its best similarity),
    which leaves the prediction unchanged and keeps a small temperature from overflowing.
    ``queries`` ``(Q, D)`` and ``bank`` ``(N, D)`` must be L2-normalised rows, so that the dot
    product is the cosine similarity. Ties are broken deterministically: among equally similar bank
    rows the lower row index is taken first, and ``argmax`` gives equal votes to the lower class id.
    Memory: a few ``(Q, N)`` temporaries; split large query sets into chunks.
    """
    similarity = queries @ bank.T
    k = min(k, bank.shape[0])
    best = similarity.topk(k, dim=1).values
    kth_best = best[:, -1:]
    above = similarity > kth_best
    tied = similarity == kth_best
    # topk picks arbitrarily among rows tied with the k-th similarity; take them in row order instead.
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    weights = torch.where(chosen, ((similarity - best[:, :1]) / temperature).exp(), 0.0)
    votes = similarity.new_zeros(queries.shape[0], num_classes)
    return votes.scatter_add_(1, bank_labels.expand_as(weights), weights)


class OnlineKNN(Callback):
    """Classify validation features by their nearest neighbours in a bank of training features.

    The bank is a first-in-first-out ring of the last ``bank_size`` labelled training samples: the
    detached, L2-normalised ``features`` the method returns from ``training_step`` (one bank per
    entry of dict features, e.g. the blockwise method's blocks), gathered from every rank so each
    rank holds the same bank, on the training device. Labels ``-1`` never enter the bank. Each
    validation feature gets :func:`knn_votes`; logs ``knn/val_acc`` (``knn/<key>/val_acc`` for dict
    features), averaged over every rank's validation samples. Warns once when validation features
    hold NaN or inf (:class:`NonFiniteFeatureCheck`).

    Memory: ``bank_size × (4 D + 8)`` bytes per feature key on the training device (float32
    features of size D and int64 labels), e.g. 16384 × 2048-d ResNet-50 features = 128 MiB, and
    a ``(validation batch × bank_size)`` similarity matrix per validation batch. The bank is saved
    in checkpoints and restored on resume.

    Args:
        k: number of neighbours that vote.
        temperature: τ of the vote weights ``exp(cosine similarity / τ)``.
        bank_size: number of training samples the bank keeps.
        feature_keys: which entries of dict features get a bank (all when ``None``).
    """

    def __init__(
        self, k: int = 20, temperature: float = 0.07, bank_size: int = 16384, feature_keys: list[str] | None = None
    ) -> None:
        if k < 1 or temperature <= 0:
            raise ConfigurationError(f"OnlineKNN needs k ≥ 1 and temperature > 0, got k={k}, temperature={temperature}")
        self.k = k
        self.temperature = temperature
        self.feature_keys = feature_keys
        self.bank = RingBuffer(bank_size)
        self.accuracy: dict[str, MeanMetric] = {}
        self.num_classes = 0
        self.warned_empty_bank = False
        self.non_finite_check = NonFiniteFeatureCheck("OnlineKNN")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        features = features_by_name(outputs_features(outputs, "OnlineKNN"), self.feature_keys)
        labels = labels_of(batch, "OnlineKNN")
        known = labels >= 0
        # Every rank joins the gathers, also one whose batch has no labelled sample.
        rows = {key: gather_variable_length(F.normalize(f[known].float(), dim=1)) for key, f in features.items()}
        rows[LABELS] = gather_variable_length(labels[known])
        if len(rows[LABELS]):
            self.bank.to(pl_module.device).append(rows)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(self.bank):
            self.num_classes = int(self.bank.to(pl_module.device)[LABELS].max()) + 1

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not len(self.bank):
            return
        features = features_by_name(outputs_features(outputs, "OnlineKNN"), self.feature_keys)
        labels = labels_of(batch, "OnlineKNN")
        known = labels >= 0
        features = {key: f[known] for key, f in features.items()}
        self.non_finite_check.update(features)
        for key, f in features.items():
            queries = F.normalize(f.float(), dim=1)
            votes = knn_votes(queries, self.bank[key], self.bank[LABELS], self.num_classes, self.k, self.temperature)
            if key not in self.accuracy:
                self.accuracy[key] = MeanMetric().to(pl_module.device)
            self.accuracy[key].update((votes.argmax(dim=1) == labels[known]).float())

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.non_finite_check.check(pl_module.device)
        if not len(self.bank) and not trainer.sanity_checking and not self.warned_empty_bank:
            rank_zero_warn(
                "OnlineKNN has no labelled training features in its bank, so `knn/val_acc` is not logged. "
                "It needs training batches with labels (≥ 0); drop the callback for unlabelled data."
            )
            self.warned_empty_bank = True
        for key, metric in self.accuracy.items():
            # Every rank updates at every batch, labelled or not, so every rank joins compute's sync.
            accuracy = metric.compute() if metric.update_count and not trainer.sanity_checking else None
            if accuracy is not None and not accuracy.isnan():  # NaN: no labelled validation sample on any rank
                # Identical on every rank; sync_dist only satisfies Lightning's multi-device check.
                pl_module.log(metric_name("knn", key, "val_acc"), accuracy, sync_dist=True)
            metric.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"bank": self.bank.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.bank.load_state_dict(state_dict["bank"])
