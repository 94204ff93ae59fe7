"""Batched views (#16): the views made on the training device for a whole batch follow the same
recipe as the per-sample torchvision pipelines, draw for draw in distribution; the DataModule's
batched mode trains, resumes exactly and gives every process its own stream.

Distributions are compared with two-sample tests against torchvision's own parameter sampling
(``make_params``) or against what torchvision's pipeline does to images made to show one operation.
"""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from ssl_lightning.data import FashionMNIST, JointEmbeddingViews, MultiCropViews, StoPViews
from ssl_lightning.data.batched import BatchedViews, crop_boxes, jitter_factors
from ssl_lightning.data.transforms import ViewSpec, per_sample_pipeline
from tests.fake_data import write_fake_fashion_mnist
from tests.test_resume import assert_same_tree
from tests.tiny_methods import quiet_trainer, tiny

DRAWS = 3000
P_MIN = 1e-3  # two-sample KS / z-test p-value below which the distributions differ


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("height", "width", "scale"), [(96, 96, (0.08, 1.0)), (40, 200, (0.3, 1.0))])
def test_crop_area_and_aspect_follow_torchvision(height, width, scale):
    """The elongated image makes many tries fail, so torchvision's fallback crop is drawn often."""
    ratio = (3 / 4, 4 / 3)
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    image = torch.zeros(1, height, width)
    theirs = torch.tensor(
        [[p["height"], p["width"], p["top"], p["left"]] for p in (crop.make_params([image]) for _ in range(DRAWS))]
    )
    boxes = crop_boxes(DRAWS, height, width, scale, ratio, generator())
    ours = torch.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 1], boxes[:, 0]], dim=1)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    area = lambda p: (p[:, 0] * p[:, 1] / (height * width)).numpy()
    aspect = lambda p: torch.log(p[:, 1] / p[:, 0]).numpy()
    centre = lambda p: ((p[:, 3] + p[:, 1] / 2) / width).numpy()
    for statistic in (area, aspect, centre):
        assert ks_2samp(statistic(ours), statistic(theirs)).pvalue > P_MIN, statistic


def test_jitter_factors_follow_torchvision():
    spec = JointEmbeddingViews().view_specs(96, 3)[0]
    torch.manual_seed(0)
    jitter = v2.ColorJitter(*spec.jitter)
    image = torch.zeros(3, 8, 8)
    theirs = {name: [] for name in ("brightness", "contrast", "saturation", "hue")}
    for _ in range(DRAWS):
        params = jitter.make_params([image]) if torch.rand(()) < spec.jitter_prob else None
        for name, values in theirs.items():
            identity = 0.0 if name == "hue" else 1.0
            values.append(identity if params is None else float(params[f"{name}_factor"]))
    ours = jitter_factors(spec, DRAWS, generator())
    for name, values in theirs.items():
        assert ks_2samp(ours[name].numpy(), values).pvalue > P_MIN, name


def rate(flags: torch.Tensor) -> tuple[float, int]:
    return float(flags.float().mean()), len(flags)


def assert_same_rate(ours: torch.Tensor, theirs: torch.Tensor, expected: float) -> None:
    """Two proportions equal (z-test) and both near the configured probability."""
    (p1, n1), (p2, n2) = rate(ours), rate(theirs)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = abs(p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert math.erfc(z / math.sqrt(2)) > P_MIN, (p1, p2)
    assert abs(p1 - expected) < 4.5 * math.sqrt(expected * (1 - expected) / n1), (p1, expected)


def both_ways(spec: ViewSpec, image: torch.Tensor, draws: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` views of one uint8 image by torchvision's pipeline and by the batched one, in [0, 1];
    the batched ones rounded to uint8 levels, as torchvision's output is."""
    torch.manual_seed(0)
    pipeline = per_sample_pipeline(spec, image.shape[0])
    theirs = torch.stack([pipeline(image) for _ in range(draws)]).float() / 255
    (ours,) = BatchedViews([spec], (0.0,) * image.shape[0], (1.0,) * image.shape[0])(
        image.expand(draws, *image.shape), generator()
    )
    return (ours * 255).round() / 255, theirs


WHOLE = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}  # the crop keeps the whole image


def test_flip_rate():
    ramp = (torch.linspace(0, 255, 16).round().to(torch.uint8)).expand(3, 16, 16).contiguous()
    ours, theirs = both_ways(ViewSpec(16, **WHOLE, hflip_prob=0.5), ramp)
    flipped = lambda views: views[:, 0, 0, 0] > views[:, 0, 0, -1]
    assert_same_rate(flipped(ours), flipped(theirs), 0.5)


def test_grayscale_rate():
    colour = torch.tensor([200, 40, 90], dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16).contiguous()
    ours, theirs = both_ways(ViewSpec(16, **WHOLE, grayscale_prob=0.2), colour)
    gray = lambda views: (views[:, 0] - views[:, 1]).abs().amax(dim=(1, 2)) < 0.01
    assert_same_rate(gray(ours), gray(theirs), 0.2)


def test_solarize_rate():
    bright = torch.full((1, 16, 16), 210, dtype=torch.uint8)
    ours, theirs = both_ways(ViewSpec(16, **WHOLE, solarize_prob=0.2), bright)
    dark = lambda views: views.mean(dim=(1, 2, 3)) < 0.5
    assert_same_rate(dark(ours), dark(theirs), 0.2)


def test_blur_rate_and_strength():
    checker = ((torch.arange(32).view(-1, 1) + torch.arange(32)) % 2 * 255).to(torch.uint8).expand(1, 32, 32)
    spec = ViewSpec(32, **WHOLE, blur_prob=0.5, blur_sigma=(0.1, 2.0))
    ours, theirs = both_ways(spec, checker.contiguous())
    contrast = lambda views: views[:, 0, 8:24, 8:24].std(dim=(1, 2))
    blurred = lambda views: contrast(views) < 0.45  # the unblurred checkerboard's std is 0.5
    assert_same_rate(blurred(ours), blurred(theirs), 0.5)
    # Among blurred views, how much contrast is left depends on sigma: the same spread both ways.
    assert ks_2samp(contrast(ours)[blurred(ours)].numpy(), contrast(theirs)[blurred(theirs)].numpy()).pvalue > P_MIN


def test_brightness_and_contrast_follow_torchvision_on_one_channel():
    halves = torch.cat([torch.full((1, 16, 8), 64), torch.full((1, 16, 8), 192)], dim=2).to(torch.uint8)
    spec = ViewSpec(16, **WHOLE, jitter_prob=0.8, jitter=(0.4, 0.4, 0.0, 0.0))
    ours, theirs = both_ways(spec, halves, draws=2000)
    for statistic in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3))):
        assert ks_2samp(statistic(ours).numpy(), statistic(theirs).numpy()).pvalue > P_MIN


@pytest.mark.parametrize("recipe", [JointEmbeddingViews(), StoPViews(blur_prob=0.5), MultiCropViews(num_local=2)])
def test_every_recipe_gives_normalised_views_of_its_sizes(recipe):
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=generator())
    specs = recipe.view_specs(64, 3)
    views = BatchedViews(specs, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(images, generator())
    assert [tuple(v.shape) for v in views] == [(6, 3, spec.size, spec.size) for spec in specs]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() and v.min() >= -2 and v.max() <= 2 for v in views)


def batched_fashion(root, num_workers: int = 0) -> FashionMNIST:
    return FashionMNIST(
        data_dir=str(root), batch_size=8, num_workers=num_workers, image_size=16, download=False, batched_views=True
    )


def test_batched_mode_trains_and_resumes_exactly(tmp_path):
    """2N steps equal N steps + resume from the step-N checkpoint, views included (like tests/test_resume.py)."""
    write_fake_fashion_mnist(tmp_path, num_train=48, num_test=16)

    def run(steps, ckpt_path, seed):
        seed_everything(seed)
        seen = {}

        class Record(ModelCheckpoint):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                seen[trainer.global_step] = batch[0][1].clone()
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

        checkpoint = Record(dirpath=tmp_path / "ck", filename="{step}", every_n_train_steps=4, save_top_k=-1)
        trainer = quiet_trainer([checkpoint], max_steps=steps, enable_checkpointing=True, deterministic=True)
        model = tiny("VICReg", seed=seed)
        data = batched_fashion(tmp_path)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return model, seen, data

    full, full_views, full_data = run(8, None, seed=0)
    resumed, resumed_views, resumed_data = run(8, str(tmp_path / "ck" / "step=4.ckpt"), seed=1)
    assert sorted(resumed_views) == [5, 6, 7, 8]
    for step in resumed_views:
        assert torch.equal(resumed_views[step], full_views[step]), step
    assert_same_tree(resumed.state_dict(), full.state_dict(), "weights")
    assert resumed_data.view_batches == full_data.view_batches == 8
    assert full_views[1].shape == (8, 1, 16, 16) and full_views[1].dtype == torch.float32


def test_each_rank_draws_its_own_views(tmp_path):
    write_fake_fashion_mnist(tmp_path, num_train=48, num_test=16)
    images = torch.full((4, 1, 28, 28), 100, dtype=torch.uint8)
    views = []
    for rank in (0, 1):
        data = batched_fashion(tmp_path)
        data.seed = 5
        data.setup("fit")
        data.trainer = type("FakeTrainer", (), {"training": True, "global_rank": rank})()
        views.append(data.on_after_batch_transfer((images, torch.zeros(4, dtype=torch.long)), 0)[0][0])
    assert not torch.equal(views[0], views[1])
