"""Encoder export: pretrain a few steps, export, load into timm (and torchvision) and get the
LightningModule's encoder features bit for bit; mismatched architectures and missing files fail clearly."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file

from ssl_lightning.cli import main
from ssl_lightning.evaluation import ArchitectureMismatchError, export_encoder, load_encoder
from ssl_lightning.methods import IJEPA, BlockwiseBarlowTwins, FlexPredict, VICReg
from ssl_lightning.nn.backbone import apply_small_image_stem, apply_stem_width
from tests.pretrained import pretrained_checkpoint, save_untrained, tiny_method

# method, encoder, the LightningModule's features of that encoder
ENCODERS = {
    "VICReg": (VICReg, None, lambda module, x: module.backbone(x)),
    "BlockwiseBarlowTwins": (BlockwiseBarlowTwins, None, lambda module, x: module.backbone(x)),
    "IJEPA-target": (IJEPA, None, lambda module, x: module(x)),
    "IJEPA-context": (IJEPA, "context", lambda module, x: module.context_encoder(x).mean(dim=1)),
    "FlexPredict-target": (FlexPredict, None, lambda module, x: module(x)),
}


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "pretrained"


@pytest.mark.parametrize("case", ENCODERS)
def test_export_reproduces_features_bit_exactly(case, pretrained_dir, tmp_path):
    cls, encoder, features = ENCODERS[case]
    checkpoint = pretrained_checkpoint(cls.__name__, pretrained_dir)
    weights = export_encoder(checkpoint, tmp_path / "encoder.safetensors", encoder=encoder)
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    module = cls.load_from_checkpoint(checkpoint).eval()
    images = torch.randn(4, 1, module.hparams["image_size"], module.hparams["image_size"])
    # The sidecar's timm.create_model call and the stem changes it documents, then load_state_dict
    # with no key surgery.
    model = timm.create_model(sidecar["architecture"], pretrained=False, **sidecar["model_kwargs"])
    apply_stem_width(model, sidecar["model_kwargs"].get("stem_width"))
    if sidecar["small_image_stem"]:
        apply_small_image_stem(model)
    model.load_state_dict(load_file(weights), strict=True)
    with torch.no_grad():
        expected = features(module, images)
        assert torch.equal(model.eval()(images), expected)
        assert torch.equal(load_encoder(weights)(images), expected)
    assert sidecar["feature_dim"] == expected.shape[1]
    assert sidecar["source"]["method"] == cls.__name__


@pytest.mark.parametrize("name", ["VICReg", "IJEPA"])
def test_timm_pretrained_file_overlay_loads_export(name, tmp_path):
    """Without the small-image stem, and with timm's own 64-wide plain stem, an export loads through
    timm's own pretrained-weights path."""
    timm_stem = {"small_image_stem": False, "image_size": 32, "backbone_kwargs": {"channels": [4, 8, 8, 8]}}
    method = tiny_method(name, **(timm_stem if name == "VICReg" else {}))
    weights = export_encoder(save_untrained(method, tmp_path / "method.ckpt"), tmp_path / "encoder.safetensors")
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert not sidecar["small_image_stem"]
    model = timm.create_model(
        sidecar["architecture"],
        pretrained=True,
        pretrained_cfg_overlay={"file": str(weights)},
        **sidecar["model_kwargs"],
    )
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(images), load_encoder(weights)(images))


def test_torchvision_resnet_loads_export(tmp_path):
    method = tiny_method("VICReg", in_chans=3, image_size=32, backbone_kwargs=None, small_image_stem=False)
    weights = export_encoder(save_untrained(method, tmp_path / "method.ckpt"), tmp_path / "encoder.safetensors")
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    model.load_state_dict(load_file(weights), strict=True)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), method.eval().backbone(images))


def test_mismatched_architecture_is_an_error(pretrained_dir, tmp_path):
    checkpoint = pretrained_checkpoint("VICReg", pretrained_dir)
    with pytest.raises(ArchitectureMismatchError, match="holds a 'resnet18' encoder, not 'resnet50'"):
        export_encoder(checkpoint, tmp_path / "encoder.safetensors", architecture="resnet50")
    weights = export_encoder(checkpoint, tmp_path / "encoder.safetensors", architecture="resnet18")
    with pytest.raises(ArchitectureMismatchError, match="not 'vit_small_patch16_224'"):
        load_encoder(weights, architecture="vit_small_patch16_224")


def test_missing_paths_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        export_encoder(tmp_path / "nowhere.ckpt", tmp_path / "encoder.safetensors")
    with pytest.raises(FileNotFoundError, match="No exported encoder"):
        load_encoder(tmp_path / "nowhere.safetensors")


def test_export_command(pretrained_dir, tmp_path, capsys):
    checkpoint = pretrained_checkpoint("VICReg", pretrained_dir)
    output = tmp_path / "out" / "encoder.safetensors"
    main(["export", f"--checkpoint={checkpoint}", f"--output={output}"])
    assert output.is_file() and output.with_suffix(".json").is_file()
    assert str(output) in capsys.readouterr().out
