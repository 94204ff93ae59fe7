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

from ssl_lightning.errors import ConfigurationError, ConfigurationTypeError

SMALL_IMAGE_MAX_SIZE = 64


def has_plain_resnet_stem(model: nn.Module) -> bool:
    """True for ResNets whose stem is one ``conv1`` convolution followed by a ``maxpool``."""
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(
        getattr(model, "maxpool", None), nn.MaxPool2d
    )


def apply_small_image_stem(model: nn.Module) -> nn.Module:
    """Replace a ResNet's 7×7/2 stem convolution by a 3×3/1 one and drop its max-pool, in place."""
    if not has_plain_resnet_stem(model):
        raise ConfigurationError(
            f"small_image_stem needs a ResNet with a single `conv1` convolution and a `maxpool` "
            f"(e.g. timm's resnet18/resnet50); {type(model).__name__} does not have that stem. "
            "Pass small_image_stem=False, or a backbone built for small images."
        )
    conv = model.conv1
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def apply_stem_width(model: nn.Module, width: int | None) -> nn.Module:
    """Give a plain-stem ResNet a first convolution of ``width`` output channels, in place; any other
    model, or ``width=None``, is returned unchanged.

    timm reads ``stem_width`` only for its deep stems and fixes the plain 7×7 stem at 64 channels,
    so a narrow ResNet (``channels=[16, 32, 64, 128]``) would silently keep a 64-wide stem. This
    builds the network timm would build if it honoured the width: ``conv1``/``bn1`` of ``width``
    channels, the first block's input convolution and shortcut reading ``width`` channels: an
    identity where the widths match, else a 1×1 projection with normalisation (ResNet, He et al.
    2016, §3.3 option B), as timm builds it.
    """
    if width is None or not has_plain_resnet_stem(model) or model.conv1.out_channels == width:
        return model
    block = model.layer1[0]
    norm = type(model.bn1)
    model.conv1 = _conv_like(model.conv1, out_channels=width)
    model.bn1 = norm(width, eps=model.bn1.eps, momentum=model.bn1.momentum)
    block.conv1 = _conv_like(block.conv1, in_channels=width)
    block_width = (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels
    block.downsample = (
        None
        if block_width == width
        else nn.Sequential(nn.Conv2d(width, block_width, kernel_size=1, bias=False), norm(block_width))
    )
    model.feature_info[0]["num_chs"] = width
    return model


def _conv_like(conv: nn.Conv2d, in_channels: int | None = None, out_channels: int | None = None) -> nn.Conv2d:
    """A copy of ``conv``'s geometry with other input or output widths, initialised as timm's ResNet
    initialises its convolutions (He normal, fan-out)."""
    copy = nn.Conv2d(
        in_channels or conv.in_channels,
        out_channels or conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(copy.weight, mode="fan_out", nonlinearity="relu")
    return copy


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
            ``stem_width`` of a narrow ResNet, which also sets the width of a plain 7×7 stem
            (:func:`apply_stem_width`), ``drop_path_rate``).
    """
    if isinstance(backbone, str):
        if backbone not in timm.list_models():
            raise ConfigurationError(
                f"Unknown backbone {backbone!r}: not a timm model name. "
                "Use a name from `timm.list_models()` (e.g. 'resnet18', 'resnet50') or pass an nn.Module."
            )
        model = timm.create_model(
            backbone, pretrained=False, num_classes=0, in_chans=in_chans, **(backbone_kwargs or {})
        )
        apply_stem_width(model, (backbone_kwargs or {}).get("stem_width"))
        if small_image_stem is None:
            small_image_stem = image_size <= SMALL_IMAGE_MAX_SIZE and has_plain_resnet_stem(model)
        if small_image_stem:
            apply_small_image_stem(model)
    elif isinstance(backbone, nn.Module):
        if backbone_kwargs:
            raise ConfigurationError(
                "backbone_kwargs only apply to timm model names; configure your nn.Module backbone directly."
            )
        model = backbone
    else:
        raise ConfigurationTypeError(
            f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}"
        )
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
        raise ConfigurationError(
            f"The backbone {type(model).__name__} cannot process {in_chans}×{image_size}×{image_size} images "
            f"({type(err).__name__}: {err}). The images may be too small for it: use larger images, "
            "small_image_stem=True for ResNets, or a backbone built for this size/number of channels."
        ) from err
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ConfigurationError(
            f"The backbone must return pooled (batch, features) tensors, got shape {tuple(out.shape)}. "
            "Add global pooling and flattening to it (timm models: num_classes=0)."
        )
    return out.shape[1]
