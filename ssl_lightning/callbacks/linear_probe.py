"""Online linear probe: the standard monitor of representation quality during SSL pretraining
(SPEC.md §6). A linear classifier is trained on the *detached* features the method returns for
each training batch and evaluated on the validation set; the SSL loss never sees a label."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.callbacks.outputs import (
    SINGLE_FEATURE_KEY,
    NonFiniteFeatureCheck,
    features_by_name,
    labels_of,
    metric_name,
    outputs_features,
)
from ssl_lightning.distributed import is_distributed, world_size
from ssl_lightning.errors import ConfigurationError


class OnlineLinearProbe(Callback):
    """Train and evaluate a linear classifier on the method's detached features, online.

    Each feature (one tensor, or every entry of a dict such as the blockwise method's per-stage
    features) gets its own head ``BatchNorm1d(affine=False) → Linear`` with its own AdamW. Heads are
    built at the first batch, once the feature sizes are known. Logs ``probe/train_acc`` and
    ``probe/val_acc`` (``probe/<key>/...`` for dict features). Labels ``-1`` are ignored. Warns
    once when validation features hold NaN or inf (:class:`NonFiniteFeatureCheck`).

    Under DDP every rank trains on its own batch and the head gradients are averaged across ranks
    before each step, so the heads stay identical; accuracies are synchronised by torchmetrics.

    Args:
        num_classes: number of classes; read from the DataModule's ``num_classes`` when ``None``.
        lr: learning rate of the heads' AdamW.
        weight_decay: weight decay of the heads' AdamW.
        feature_keys: which entries of dict features to probe (all when ``None``).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        feature_keys: list[str] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.feature_keys = feature_keys
        self.heads: nn.ModuleDict | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.train_acc: nn.ModuleDict | None = None
        self.val_acc: nn.ModuleDict | None = None
        self._state_to_restore: dict | None = None
        self.non_finite_check = NonFiniteFeatureCheck("OnlineLinearProbe")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.num_classes is None:
            self.num_classes = getattr(trainer.datamodule, "num_classes", None)
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ConfigurationError(
                "OnlineLinearProbe does not know the number of classes: pass num_classes=... "
                "or use a DataModule with a `num_classes` attribute."
            )

    def _build(self, features: dict[str, Tensor], device: torch.device) -> None:
        self.heads = nn.ModuleDict(
            {
                key: nn.Sequential(nn.BatchNorm1d(f.shape[1], affine=False), nn.Linear(f.shape[1], self.num_classes))
                for key, f in features.items()
            }
        ).to(device)
        self.optimizer = torch.optim.AdamW(self.heads.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.train_acc = self._accuracies(features, device)
        self.val_acc = self._accuracies(features, device)
        if self._state_to_restore is not None:
            self._restore(self._state_to_restore)
            self._state_to_restore = None

    def _restore(self, state: dict[str, Any]) -> None:
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])

    def _accuracies(self, features: dict[str, Tensor], device: torch.device) -> nn.ModuleDict:
        return nn.ModuleDict({key: MulticlassAccuracy(self.num_classes, average="micro") for key in features}).to(
            device
        )

    def _labelled(self, outputs: Any, batch: Any, device: torch.device) -> tuple[dict[str, Tensor], Tensor] | None:
        """Float32 features and labels of the labelled samples (None when there are none)."""
        features = features_by_name(outputs_features(outputs, "OnlineLinearProbe"), self.feature_keys)
        labels = labels_of(batch, "OnlineLinearProbe")
        if self.heads is None:
            self._build(features, device)
        elif features.keys() != self.heads.keys():
            raise KeyError(
                f"The method's features changed from {sorted(self.heads)} to {sorted(features)} during training."
            )
        keep = labels >= 0
        if not keep.any():
            return None
        return {key: f[keep].float() for key, f in features.items()}, labels[keep]

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        labelled = self._labelled(outputs, batch, pl_module.device)
        if labelled is None:
            return
        features, labels = labelled
        self.heads.train()
        with torch.enable_grad():
            logits = {key: self.heads[key](f) for key, f in features.items()}
            loss = sum(F.cross_entropy(out, labels) for out in logits.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self._average_gradients_across_ranks()
        self.optimizer.step()
        for key, out in logits.items():
            batch_acc = self.train_acc[key](out.detach(), labels)
            pl_module.log(metric_name("probe", key, "train_acc"), batch_acc, prog_bar=key == SINGLE_FEATURE_KEY)

    def _average_gradients_across_ranks(self) -> None:
        if not is_distributed():
            return
        for param in self.heads.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= world_size()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_and_reset(self.train_acc, "train_acc_epoch", pl_module, prog_bar=False)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        labelled = self._labelled(outputs, batch, pl_module.device)
        if labelled is None:
            return
        features, labels = labelled
        self.non_finite_check.update(features)
        self.heads.eval()
        with torch.no_grad():
            for key, f in features.items():
                self.val_acc[key].update(self.heads[key](f), labels)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.non_finite_check.check(pl_module.device)
        if trainer.sanity_checking:
            for metric in (self.val_acc or {}).values():
                metric.reset()
            return
        self._log_and_reset(self.val_acc, "val_acc", pl_module, prog_bar=True)

    @staticmethod
    def _log_and_reset(metrics: nn.ModuleDict | None, name: str, pl_module: LightningModule, prog_bar: bool) -> None:
        for key, metric in (metrics or {}).items():
            if metric.update_count:
                pl_module.log(
                    metric_name("probe", key, name), metric.compute(), prog_bar=prog_bar and key == SINGLE_FEATURE_KEY
                )
            metric.reset()

    def state_dict(self) -> dict[str, Any]:
        if self.heads is None:
            return self._state_to_restore or {}
        return {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved heads and optimizer until the heads exist (built at the first batch)."""
        if not state_dict:
            return
        if self.heads is None:
            self._state_to_restore = state_dict
        else:
            self._restore(state_dict)
