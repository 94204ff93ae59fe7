"""Resampling of every recipe's RandomResizedCrop and of the validation resize, as the official code of
each method does it: bicubic in the Barlow Twins and VICReg pretraining code, torchvision's default
(bilinear) in I-JEPA's and StoP's and in the VICReg/Barlow linear evaluation, bicubic for both in VISSL."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from ssl_lightning.data import FashionMNIST, IJEPAViews, JointEmbeddingViews, LinearEvalViews, StoPViews
from ssl_lightning.data.transforms import eval_transform
from tests.fake_data import write_fake_fashion_mnist

BICUBIC, BILINEAR = v2.InterpolationMode.BICUBIC, v2.InterpolationMode.BILINEAR


def crops(recipe) -> list[v2.RandomResizedCrop]:
    found = []
    for pipeline in recipe.view_pipelines(224, 3):
        stack = [pipeline]
        while stack:
            transform = stack.pop()
            if isinstance(transform, v2.RandomResizedCrop):
                found.append(transform)
            stack.extend(getattr(transform, "transforms", []))
    return found


@pytest.mark.parametrize(
    ("recipe", "expected", "count"),
    [
        (JointEmbeddingViews(), BICUBIC, 2),
        (JointEmbeddingViews(num_views=3, interpolation="bilinear"), BILINEAR, 3),
        (IJEPAViews(), BILINEAR, 1),
        (IJEPAViews(interpolation="bicubic"), BICUBIC, 1),
        (StoPViews(), BILINEAR, 1),
        (StoPViews(interpolation="bicubic"), BICUBIC, 1),
        (LinearEvalViews(), BILINEAR, 1),
        (LinearEvalViews(interpolation="bicubic"), BICUBIC, 1),
    ],
    ids=lambda value: getattr(value, "value", None) if isinstance(value, v2.InterpolationMode) else None,
)
def test_random_resized_crop_interpolation(recipe, expected, count):
    found = crops(recipe)
    assert len(found) == count
    assert all(crop.interpolation == expected for crop in found)


def test_bicubic_and_bilinear_crops_resample_differently():
    """The option reaches the pixels: one crop, upsampled 4×, differs between the two resamplings."""
    image = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = {}
    for name in ("bilinear", "bicubic"):
        torch.manual_seed(1)
        (views[name],) = LinearEvalViews(crop_scale=(1.0, 1.0), hflip_prob=0.0, interpolation=name).train_transform(
            64, 1, (0.0,), (1.0,)
        )(image)
    expected = {
        name: v2.functional.resize(image, [64, 64], interpolation=v2.InterpolationMode(name)).float() / 255
        for name in views
    }
    for name, view in views.items():
        torch.testing.assert_close(view, expected[name], atol=1e-6, rtol=0)
    assert not torch.equal(views["bilinear"], views["bicubic"])


@pytest.mark.parametrize("native_size", [None, 28])
def test_eval_transform_resize_interpolation(native_size):
    for name, mode in (("bilinear", BILINEAR), ("bicubic", BICUBIC)):
        transform = eval_transform(224, (0.5,), (0.5,), native_size, interpolation=name)
        (resize,) = [op for op in transform.transforms if isinstance(op, v2.Resize)]
        assert resize.interpolation == mode


def test_datamodule_validation_resize_follows_the_linear_eval_recipe(tmp_path):
    write_fake_fashion_mnist(tmp_path)
    for views, mode in ((LinearEvalViews(), BILINEAR), (LinearEvalViews(eval_interpolation="bicubic"), BICUBIC)):
        data = FashionMNIST(data_dir=str(tmp_path), views=views, image_size=32, download=False)
        (resize,) = [op for op in data.evaluation_transform().transforms if isinstance(op, v2.Resize)]
        assert resize.interpolation == mode
    default = FashionMNIST(data_dir=str(tmp_path), image_size=32, download=False)  # JointEmbeddingViews
    (resize,) = [op for op in default.evaluation_transform().transforms if isinstance(op, v2.Resize)]
    assert resize.interpolation == BILINEAR


@pytest.mark.parametrize("recipe", [JointEmbeddingViews, IJEPAViews, StoPViews, LinearEvalViews])
def test_unknown_interpolation_is_refused(recipe):
    with pytest.raises(ValueError, match="interpolation must be one of"):
        recipe(interpolation="lanczos")
