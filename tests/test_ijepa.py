"""I-JEPA method: the step against an independent computation, the EMA teacher, the optimizer and
its schedules, masks per step, bad input, the mask pictures, and two-process gradients."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_lightning.callbacks import MaskVisualization, mask_overlay
from ssl_lightning.losses import JEPALoss, jepa_loss
from ssl_lightning.nn import MaskedViTEncoder, cosine_ramp, momentum_at
from tests.jepa_helpers import (
    batch_and_masks,
    tiny_method,
)
from tests.synthetic import NoisyClassDataModule

# --- loss ------------------------------------------------------------------------------------


def test_jepa_loss_values():
    predictions = torch.tensor([[0.0, 3.0], [0.5, -1.0]])
    targets = torch.zeros(2, 2)
    # smooth-L1 (β = 1): 0.5·x² where |x| < 1, |x| − 0.5 elsewhere → (0 + 2.5 + 0.125 + 0.5) / 4
    assert jepa_loss(predictions, targets).item() == pytest.approx(3.125 / 4)
    assert jepa_loss(predictions, targets, "mse").item() == pytest.approx((9 + 0.25 + 1) / 4)
    with pytest.raises(ValueError, match="equal shapes"):
        jepa_loss(predictions, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Unknown JEPA loss"):
        JEPALoss("l1")


# --- one step ----------------------------------------------------------------------------------


def test_prediction_loss_matches_per_image_per_block_computation():
    model = tiny_method(loss="mse")
    images, context_idx, target_idx = batch_and_masks(model, batch_size=3)
    loss, features = model.prediction_loss(images, context_idx, target_idx)
    squared_errors = []
    for b in range(3):
        tokens = model.target_encoder(images[b : b + 1])[0]
        normalized = (tokens - tokens.mean(-1, keepdim=True)) / torch.sqrt(
            tokens.var(-1, unbiased=False, keepdim=True) + 1e-5
        )
        context = model.context_encoder(images[b : b + 1], context_idx[b : b + 1])
        for block in target_idx:
            prediction = model.predictor(context, context_idx[b : b + 1], [block[b : b + 1]])[0]
            squared_errors.append((prediction - normalized[block[b]]).square())
    torch.testing.assert_close(loss, torch.cat(squared_errors).mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features, model.target_encoder(images).mean(1))


def test_training_step_outputs_and_views():
    model = tiny_method()
    images = torch.randn(4, 1, 32, 32)
    out = model.training_step(([images, torch.randn_like(images)], torch.zeros(4)), 0)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["features"].shape == (4, 64) and not out["features"].requires_grad
    torch.testing.assert_close(out["features"], model(images))  # first view, target encoder
    assert model.training_step((images, torch.zeros(4)), 0)["loss"].isfinite()  # a plain tensor works too
    val = model.validation_step((images, torch.zeros(4)), 0)["features"]
    torch.testing.assert_close(val, model.target_encoder(images).mean(1))
    with pytest.raises(ValueError, match="list of views"):
        model.training_step(([], torch.zeros(4)), 0)


def test_masks_drawn_per_step_and_per_image():
    model = tiny_method()
    images = torch.randn(8, 1, 32, 32)
    model.training_step((images, torch.zeros(8)), 0)
    first_context, first_targets = model.last_masks
    assert len(first_targets) == 4 and first_context.device == images.device
    assert len({tuple(row.tolist()) for row in first_targets[0]}) > 1  # images get different blocks
    model.training_step((images, torch.zeros(8)), 1)
    assert not torch.equal(model.last_masks[1][0], first_targets[0])  # and new masks every step


def test_target_encoder_stays_in_eval_mode():
    model = tiny_method(backbone_kwargs={"drop_path_rate": 0.5}).train()
    assert model.context_encoder.training and model.predictor.training
    assert not model.target_encoder.training
    images = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model(images), model(images))


# --- training: EMA teacher, optimizer groups, schedules --------------------------------------


class StepRecorder(Callback):
    """Checks the EMA update against its formula at every step and records the schedules."""

    def __init__(self) -> None:
        self.ema_errors, self.teacher_changes, self.weight_decays, self.momenta = [], [], [], []
        self.teacher_grads = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = [p.detach().clone() for p in pl_module.target_encoder.parameters()]
        self.step = trainer.global_step

    def on_after_backward(self, trainer, pl_module):
        self.teacher_grads += [p.grad for p in pl_module.target_encoder.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        total = trainer.estimated_stepping_batches
        m = momentum_at(self.step, total, *pl_module.ema_momentum)
        self.momenta.append(m)
        teacher, student = pl_module.target_encoder.parameters(), pl_module.context_encoder.parameters()
        for old, new, s in zip(self.before, teacher, student):
            self.ema_errors.append((new - (m * old + (1 - m) * s.detach())).abs().max().item())
            self.teacher_changes.append((new - old).abs().max().item())
        self.weight_decays.append(trainer.optimizers[0].param_groups[0]["weight_decay"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = tiny_method(ema_momentum=(0.5, 0.9), weight_decay=(0.04, 0.4))
    recorder = StepRecorder()
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=[recorder, MaskVisualization(every_n_steps=5)],
        logger=TensorBoardLogger(tmp_path_factory.mktemp("logs")),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, NoisyClassDataModule(num_views=1, image_size=32, train_size=48, batch_size=8))
    return model, trainer, recorder


def test_ema_teacher_changes_only_by_scheduled_lerp_and_gets_no_gradient(trained):
    model, trainer, recorder = trained
    assert trainer.global_step == 12
    assert max(recorder.ema_errors) < 1e-6
    assert max(recorder.teacher_changes) > 1e-4  # the teacher did move (errors are 100× smaller)
    assert recorder.momenta[0] == pytest.approx(0.5) and recorder.momenta[-1] == pytest.approx(0.5 + 0.4 * 11 / 12)
    assert recorder.teacher_grads and all(g is None for g in recorder.teacher_grads)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())


def test_target_encoder_not_in_any_optimizer_group(trained):
    model, trainer, _ = trained
    in_optimizer = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    ids = {id(p) for p in in_optimizer}
    assert len(ids) == len(in_optimizer)  # no parameter twice
    assert not ids & {id(p) for p in model.target_encoder.parameters()}
    trainable = list(model.context_encoder.parameters()) + list(model.predictor.parameters())
    assert ids == {id(p) for p in trainable}
    decayed, no_decay = trainer.optimizers[0].param_groups
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_weight_decay_groups_follow_the_official_rule(trained):
    """facebookresearch/ijepa decays every parameter except those named ``bias`` or of one dimension,
    so its (1, 1, D) mask token is decayed; ours must split the parameters the same way."""
    model, trainer, _ = trained
    named = [*model.context_encoder.named_parameters(), *model.predictor.named_parameters()]
    official_no_decay = {id(p) for name, p in named if "bias" in name or p.ndim == 1}
    decayed, no_decay = trainer.optimizers[0].param_groups
    assert {id(p) for p in no_decay["params"]} == official_no_decay
    assert {id(p) for p in decayed["params"]} == {id(p) for _, p in named} - official_no_decay
    assert id(model.predictor.mask_token) in {id(p) for p in decayed["params"]}


def test_weight_decay_follows_cosine_ramp_per_step(trained):
    _, _, recorder = trained
    expected = [cosine_ramp(step, 12, 0.04, 0.4) for step in range(12)]
    assert recorder.weight_decays == pytest.approx(expected)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_size": 30}, ValueError, "not divisible by the patch size"),
        ({"target_scale": (0.0, 0.2)}, ValueError, "target_scale must be a range"),
        ({"context_scale": (0.9, 1.5)}, ValueError, "context_scale must be a range"),
        ({"min_keep": 10}, ValueError, "never be accepted"),
        ({"image_size": 4}, ValueError, "grid_size must be two integers"),
        ({"backbone": "resnet18"}, ValueError, "not a ViT"),
        ({"backbone": torch.nn.Conv2d(1, 8, 3)}, TypeError, "I-JEPA needs a ViT encoder"),
        ({"loss": "l2"}, ValueError, "Unknown JEPA loss"),
    ],
)
def test_bad_input_gives_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_method(**kwargs)


def test_accepts_a_masked_vit_encoder_of_matching_size():
    encoder = MaskedViTEncoder(img_size=32, patch_size=4, in_chans=1, embed_dim=64, depth=1, num_heads=4)
    assert tiny_method(backbone=encoder).context_encoder is encoder
    with pytest.raises(ValueError, match="built for"):
        tiny_method(backbone=encoder, image_size=64)


# --- mask pictures ---------------------------------------------------------------------------


def test_mask_overlay_colours_context_targets_and_the_rest():
    images = torch.full((1, 1, 8, 8), 0.0)
    images[..., 0, 0] = 1.0  # one bright pixel makes the rescaled image 0 everywhere else
    images[..., 4:, 4:] = 1.0
    context_idx = torch.tensor([[0, 3]])  # 2×2 grid of 4×4-pixel patches: top-left, bottom-right
    target_idx = [torch.tensor([[1]])]  # top-right
    picture = mask_overlay(images, context_idx, target_idx, (2, 2), opacity=0.5)[0]
    torch.testing.assert_close(picture[:, 6, 6], torch.ones(3))  # context: the image, unchanged
    torch.testing.assert_close(picture[:, 6, 1], torch.zeros(3))  # bottom-left: in no mask, dimmed black
    torch.testing.assert_close(picture[:, 1, 6], 0.5 * torch.tensor([1.0, 0.2, 0.2]))  # target 0, tinted red
    with pytest.raises(ValueError, match="does not divide"):
        mask_overlay(images, context_idx, target_idx, (3, 3))


def test_mask_grid_needs_no_forward_pass():
    model = tiny_method()
    batch = ([torch.randn(8, 1, 32, 32)], torch.zeros(8))
    callback = MaskVisualization(max_images=4)
    with pytest.raises(ValueError, match="last_masks"):
        callback.mask_grid(model, batch)
    model.training_step(batch, 0)
    calls = []
    for module in (model.context_encoder, model.target_encoder, model.predictor):
        module.register_forward_hook(lambda *args: calls.append(1))
    grid = callback.mask_grid(model, batch)
    assert grid.shape == (3, 2 * 96 + 3 * 2, 2 * 96 + 3 * 2) and not calls  # 2×2 images of 96 px, padding 2


def test_mask_visualization_logs_to_tensorboard_every_n_steps(trained):
    _, trainer, _ = trained
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("masks")] == [1, 6, 11]
