"""Backbone construction: ``stem_width`` sets the width of a plain ResNet stem (timm ignores it there)."""

import pytest
import timm
import torch
from torch import nn

from ssl_lightning.nn.backbone import create_backbone

NARROW = [16, 32, 64, 128]


def stem_output_channels(model: nn.Module, image_size: int) -> int:
    """Channels of the stem's activation, read from a forward hook rather than from the module."""
    seen = []
    handle = model.act1.register_forward_hook(lambda _module, _inputs, out: seen.append(out.shape[1]))
    with torch.no_grad():
        model.eval()(torch.zeros(2, 1, image_size, image_size))
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("stem_width", [8, 16, 32])
@pytest.mark.parametrize("image_size", [28, 96])
def test_stem_width_sets_the_stem_output_channels(name, stem_width, image_size):
    model, dim = create_backbone(
        name, in_chans=1, image_size=image_size, backbone_kwargs={"channels": NARROW, "stem_width": stem_width}
    )
    assert stem_output_channels(model, image_size) == stem_width
    expansion = 4 if name == "resnet50" else 1
    assert dim == NARROW[-1] * expansion
    assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, dim)


def test_identity_shortcut_where_stem_and_first_stage_widths_match():
    """resnet18's first block keeps its width: with a 16-wide stem and stage it needs no projection,
    exactly like timm's full-width resnet18 (64-wide stem and stage)."""
    narrow, _ = create_backbone(
        "resnet18", in_chans=1, image_size=28, backbone_kwargs={"channels": NARROW, "stem_width": 16}
    )
    full = timm.create_model("resnet18", num_classes=0, in_chans=1)
    assert full.layer1[0].downsample is None
    assert narrow.layer1[0].downsample is None


def test_default_stem_width_builds_timms_network():
    ours, _ = create_backbone("resnet50", in_chans=3, image_size=224, backbone_kwargs={"stem_width": 64})
    theirs = timm.create_model("resnet50", num_classes=0)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_narrow_stem_has_fewer_parameters():
    """The stem width must reach the weights: 16 channels instead of 64 removes stem and shortcut weights."""
    kwargs = {"channels": NARROW}
    wide, _ = create_backbone("resnet18", in_chans=1, image_size=28, backbone_kwargs=kwargs)
    narrow, _ = create_backbone("resnet18", in_chans=1, image_size=28, backbone_kwargs={**kwargs, "stem_width": 16})
    count = lambda m: sum(p.numel() for p in m.parameters())
    # 3×3 stem conv 64→16 outputs, its BatchNorm, the first block's 64→16 input conv and its 1×1 shortcut + BN
    removed = 9 * (64 - 16) + 2 * (64 - 16) + 9 * 16 * (64 - 16) + (64 * 16 + 2 * 16)
    assert count(wide) - count(narrow) == removed
