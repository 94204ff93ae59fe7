"""benchmarks/vit_readouts.py's readouts read the encoder and layers they name, against direct
computations on a tiny I-JEPA whose context and target encoders differ."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ssl_lightning.errors import ConfigurationError
from tests.jepa_helpers import tiny_method

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from vit_readouts import READOUTS, readout


@pytest.fixture
def method_and_images():
    method = tiny_method(depth=4).eval()
    with torch.no_grad():  # a student that has moved away from its teacher
        for parameter in method.context_encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return method, torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(3))


def test_each_readout_reads_its_encoder_and_layers(method_and_images):
    method, images = method_and_images
    with torch.no_grad():
        features = {name: readout(method, name)(images) for name in READOUTS}
        target_tokens = method.target_encoder(images)
        context_tokens = method.context_encoder(images)
        vit = method.target_encoder.vit
        tokens = vit.norm_pre(vit.patch_embed(images).flatten(1, 2) + method.target_encoder.pos_embed)
        layers = []
        for block in vit.blocks:
            tokens = block(tokens)
            layers.append(vit.norm(tokens).mean(dim=1))
    torch.testing.assert_close(features["target:avg"], target_tokens.mean(dim=1))
    torch.testing.assert_close(features["context:avg"], context_tokens.mean(dim=1))
    assert not torch.allclose(features["context:avg"], features["target:avg"])
    torch.testing.assert_close(features["target:last4"], torch.cat(layers, dim=1))


def test_a_bad_readout_name_says_what_is_accepted(method_and_images):
    method, _ = method_and_images
    with pytest.raises(ConfigurationError, match="'target' or 'context'"):
        readout(method, "student:avg")
