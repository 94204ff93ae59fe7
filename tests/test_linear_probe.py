"""OnlineLinearProbe: it learns, ignores unknown labels, survives checkpoint/resume, and fails clearly."""

from __future__ import annotations

import functools

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from ssl_lightning.callbacks import OnlineLinearProbe
from ssl_lightning.methods import VICReg
from tests.synthetic import NoisyClassDataModule


def tiny_convnet() -> torch.nn.Module:
    """A user-defined backbone: two convolutions and global average pooling, (B, 1, H, W) → (B, 16)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )


def tiny_vicreg(**kwargs) -> VICReg:
    torch.manual_seed(0)
    return VICReg(
        tiny_convnet(),
        projector_dims=[32, 32],
        in_chans=1,
        image_size=16,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        warmup_epochs=0,
        **kwargs,
    )


def fit(model, datamodule, probe, max_epochs=1, ckpt_path=None, **trainer_kwargs):
    trainer = Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=[probe, *trainer_kwargs.pop("callbacks", [])],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule, ckpt_path=ckpt_path)
    return trainer


def test_probe_learns_class_structure():
    probe = OnlineLinearProbe(lr=1e-2)
    trainer = fit(tiny_vicreg(), NoisyClassDataModule(train_size=96), probe, max_epochs=4, enable_checkpointing=False)
    assert trainer.callback_metrics["probe/val_acc"] > 0.8  # chance is 1/3
    assert "probe/train_acc" in trainer.callback_metrics


def test_probe_ignores_unknown_labels():
    probe = OnlineLinearProbe(num_classes=3)
    fit(
        tiny_vicreg(),
        NoisyClassDataModule(train_label=-1),
        probe,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_checkpointing=False,
    )
    assert probe.heads is not None  # built from the first batch ...
    assert not probe.optimizer.state  # ... but never stepped: every label was -1


def test_checkpoint_resume_restores_head_and_optimizer(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = OnlineLinearProbe()
    fit(tiny_vicreg(), NoisyClassDataModule(), first, callbacks=[ckpt], num_sanity_val_steps=0)
    steps_per_epoch = 64 // 16
    saved = {k: v.clone() for k, v in first.heads.state_dict().items()}

    second = OnlineLinearProbe()
    second.load_state_dict(torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"][first.state_key])
    assert second.heads is None  # restored lazily, once the feature size is known
    fit(
        tiny_vicreg(),
        NoisyClassDataModule(),
        second,
        max_epochs=2,
        ckpt_path=str(tmp_path / "last.ckpt"),
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    adam_steps = {int(state["step"]) for state in second.optimizer.state.values()}
    assert adam_steps == {2 * steps_per_epoch}  # resumed Adam: its step count continued
    assert any(not torch.equal(saved[k], v) for k, v in second.heads.state_dict().items())


def test_unknown_num_classes_is_a_clear_error():
    datamodule = NoisyClassDataModule()
    del datamodule.num_classes
    with pytest.raises(ValueError, match="number of classes"):
        fit(tiny_vicreg(), datamodule, OnlineLinearProbe(), enable_checkpointing=False)


def test_unlabelled_batches_are_a_clear_error():
    probe = OnlineLinearProbe(num_classes=3)
    images = torch.randn(4, 1, 16, 16)
    with pytest.raises(ValueError, match="labels"):
        probe.on_train_batch_end(None, tiny_vicreg(), {"features": torch.randn(4, 8)}, images, 0)


def test_dict_features_get_one_head_each_and_bad_keys_fail():
    probe = OnlineLinearProbe(num_classes=3, feature_keys=["block1", "block2"])
    features = {"block1": torch.randn(8, 5), "block2": torch.randn(8, 7), "block3": torch.randn(8, 2)}
    labels = torch.arange(8) % 3
    probe._labelled({"features": features}, (None, labels), torch.device("cpu"))
    assert sorted(probe.heads) == ["block1", "block2"]
    assert probe.heads["block2"][1].in_features == 7
    with pytest.raises(KeyError, match="block2"):
        OnlineLinearProbe(num_classes=3, feature_keys=["block2"])._labelled(
            {"features": {"block1": features["block1"]}}, (None, labels), torch.device("cpu")
        )
