"""Backbone resolution: a timm model name or any ``nn.Module`` → a pooled ``(B, D)`` feature extractor.

Small images (≤ 64 px, e.g. CIFAR, Fashion-MNIST) get the ResNet "CIFAR stem" used across the SSL
literature (e.g. the VICReg/Barlow Twins CIFAR baselines of solo-learn): the 7×7 stride-2 first
convolution becomes a 3×3 stride-1 convolution and the max-pool is removed, so a 32 px image is
not reduced to 1×1 before the last stage.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

SMALL_IMAGE_MAX_SIZE = 64


def has_plain_resnet_stem(model: nn.Module) -> bool:
    """True for ResNets whose stem is one ``conv1`` convolution followed by a ``maxpool``."""
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(
        getattr(model, "maxpool", None), nn.MaxPool2d
    )


def apply_small_image_stem(model: nn.Module) -> nn.Module:
    """Replace a ResNet's 7×7/2 stem convolution by a 3×3/1 one and drop its max-pool, in place."""
    if not has_plain_resnet_stem(model):
        raise ValueError(
            f"small_image_stem needs a ResNet with a single `conv1` convolution and a `maxpool` "
            f"(e.g. timm's resnet18/resnet50); {type(model).__name__} does not have that stem. "
            "Pass small_image_stem=False, or a backbone built for small images."
        )
    conv = model.conv1
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def has_small_image_stem(model: nn.Module) -> bool:
    """True for a ResNet whose stem :func:`apply_small_image_stem` changed (3×3/1 ``conv1``, no max-pool)."""
    conv = getattr(model, "conv1", None)
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and isinstance(getattr(model, "maxpool", None), nn.Identity)
    )


def create_backbone(
    backbone: str | nn.Module,
    in_chans: int = 3,
    image_size: int = 224,
    small_image_stem: bool | None = None,
    backbone_kwargs: dict | None = None,
) -> tuple[nn.Module, int]:
    """Build (or accept) a backbone and return it with its feature dimension.

    Args:
        backbone: a timm model name (created without pretrained weights and without classifier,
            ``num_classes=0``, so it returns pooled ``(B, D)`` features) or a ready ``nn.Module``
            that maps ``(B, in_chans, image_size, image_size)`` images to ``(B, D)`` features.
        in_chans: image channels (1 for Fashion-MNIST/MNIST).
        image_size: side of the training images, used to check the backbone accepts them.
        small_image_stem: use the 3×3, no-max-pool ResNet stem; ``None`` means "when
            ``image_size`` ≤ 64 and the model has a plain ResNet stem". Only applies to timm names.
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``channels`` and
            ``stem_width`` of a narrow ResNet, ``drop_path_rate``).
    """
    if isinstance(backbone, str):
        if backbone not in timm.list_models():
            raise ValueError(
                f"Unknown backbone {backbone!r}: not a timm model name. "
                "Use a name from `timm.list_models()` (e.g. 'resnet18', 'resnet50') or pass an nn.Module."
            )
        model = timm.create_model(
            backbone, pretrained=False, num_classes=0, in_chans=in_chans, **(backbone_kwargs or {})
        )
        if small_image_stem is None:
            small_image_stem = image_size <= SMALL_IMAGE_MAX_SIZE and has_plain_resnet_stem(model)
        if small_image_stem:
            apply_small_image_stem(model)
    elif isinstance(backbone, nn.Module):
        if backbone_kwargs:
            raise ValueError(
                "backbone_kwargs only apply to timm model names; configure your nn.Module backbone directly."
            )
        model = backbone
    else:
        raise TypeError(f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}")
    return model, probe_feature_dim(model, in_chans, image_size)


@torch.no_grad()
def probe_feature_dim(model: nn.Module, in_chans: int, image_size: int) -> int:
    """Run one dummy image through ``model`` and return its feature dimension, with a clear error
    when the image size or channel count does not fit the backbone."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, in_chans, image_size, image_size))
    except Exception as err:  # timm raises AssertionError for size mismatches, torch RuntimeError
        raise ValueError(
            f"The backbone {type(model).__name__} cannot process {in_chans}×{image_size}×{image_size} images "
            f"({type(err).__name__}: {err}). The images may be too small for it: use larger images, "
            "small_image_stem=True for ResNets, or a backbone built for this size/number of channels."
        ) from err
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ValueError(
            f"The backbone must return pooled (batch, features) tensors, got shape {tuple(out.shape)}. "
            "Add global pooling and flattening to it (timm models: num_classes=0)."
        )
    return out.shape[1]
