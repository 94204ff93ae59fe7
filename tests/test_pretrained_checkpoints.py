"""Which method a checkpoint holds, and the documented error for each kind of wrong file."""

from __future__ import annotations

import argparse

import pytest
import torch

from ssl_lightning.cli import run
from ssl_lightning.evaluation import CheckpointError, load_frozen_encoder, load_pretrained
from tests.fake_data import write_fake_fashion_mnist
from tests.pretrained import save_untrained, tiny_method
from tests.test_linear_probe import tiny_vicreg


def test_class_path_saved_by_the_cli_names_the_method(tmp_path):
    method = tiny_method("IJEPA")
    checkpoint = {
        "state_dict": method.state_dict(),
        "hyper_parameters": {
            "_class_path": "ssl_lightning.methods.IJEPA",
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
            **method.hparams,
        },
    }
    torch.save(checkpoint, tmp_path / "ijepa.ckpt")
    assert load_pretrained(tmp_path / "ijepa.ckpt").name == "IJEPA"


@pytest.mark.parametrize("name", ["VICReg", "BlockwiseBarlowTwins", "IJEPA", "FlexPredict"])
def test_checkpoint_without_class_path_is_recognised(name, tmp_path):
    pretrained = load_pretrained(save_untrained(tiny_method(name), tmp_path / "method.ckpt"))
    assert pretrained.name == name


def test_different_method_than_expected(tmp_path):
    checkpoint = save_untrained(tiny_method("VICReg"), tmp_path / "vicreg.ckpt")
    with pytest.raises(CheckpointError, match="holds a checkpoint of VICReg, not of IJEPA"):
        load_pretrained(checkpoint, method="IJEPA")


def test_checkpoint_of_another_library(tmp_path):
    plain = tmp_path / "resnet.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(CheckpointError, match=r"plain state dict of 2 tensors \(weight, bias\)"):
        load_pretrained(plain)

    foreign_class = tmp_path / "solo.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "solo.methods.VICReg"}}, foreign_class)
    with pytest.raises(CheckpointError, match="checkpoint of solo.methods.VICReg, not of an ssl_lightning"):
        load_pretrained(foreign_class)

    foreign_weights = tmp_path / "other.ckpt"
    state = {"backbone.weight": torch.zeros(1), "momentum_backbone.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.1}}, foreign_weights)
    with pytest.raises(CheckpointError, match="under backbone, momentum_backbone .* another library"):
        load_pretrained(foreign_weights)

    pickled_objects = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=0.1)}, pickled_objects)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_pretrained(pickled_objects)

    (tmp_path / "encoder.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained(tmp_path / "encoder.safetensors")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        load_pretrained(tmp_path / "nowhere.ckpt")


def test_module_backbone_cannot_be_rebuilt(tmp_path):
    checkpoint = save_untrained(tiny_vicreg(), tmp_path / "convnet.ckpt")
    with pytest.raises(CheckpointError, match="backbone passed as an nn.Module"):
        load_pretrained(checkpoint)


def test_options_that_do_not_apply_to_the_method(tmp_path):
    vicreg = save_untrained(tiny_method("VICReg"), tmp_path / "vicreg.ckpt")
    with pytest.raises(ValueError, match=r"encoders are \['backbone'\]; got encoder='context'"):
        load_frozen_encoder(vicreg, encoder="context")
    with pytest.raises(ValueError, match="applies to JEPA methods only"):
        load_frozen_encoder(vicreg, pool="last4")
    with pytest.raises(ValueError, match="applies to blockwise methods only"):
        load_frozen_encoder(vicreg, stage=2)
    with pytest.raises(ValueError, match="trained on 1-channel images, but the evaluation data has 3"):
        load_frozen_encoder(vicreg, in_chans=3)


def test_feature_choices(tmp_path):
    ijepa = save_untrained(tiny_method("IJEPA"), tmp_path / "ijepa.ckpt")
    images = torch.randn(2, 1, 32, 32)
    average, dim = load_frozen_encoder(ijepa, encoder="context")
    last4, last4_dim = load_frozen_encoder(ijepa, encoder="context", pool="last4")
    assert (dim, last4_dim) == (64, 4 * 64)
    assert torch.equal(last4(images)[:, -dim:], average(images))  # the last block's normed tokens, pooled

    blockwise_method = tiny_method("BlockwiseBarlowTwins").eval()
    blockwise = save_untrained(blockwise_method, tmp_path / "blockwise.ckpt")
    stage2, _ = load_frozen_encoder(blockwise, stage=2)
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(stage2(images), blockwise_method(images)["block2"])
    with pytest.raises(ValueError, match=r"stage must be in 1..4, got stage=5"):
        load_frozen_encoder(blockwise, stage=5)


def test_channel_mismatch_through_the_command_line(tmp_path):
    """Rebuilt inside LightningCLI's instantiation, a method records the CLI's arguments as its
    hyper-parameters; the checks must read the checkpoint's."""
    write_fake_fashion_mnist(tmp_path / "data")
    checkpoint = save_untrained(tiny_method("VICReg", in_chans=3), tmp_path / "rgb.ckpt")
    with pytest.raises(ValueError, match="trained on 3-channel images, but the evaluation data has 1"):
        run(
            [
                "validate",
                "--model=KNNEval",
                f"--model.init_args.checkpoint={checkpoint}",
                "--data=FashionMNIST",
                f"--data.data_dir={tmp_path / 'data'}",
                "--trainer.fast_dev_run=true",
            ]
        )
