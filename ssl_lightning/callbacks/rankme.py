"""RankMe, the effective rank of a set of embeddings (Garrido, Balestriero, Najman & LeCun, "RankMe:
Assessing the Downstream Performance of Pretrained Self-Supervised Representations by Their Rank",
ICML 2023, eq. 1; SPEC.md §6), and a warning when the representation collapses."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ssl_lightning.callbacks.outputs import features_by_name, metric_name, outputs_features
from ssl_lightning.callbacks.ring_buffer import RingBuffer
from ssl_lightning.distributed import gather_variable_length
from ssl_lightning.errors import ConfigurationError


class CollapseWarning(UserWarning):
    """The embeddings have (nearly) collapsed: few effective dimensions, or almost no spread."""


def rankme(embeddings: Tensor) -> Tensor:
    """Effective rank of an ``(N, K)`` embedding matrix: ``exp(−Σ_k p_k log p_k)`` with
    ``p_k = σ_k / ‖σ‖₁ + 1e-7`` and ``σ`` its singular values (RankMe, eq. 1). ``RankMe(I₈) = 8.0000069``.

    Computed in float32, or float64 for float64 input. A zero matrix gives ≈ 1, like a constant one.
    """
    embeddings = embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))
    singular_values = torch.linalg.svdvals(embeddings)
    # The clamp keeps an all-zero matrix (σ = 0) from dividing zero by zero.
    p = singular_values / singular_values.sum().clamp_min(torch.finfo(singular_values.dtype).tiny) + 1e-7
    return torch.exp(-(p * p.log()).sum())


def normalized_std(embeddings: Tensor) -> Tensor:
    """Spread of an ``(N, K)`` embedding matrix: the per-dimension standard deviation of its
    L2-normalised rows, averaged over dimensions and multiplied by ``√K`` (SimSiam, Chen & He,
    CVPR 2021, §4.1): 0 when every row points the same way (collapse), ≈ 1 for isotropic embeddings."""
    unit_rows = F.normalize(embeddings.float(), dim=1)
    return unit_rows.std(dim=0).mean() * math.sqrt(embeddings.shape[1])


class RankMe(Callback):
    """Log RankMe of the latest training embeddings and warn when the representation collapses.

    A first-in-first-out buffer keeps the last ``buffer_size`` training embeddings: the
    ``output_key`` entry of what ``training_step`` returns (``features`` by default; any other
    detached ``(B, K)`` output, e.g. projector outputs, if the method returns it), gathered from
    every rank, so every rank holds the same buffer and computes the same numbers. Every
    ``every_n_epochs`` epochs, at the end of the training epoch, it logs ``rankme`` and
    ``rankme/normalized`` (divided by the dimension K); for dict features ``rankme/<key>`` and
    ``rankme/<key>/normalized``, one per entry.

    Collapse warning: when RankMe falls below ``collapse_rank_fraction × min(N, K)`` (N the buffered
    samples: N rows cannot have a higher rank), or the embeddings' :func:`normalized_std` falls below
    ``min_normalized_std``, the callback warns once (a :class:`CollapseWarning` on rank 0, with the
    step and the numbers) and, with ``stop_on_collapse``, stops training on every rank.

    Memory: ``buffer_size × 4 K`` bytes per feature key on the training device; the singular values
    cost ``O(N K min(N, K))`` once per check. The buffer is saved in checkpoints, so that a run
    resumed mid-epoch computes the same RankMe as an uninterrupted one.

    Args:
        output_key: which entry of the training step's outputs to buffer.
        feature_keys: which entries of dict embeddings to monitor (all when ``None``).
        buffer_size: number of most recent training embeddings kept.
        every_n_epochs: compute every this many training epochs.
        collapse_rank_fraction: warn when RankMe < this fraction of ``min(N, K)``. Kept low by default: a
            randomly initialised narrow ResNet-18 on Fashion-MNIST gives RankMe 5.8 of 128 in eval mode (38 in
            training mode, which the buffer sees).
        min_normalized_std: warn when :func:`normalized_std` < this (that ResNet: 0.12 in eval mode, 0.39 training).
        stop_on_collapse: also stop training (``trainer.should_stop``) when collapse is detected.
    """

    def __init__(
        self,
        output_key: str = "features",
        feature_keys: list[str] | None = None,
        buffer_size: int = 8192,
        every_n_epochs: int = 1,
        collapse_rank_fraction: float = 0.01,
        min_normalized_std: float = 0.01,
        stop_on_collapse: bool = False,
    ) -> None:
        if every_n_epochs < 1:
            raise ConfigurationError(f"every_n_epochs must be ≥ 1, got {every_n_epochs}")
        self.output_key = output_key
        self.feature_keys = feature_keys
        self.buffer = RingBuffer(buffer_size)
        self.every_n_epochs = every_n_epochs
        self.collapse_rank_fraction = collapse_rank_fraction
        self.min_normalized_std = min_normalized_std
        self.stop_on_collapse = stop_on_collapse
        self.warned = False

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        embeddings = features_by_name(outputs_features(outputs, "RankMe", self.output_key), self.feature_keys)
        rows = {key: gather_variable_length(e.detach().float()) for key, e in embeddings.items()}
        self.buffer.to(pl_module.device).append(rows)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or len(self.buffer) < 2:
            return
        collapsed = []
        for key in self.buffer.storage:
            embeddings = self.buffer[key]
            rank, std = rankme(embeddings), normalized_std(embeddings)
            # Identical on every rank (same buffer); sync_dist only satisfies Lightning's multi-device check.
            pl_module.log(metric_name("rankme", key), rank, sync_dist=True)
            pl_module.log(metric_name("rankme", key, "normalized"), rank / embeddings.shape[1], sync_dist=True)
            max_rank = min(embeddings.shape)
            if rank < self.collapse_rank_fraction * max_rank or std < self.min_normalized_std:
                collapsed.append(
                    f"`{key}`: RankMe {rank:.3f} of at most {max_rank} (warns below "
                    f"{self.collapse_rank_fraction * max_rank:.3f}), normalized std {std:.3g} (warns below "
                    f"{self.min_normalized_std:.3g})"
                )
        if collapsed and not self.warned:
            self._warn(collapsed, trainer)
        if self.stop_on_collapse and trainer.strategy.reduce_boolean_decision(bool(collapsed), all=False):
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict(), "warned": self.warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state_dict["buffer"])
        self.warned = state_dict["warned"]

    def _warn(self, collapsed: list[str], trainer: Trainer) -> None:
        action = (
            "Stopping training (stop_on_collapse=True)."
            if self.stop_on_collapse
            else "Training goes on; pass stop_on_collapse=True to stop."
        )
        rank_zero_warn(
            f"Representation collapse suspected at global step {trainer.global_step} (epoch {trainer.current_epoch}), "
            f"over the last {len(self.buffer)} training embeddings: {'; '.join(collapsed)}. Common causes: too high "
            f"a learning rate, too short a warmup, loss weights that let the invariance term win. {action}",
            category=CollapseWarning,
        )
        self.warned = True
