"""KNNEval gives the accuracy of the online kNN monitor (OnlineKNN) on the same frozen features."""

from __future__ import annotations

import pytest
from lightning.pytorch import LightningModule, Trainer

from ssl_lightning.callbacks import OnlineKNN
from ssl_lightning.evaluation import KNNEval, load_frozen_encoder
from tests.pretrained import pretrained_checkpoint
from tests.synthetic import NoisyClassDataModule


class FrozenFeatures(LightningModule):
    """Hands a frozen encoder's features to the callbacks, as a method's steps do, and learns nothing."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        return {"features": self.encoder(batch[0])}

    def validation_step(self, batch, batch_idx):
        return {"features": self.encoder(batch[0])}

    def configure_optimizers(self):
        return None


def run(trainer_fn: str, model: LightningModule, **trainer_kwargs) -> dict:
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, **trainer_kwargs
    )
    getattr(trainer, trainer_fn)(model, NoisyClassDataModule(num_views=0, train_size=64, batch_size=16))
    return trainer.callback_metrics


@pytest.mark.parametrize("k", [3, 20])
def test_offline_knn_equals_online_knn(k, tmp_path_factory):
    checkpoint = pretrained_checkpoint("VICReg", tmp_path_factory.getbasetemp() / "pretrained")
    encoder, _ = load_frozen_encoder(checkpoint)
    online = run(
        "fit", FrozenFeatures(encoder), max_epochs=1, num_sanity_val_steps=0, callbacks=[OnlineKNN(k=k, bank_size=64)]
    )
    offline = run("validate", KNNEval(str(checkpoint), k=[k]))
    assert offline[f"knn/k{k}/top1"] == online["knn/val_acc"]
    assert offline[f"knn/k{k}/top5"] == 1.0  # 3 classes


@pytest.mark.parametrize(
    ("trainer_kwargs", "bank_size"),
    [
        ({"fast_dev_run": True}, 16),
        ({"fast_dev_run": 3}, 48),
        ({"limit_train_batches": 2}, 32),
        ({"limit_train_batches": 0.5}, 32),
        ({}, 64),
    ],
    ids=["fast_dev_run", "fast_dev_run=3", "limit=2", "limit=0.5", "no_limit"],
)
def test_bank_honours_train_batch_limits(trainer_kwargs, bank_size, tmp_path_factory):
    checkpoint = pretrained_checkpoint("VICReg", tmp_path_factory.getbasetemp() / "pretrained")
    model = KNNEval(str(checkpoint), k=[3])
    run("validate", model, **trainer_kwargs)  # 4 training batches of 16
    assert len(model.bank_labels) == bank_size
