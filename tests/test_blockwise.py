"""BlockwiseBarlowTwins: the stop-gradient between blocks, noise injection, heads, per-block learning
rates, per-block probes in a real fit, and clear errors."""

from __future__ import annotations

import functools

import pytest
import torch
from lightning.pytorch import Trainer

from ssl_lightning.callbacks import OnlineLinearProbe
from ssl_lightning.methods import BarlowTwins, BlockwiseBarlowTwins
from ssl_lightning.methods.blockwise import BLOCK_NAMES
from ssl_lightning.nn import add_feature_noise, stage_head
from ssl_lightning.nn.blockwise import GlobalAveragePool, standard_normal_like
from tests.synthetic import NoisyClassDataModule

NARROW = {"channels": (8, 16, 32, 64), "stem_width": 8}


def tiny_blockwise(**kwargs) -> BlockwiseBarlowTwins:
    torch.manual_seed(0)
    options = {
        "backbone": "resnet18",
        "backbone_kwargs": NARROW,
        "head_dim": 16,
        "projector_dims": [32, 32],
        "in_chans": 1,
        "image_size": 16,
        "optimizer": functools.partial(torch.optim.AdamW, lr=1e-3),
        "warmup_epochs": 0,
    }
    return BlockwiseBarlowTwins(**{**options, **kwargs})


def grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("noise_std", [0.0, 0.25])
def test_stage_k_loss_gives_zero_gradient_to_earlier_stages(noise_std):
    model = tiny_blockwise(noise_std=noise_std)
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 1, 16, 16, generator=gen) for _ in range(2)]
    for k in range(4):
        model.zero_grad(set_to_none=True)
        first, second = model.block_representations(views[0]), model.block_representations(views[1])
        loss, _ = model.loss_fn(model.projectors[k](first[k]), model.projectors[k](second[k]))
        loss.backward()
        norms = [grad_norm(stage) for stage in model.stages]
        assert all(norm == 0 for norm in norms[:k]), (k, norms)
        assert norms[k] > 0 and grad_norm(model.heads[k]) > 0
        assert all(grad_norm(model.heads[j]) == 0 for j in range(4) if j != k)


def test_noise_injection_formula_and_modes():
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    for mode, std in (("all", x.std()), ("hw", x.std(dim=(2, 3), keepdim=True))):
        torch.manual_seed(7)
        noised = add_feature_noise(x, 0.25, mode)
        torch.manual_seed(7)
        torch.testing.assert_close(noised, x + 0.25 * std * torch.randn_like(x))
    with pytest.raises(ValueError, match="'all' or 'hw'"):
        add_feature_noise(x, 0.25, "c")
    with pytest.raises(ValueError, match="use 'all'"):
        add_feature_noise(torch.randn(4, 3, 1, 1), 0.25, "hw")


def test_noise_only_in_training():
    model = tiny_blockwise(noise_std=0.25)
    images = torch.randn(8, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(images).values(), model(images).values()))
    model.train()
    torch.manual_seed(1)
    noised = model.block_representations(images)
    torch.manual_seed(2)
    assert not torch.equal(noised[3], model.block_representations(images)[3])


def test_stage_head_shapes_and_kernel_check():
    head = stage_head(8, out_dim=32, kernel_size=3)
    assert head(torch.randn(2, 8, 5, 5)).shape == (2, 32)
    assert head[0].kernel_size == (3, 3) and head[0].bias is None
    with pytest.raises(ValueError, match="odd"):
        stage_head(8, kernel_size=2)


def test_fit_logs_every_block_and_probe_with_per_block_lr(tmp_path):
    probe = OnlineLinearProbe(lr=1e-2)
    model = tiny_blockwise(
        block_lr_scales=[1.0, 0.5, 0.25, 0.125], optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    )
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        callbacks=[probe],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, NoisyClassDataModule(train_size=32))
    metrics = trainer.callback_metrics
    for name in BLOCK_NAMES:
        assert f"train/loss_{name}" in metrics and f"probe/{name}/val_acc" in metrics
    assert metrics["train/loss"] == pytest.approx(sum(float(metrics[f"train/loss_{n}"]) for n in BLOCK_NAMES))
    groups = trainer.optimizers[0].param_groups
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()) and len(set(grouped)) == len(grouped)


def test_probe_keys_must_match_the_blocks():
    probe = OnlineLinearProbe(feature_keys=["block1", "block5"])
    trainer = Trainer(max_steps=1, accelerator="cpu", callbacks=[probe], logger=False, enable_progress_bar=False)
    with pytest.raises(KeyError, match="block5"):
        trainer.fit(tiny_blockwise(), NoisyClassDataModule(train_size=16))


def test_state_dict_is_the_plain_resnets_and_features_are_a_dict():
    model = tiny_blockwise()
    backbone_keys = {k.removeprefix("backbone.") for k in model.state_dict() if k.startswith("backbone.")}
    assert backbone_keys == set(model.backbone.state_dict())
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "heads", "projectors"}
    out = model.validation_step((torch.randn(4, 1, 16, 16), torch.zeros(4)), 0)
    assert list(out["features"]) == list(BLOCK_NAMES) and out["features"]["block4"].shape == (4, 16)


def test_clear_errors():
    convnet = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="Blockwise training supports timm ResNets"):
        tiny_blockwise(backbone=convnet, backbone_kwargs=None)
    with pytest.raises(ValueError, match="one factor per block"):
        tiny_blockwise(block_lr_scales=[1.0, 1.0])
    with pytest.raises(ValueError, match="2 augmented views"):
        tiny_blockwise().training_step(([torch.randn(4, 1, 16, 16)], torch.zeros(4)), 0)


def test_barlow_twins_projector_has_no_biases():
    model = BarlowTwins("resnet18", projector_dims=[16, 16], in_chans=1, image_size=16, backbone_kwargs=NARROW)
    linears = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and all(m.bias is None for m in linears)


def test_stages_run_the_sync_batchnorm_the_trainer_swaps_in():
    """``Trainer(sync_batchnorm=True)`` replaces every BatchNorm in the module tree; the stages must
    run the replacements, the stem's ``bn1`` included (it sits in stage 1's Sequential)."""
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(tiny_blockwise())
    stage_norms = [
        m for stage in model.stages for m in stage.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert stage_norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in stage_norms)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_global_average_pool_is_the_mean_over_positions_with_its_gradient(memory_format):
    x = torch.randn(3, 5, 4, 6).to(memory_format=memory_format).requires_grad_()
    upstream = torch.randn(3, 5)
    pooled = GlobalAveragePool()(x)
    (grad,) = torch.autograd.grad(pooled, x, upstream)
    expected = x.mean(dim=(2, 3))
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_standard_normal_like_keeps_shape_and_memory_format_and_is_standard_normal(memory_format):
    x = torch.empty(16, 8, 16, 16).to(memory_format=memory_format)
    torch.manual_seed(0)
    noise = standard_normal_like(x)
    assert noise.shape == x.shape and noise.is_contiguous(memory_format=memory_format)
    assert abs(noise.mean().item()) < 0.025 and abs(noise.std().item() - 1) < 0.02  # 32768 draws: σ/√n ≈ 0.0055
