"""benchmarks/vit_readouts.py's readouts read the encoder and layers they name, against direct
computations on a tiny I-JEPA whose context and target encoders differ; the reproduce.py run it reads is
the one its recipe overrides name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ssl_lightning.errors import ConfigurationError
from tests.fake_data import write_fake_fashion_mnist
from tests.jepa_helpers import tiny_method

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from reproduce import main as reproduce
from vit_readouts import READOUTS, checkpoint_rows, parse_args, readout


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


def test_recipe_overrides_name_the_reproduce_run_to_read(tmp_path, monkeypatch):
    """A ``reproduce.py`` run made with recipe overrides (of a method other than VICReg, whose recipe once
    served the pixel row) is read back by giving the same overrides; without them the script names the
    command that would make the recipe's own run."""
    write_fake_fashion_mnist(tmp_path / "data")
    places = ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    small = ["--model.init_args.embed_dim=32", "--model.init_args.pred_dim=16"]
    loader = ["--data.init_args.batch_size=16", "--data.init_args.num_workers=0"]
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--methods", "ijepa", "--steps", "2", "--checkpoints", "1",
                                      "--no-supervised", "--no-publish", *places, *small, *loader])  # fmt: skip
    reproduce()

    def rows(*overrides: str) -> list[list[str]]:
        monkeypatch.setattr(sys, "argv", ["vit_readouts.py", "--readouts", "target:avg", *places, *overrides])
        return checkpoint_rows("ijepa", parse_args())

    [row] = rows(*small, *loader)
    assert row[:4] == ["ijepa [embed_dim=32, pred_dim=16, data.init_args.batch_size=16, data.init_args.num_workers=0]",
                       "2", "target:avg", "32"]  # fmt: skip
    assert 0.0 <= float(row[4]) <= 100.0
    with pytest.raises(SystemExit, match=r"run `python benchmarks/reproduce.py --methods ijepa` first"):
        rows()
