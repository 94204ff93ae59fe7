"""benchmarks/vit_pooling.py's measures against direct computations, and the fact it rests on: without
transformer blocks, a ViT's average-pooled tokens are an affine function of the image's mean patch (and
at initialisation, with blocks, nearly so)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_lightning.nn.vit import MaskedViTEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from vit_pooling import common_share, explained_variance, mean_patch


def test_mean_patch_is_the_average_of_the_patches():
    images = torch.randn(3, 2, 8, 12)
    patches = [images[:, :, r : r + 4, c : c + 4] for r in range(0, 8, 4) for c in range(0, 12, 4)]
    expected = torch.stack(patches).mean(0).flatten(1)
    assert torch.allclose(mean_patch(images, 4), expected, atol=1e-6)


def test_explained_variance_of_affine_features_and_of_noise():
    generator = torch.Generator().manual_seed(0)
    regressors = torch.randn(500, 6, generator=generator)
    affine = regressors @ torch.randn(6, 10, generator=generator) + 3.0
    assert explained_variance(affine, regressors) == pytest.approx(1.0, abs=1e-9)
    noise = torch.randn(500, 10, generator=generator)
    assert explained_variance(noise, regressors) < 0.05  # about 6/500 by chance


def test_common_share():
    assert common_share(torch.ones(4, 3) * 2.0) == pytest.approx(1.0)
    symmetric = torch.randn(5, 3)
    assert common_share(torch.cat([symmetric, -symmetric])) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("depth", [0, 2])
def test_pooled_tokens_without_blocks_are_affine_in_the_mean_patch(depth):
    torch.manual_seed(0)
    encoder = MaskedViTEncoder(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=depth, num_heads=2).eval()
    encoder.vit.norm = nn.Identity()
    images = torch.randn(200, 1, 16, 16)
    with torch.no_grad():
        pooled = encoder(images).mean(dim=1)
    r2 = explained_variance(pooled, mean_patch(images, 4))
    if depth == 0:
        assert r2 == pytest.approx(1.0, abs=1e-9)
    else:  # the blocks mix the tokens, but at timm's initialisation (weights of std 0.02) they add very little
        assert 1 - 1e-3 < r2 < 1 - 1e-7
