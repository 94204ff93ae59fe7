"""ResNet stage splitting: the four stages in sequence are the unsplit network, exactly."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from ssl_lightning.nn import create_backbone, resnet_stages, stage_channels


def run_stages(stages, x):
    for stage in stages:
        x = stage(x)
    return x


NARROW = {"channels": (8, 16, 32, 64), "stem_width": 8}  # same blocks and stages, CPU-cheap widths


@pytest.mark.parametrize(
    ("name", "image_size", "channels"),
    [("resnet18", 96, [8, 16, 32, 64]), ("resnet50", 96, [32, 64, 128, 256]), ("resnet50", 28, [32, 64, 128, 256])],
)
def test_timm_split_reproduces_forward_features(name, image_size, channels):
    torch.manual_seed(0)
    model, _ = create_backbone(name, in_chans=3, image_size=image_size, backbone_kwargs=NARROW)  # 28: small stem
    model.eval()
    stages = resnet_stages(model)
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        assert torch.equal(run_stages(stages, x), model.forward_features(x))
        assert torch.equal(run_stages(stages, x).mean(dim=(2, 3)), model(x))
    assert stage_channels(stages, 3, image_size) == channels


def test_torchvision_split_reproduces_forward():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10).eval()
    stages = resnet_stages(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.fc(model.avgpool(run_stages(stages, x)).flatten(1)), model(x))


def test_stages_share_the_networks_modules():
    model = timm.create_model("resnet18", num_classes=0, **NARROW)
    stages = resnet_stages(model)
    assert stages[0][0] is model.conv1 and stages[3] is model.layer4
    assert {id(p) for p in stages.parameters()} == {id(p) for p in model.parameters()}


def test_stage_channels_keeps_training_mode():
    model = timm.create_model("resnet18", num_classes=0, **NARROW).train()
    stages = resnet_stages(model)
    assert stage_channels(stages, 3, 32) == [8, 16, 32, 64]
    assert model.training and model.layer1.training


@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))])
def test_unsplittable_backbone_is_a_clear_error(backbone):
    model = timm.create_model(backbone, num_classes=0) if isinstance(backbone, str) else backbone
    with pytest.raises(ValueError, match="timm ResNets .* torchvision ResNets"):
        resnet_stages(model)
