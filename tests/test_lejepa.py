"""LeJEPA: multi-crop views, one backbone pass per view size, the probe features, the slice
directions, and every bad input of SPEC.md §9 refused with the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ssl_lightning import LeJEPA
from ssl_lightning.data import FashionMNIST, MultiCropViews
from ssl_lightning.errors import ConfigurationError
from tests.distributed_utils import run_lightning_distributed
from tests.fake_data import write_fake_fashion_mnist
from tests.tiny_methods import JOINT, quiet_trainer, tiny_data

TINY_VIT = {
    "backbone": "vit_tiny_patch16_224",
    "backbone_kwargs": {"img_size": 28, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "in_chans": 1,
    "image_size": 28,
    "projector_dims": [64, 64, 16],
    "num_slices": 64,
    "warmup_epochs": 0,
}


def tiny_resnet(**kwargs) -> LeJEPA:
    return LeJEPA(**{**JOINT, "projector_dims": [32, 32, 16], "num_slices": 64, **kwargs})


def multi_crop_data(tmp_path, batch_size: int = 8, **views) -> FashionMNIST:
    write_fake_fashion_mnist(tmp_path, 64, 32)
    recipe = MultiCropViews(**{"num_global": 2, "num_local": 3, **views})
    return FashionMNIST(data_dir=str(tmp_path), batch_size=batch_size, num_workers=0, views=recipe)


def test_multi_crop_views_come_globals_first_at_their_sizes():
    transform = MultiCropViews(num_global=3, num_local=2).train_transform(28, 1, [0.5], [0.5])
    views = transform(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8))
    assert [tuple(v.shape) for v in views] == [(1, 28, 28)] * 3 + [(1, 12, 12)] * 2  # 12 = round(28 · 98/224)
    views = MultiCropViews(num_local=1, global_size=24, local_size=8).train_transform(96, 3, [0.5] * 3, [0.5] * 3)
    assert [v.shape[-1] for v in views(torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8))] == [24, 24, 8]


def photometric_policy(pipeline) -> list[tuple]:
    """The pipeline's steps after the crop: each operation's name, probability and strengths (the blur
    kernel, which follows the view's size, left out)."""
    policy = []
    for step in pipeline.transforms[1:]:
        inner = step.transforms[0] if hasattr(step, "p") and hasattr(step, "transforms") else step
        settings = {
            k: v for k, v in vars(inner).items() if not k.startswith("_") and k not in ("kernel_size", "training")
        }
        policy.append((type(inner).__name__, getattr(step, "p", 1.0), repr(settings)))
    return policy


def test_multi_crop_views_use_one_photometric_policy():
    pipelines = MultiCropViews(num_local=2).view_pipelines(224, 3)
    policies = [photometric_policy(pipeline) for pipeline in pipelines]
    assert all(policy == policies[0] for policy in policies)
    names = [name for name, *_ in policies[0]]
    assert names == ["RandomHorizontalFlip", "ColorJitter", "Grayscale", "GaussianBlur", "RandomSolarize"]
    assert [p for _, p, _ in policies[0]] == [0.5, 0.8, 0.2, 0.5, 0.2]


def test_vit_reads_local_crops_at_their_size_in_one_pass_per_size(tmp_path):
    model = LeJEPA(**TINY_VIT)
    seen = []
    model.backbone.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, multi_crop_data(tmp_path))
    assert seen == [(16, 1, 28, 28), (24, 1, 12, 12)] * 2  # 2 global and 3 local views of 8 images
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(metrics[f"train/{name}"]) for name in ("loss", "sigreg", "prediction"))


def test_only_the_global_views_update_the_batchnorm_running_statistics():
    torch.manual_seed(0)
    model = tiny_resnet()
    reference = copy.deepcopy(model.backbone)
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 1, 16, 16, generator=generator) for _ in range(2)]
    views += [torch.randn(4, 1, 8, 8, generator=generator) for _ in range(3)]
    model.run_seed = 0
    model.training_step((views, torch.zeros(4)), 0)
    reference(torch.cat(views[:2]))  # one training-mode pass of the global views alone
    for ours, expected in zip(model.backbone.modules(), reference.modules()):
        if isinstance(ours, torch.nn.BatchNorm2d):
            torch.testing.assert_close(ours.running_mean, expected.running_mean)
            torch.testing.assert_close(ours.running_var, expected.running_var)
            assert ours.momentum == expected.momentum  # restored after the local pass


def test_probe_features_are_the_first_global_views_embedding():
    model = LeJEPA(**TINY_VIT).eval()  # a ViT: no batch statistics, so the pass alone gives the same features
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 1, 28, 28, generator=generator) for _ in range(2)]
    views += [torch.randn(4, 1, 12, 12, generator=generator) for _ in range(2)]
    model.run_seed = 0
    out = model.training_step((views, torch.zeros(4)), 0)
    torch.testing.assert_close(out["features"], model.backbone(views[0]), rtol=1e-5, atol=1e-5)
    assert not out["features"].requires_grad and out["loss"].requires_grad


def test_global_views_are_the_leading_views_of_the_first_size():
    model = tiny_resnet()
    same = [torch.zeros(2, 1, 16, 16)] * 4
    assert model.global_view_count(same) == 4  # one size: all global (the paper's CNN recipe)
    assert model.global_view_count(same[:2] + [torch.zeros(2, 1, 8, 8)] * 3) == 2
    assert tiny_resnet(num_global_views=2).global_view_count(same) == 2


def directions_of_two_steps(tmp_path) -> list[torch.Tensor]:
    torch.manual_seed(0)  # decides the run seed
    model = tiny_resnet(in_chans=1, image_size=28)
    seen = []
    model.loss_fn.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    quiet_trainer(max_steps=2).fit(model, multi_crop_data(tmp_path, num_local=0))
    return seen


def test_directions_are_redrawn_every_step_and_repeat_with_the_run(tmp_path):
    first, second = directions_of_two_steps(tmp_path)
    assert first.shape == (16, 64) and not torch.allclose(first, second)
    torch.testing.assert_close(first.norm(dim=0), torch.ones(64))
    assert all(map(torch.equal, directions_of_two_steps(tmp_path), (first, second)))


def record_directions_under_ddp(rank: int, world_size: int, out_dir: str) -> None:
    """Two DDP steps of a tiny LeJEPA, each rank's RNG seeded differently; every rank saves the
    directions its loss received."""
    torch.manual_seed(rank)  # only the broadcast run seed can make the ranks' directions agree
    model = tiny_resnet()
    seen = []
    model.loss_fn.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    quiet_trainer(max_steps=2, devices=2, strategy="ddp").fit(model, tiny_data("LeJEPA", batch_size=4))
    torch.save(seen, Path(out_dir) / f"directions_{rank}.pt")


@pytest.mark.distributed
def test_directions_are_the_same_on_every_rank(tmp_path):
    run_lightning_distributed(record_directions_under_ddp, 2, str(tmp_path))
    rank0, rank1 = (torch.load(tmp_path / f"directions_{rank}.pt") for rank in (0, 1))
    assert len(rank0) == len(rank1) == 2 and all(map(torch.equal, rank0, rank1))
    assert not torch.allclose(rank0[0], rank0[1])


def test_trains_a_resnet_with_every_view_global(tmp_path):
    trainer = quiet_trainer(max_steps=2)
    model = tiny_resnet(in_chans=1, image_size=28)
    trainer.fit(model, multi_crop_data(tmp_path, num_global=2, num_local=0))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_bad_views_and_sizes_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigurationError, match="at least 2 global views"):
        tiny_resnet(num_global_views=1)
    with pytest.raises(ConfigurationError, match="at least 2 global views"):
        MultiCropViews(num_global=1)
    one_global = [torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)]
    with pytest.raises(ConfigurationError, match="MultiCropViews"):
        tiny_resnet().global_view_count(one_global)
    with pytest.raises(ConfigurationError, match="patch size 4 does not divide"):
        quiet_trainer(max_steps=1).fit(LeJEPA(**TINY_VIT), multi_crop_data(tmp_path, local_size=10))
    with pytest.raises(ConfigurationError, match="odd number of knots"):
        tiny_resnet(knots=16)
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        tiny_resnet(sigreg_weight=2.0)
    with pytest.raises(ConfigurationError, match="slice direction"):
        tiny_resnet(num_slices=0)


def test_a_global_batch_of_one_is_refused_before_the_first_step(tmp_path):
    model = tiny_resnet(in_chans=1, image_size=28)
    with pytest.raises(ConfigurationError, match="too small for SIGReg"):
        quiet_trainer(max_steps=1).fit(model, multi_crop_data(tmp_path, batch_size=1, num_local=0))
