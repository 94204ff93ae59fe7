"""Split a ResNet into its four stages for blockwise training (Siddiqui et al., "Blockwise
Self-Supervised Learning at Scale", arXiv 2302.01647, §3): stem + ``layer1``, ``layer2``,
``layer3``, ``layer4``.

Works for timm's ``ResNet`` family (stem activation ``act1``) and torchvision's (``relu``), with
either the standard stem or the small-image stem of :func:`~ssl_lightning.nn.backbone.apply_small_image_stem`
(its max-pool is an ``nn.Identity``). The stages *share* the network's modules, so running them
in sequence is the network's own ``forward_features`` and the original model's state dict stays
valid for export.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.errors import ConfigurationError

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
STEM_ACTIVATION_NAMES = ("act1", "relu")  # timm, torchvision


def stem_activation(model: nn.Module) -> nn.Module | None:
    return next((getattr(model, name) for name in STEM_ACTIVATION_NAMES if hasattr(model, name)), None)


def is_splittable_resnet(model: nn.Module) -> bool:
    """True when ``model`` has a ResNet's ``conv1, bn1, act1|relu, maxpool`` stem and four ``layer<k>``."""
    parts = [getattr(model, name, None) for name in ("conv1", "bn1", "maxpool", *STAGE_NAMES)]
    return all(isinstance(part, nn.Module) for part in parts) and stem_activation(model) is not None


def resnet_stages(model: nn.Module) -> nn.ModuleList:
    """The four stages of a ResNet as modules mapping feature maps to feature maps.

    Stage 1 is ``conv1 → bn1 → act → maxpool → layer1``; stages 2–4 are ``layer2``–``layer4``.
    Pooling and classifier are left out. Raises ``ValueError`` for a backbone that is not a
    timm or torchvision ResNet.
    """
    if not is_splittable_resnet(model):
        raise ConfigurationError(
            f"Cannot split {type(model).__name__} into ResNet stages. Blockwise training supports timm ResNets "
            "(e.g. 'resnet18', 'resnet50', 'resnet50d', built by timm.models.resnet.ResNet) and torchvision ResNets "
            "(torchvision.models.resnet18/resnet50/...): modules with conv1, bn1, act1 (timm) or relu (torchvision), "
            "maxpool and layer1..layer4."
        )
    stem = nn.Sequential(model.conv1, model.bn1, stem_activation(model), model.maxpool, model.layer1)
    return nn.ModuleList([stem, model.layer2, model.layer3, model.layer4])


@torch.no_grad()
def stage_channels(stages: nn.ModuleList, in_chans: int, image_size: int) -> list[int]:
    """Output channels of each stage, found by passing one dummy image (eval mode, no side effects)."""
    was_training = stages.training
    stages.eval()
    x = torch.zeros(1, in_chans, image_size, image_size)
    channels = []
    try:
        for stage in stages:
            x = stage(x)
            channels.append(x.shape[1])
    finally:
        stages.train(was_training)
    return channels
