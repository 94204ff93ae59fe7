"""NaN reaching the model: a non-finite loss stops training with the weights and BatchNorm running
statistics as they were before the batch, so the checkpoint ``OnExceptionCheckpoint`` writes on the
way out is finite (read on the host before the backward pass, or, with a fused optimizer, recorded
on the device and the updates skipped there); a checkpoint with non-finite weights is refused; NaN validation features make the
online probe and kNN warn once, with the count."""

from __future__ import annotations

import functools

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import OnExceptionCheckpoint

from ssl_lightning.callbacks import OnlineKNN, OnlineLinearProbe
from tests.synthetic import NoisyClassDataModule
from tests.test_linear_probe import fit as fit_with_callback
from tests.test_linear_probe import tiny_vicreg
from tests.tiny_methods import fit, quiet_trainer, tiny, tiny_data


class NaNImages(Callback):
    """Turns the first ``rows`` images of training batch ``train_batch`` (every view) and of every
    validation batch into NaN; keeps the model's buffers as they were before the NaN batch."""

    def __init__(self, train_batch: int | None = None, val_rows: int = 0) -> None:
        self.train_batch, self.val_rows = train_batch, val_rows
        self.buffers_before: dict[str, torch.Tensor] = {}
        self.state_before: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.train_batch:
            self.buffers_before = {name: b.clone() for name, b in pl_module.named_buffers()}
            self.state_before = {name: t.clone() for name, t in pl_module.state_dict().items()}
            for view in batch[0]:
                view.fill_(float("nan"))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        batch[0][: self.val_rows] = float("nan")


def non_finite(tree, path="") -> list[str]:
    """The paths of the floating-point tensors of a nested checkpoint that hold NaN or inf."""
    if isinstance(tree, torch.Tensor):
        return [path] if tree.is_floating_point() and not tree.isfinite().all() else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return [bad for key, value in items for bad in non_finite(value, f"{path}/{key}")]


def test_a_nan_loss_leaves_batchnorm_statistics_and_the_exception_checkpoint_finite(tmp_path):
    model, nan_batch = tiny("VICReg"), NaNImages(train_batch=2)
    callbacks = [nan_batch, OnExceptionCheckpoint(tmp_path)]
    trainer = quiet_trainer(callbacks, max_steps=5, enable_checkpointing=True, default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError, match=r"nan at global step 2 .*as they were before this batch"):
        trainer.fit(model, tiny_data("VICReg"))

    buffers = dict(model.named_buffers())
    assert sum("running_" in name for name in buffers) == 42  # the ResNet-18's and the projector's BatchNorms
    assert buffers.keys() == nan_batch.buffers_before.keys()
    for name, before in nan_batch.buffers_before.items():
        torch.testing.assert_close(buffers[name], before, rtol=0, atol=0, msg=name)
    checkpoint = torch.load(tmp_path / "on_exception.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2 and non_finite(checkpoint) == []


FUSED_ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3, fused=True)


@pytest.mark.parametrize("name", ["VICReg", "IJEPA"])
def test_with_a_fused_optimizer_a_nan_loss_stops_without_a_host_read_and_no_update_reaches_the_model(tmp_path, name):
    """The guard's device path: the backward pass of the NaN batch runs (its gradients are NaN), the
    fused AdamW skips the update on the device, the EMA teacher (I-JEPA) holds, the BatchNorm statistics
    (VICReg) are put back, and the error names the failing step."""
    model, nan_batch = tiny(name, optimizer=FUSED_ADAMW), NaNImages(train_batch=2)
    callbacks = [nan_batch, OnExceptionCheckpoint(tmp_path)]
    trainer = quiet_trainer(callbacks, max_steps=5, enable_checkpointing=True, default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError, match=r"nan at global step 2 and training stopped there"):
        trainer.fit(model, tiny_data(name))

    assert model._skip_on_device
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(g.isnan().any() for g in gradients)  # the backward pass ran on the NaN loss
    state = model.state_dict()
    assert state.keys() == nan_batch.state_before.keys()
    for key, before in nan_batch.state_before.items():
        torch.testing.assert_close(state[key], before, rtol=0, atol=0, msg=key)
    steps = {int(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert steps == {2}  # two updates applied, the third skipped
    checkpoint = torch.load(tmp_path / "on_exception.ckpt", weights_only=False)
    assert non_finite(checkpoint) == []


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    model = tiny("VICReg")
    trainer = fit(model, "VICReg", steps=1)
    with torch.no_grad():
        model.backbone.conv1.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(
        FloatingPointError, match=r"not writing a checkpoint at global step 1: NaN or inf in 1 of its tensors"
    ):
        trainer.save_checkpoint(tmp_path / "diverged.ckpt")
    assert not (tmp_path / "diverged.ckpt").exists()


@pytest.mark.parametrize("callback", [OnlineLinearProbe, OnlineKNN])
def test_nan_validation_images_warn_once_with_the_count(callback):
    """5 NaN images in each of the 2 validation batches of 16; 2 epochs and a sanity check: one warning."""
    with pytest.warns(UserWarning) as record:
        fit_with_callback(
            tiny_vicreg(), NoisyClassDataModule(), callback(), max_epochs=2, callbacks=[NaNImages(val_rows=5)]
        )
    warnings = [str(w.message) for w in record if "NaN or infinite features" in str(w.message)]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{callback.__name__}: 10 of the 32 validation samples it scored this epoch have")
    assert "Check the validation images" in warnings[0] and "the encoder" in warnings[0]
