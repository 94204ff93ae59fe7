"""Encoders of pretrained methods as plain timm models: the ``timm.create_model`` arguments and a
state dict that loads into that model with no key surgery, plus the features it must reproduce."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
from torch import Tensor, nn

from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.nn.backbone import apply_small_image_stem, apply_stem_width, has_small_image_stem
from ssl_lightning.nn.vit import MaskedViTEncoder

# A JEPA encoder as a standalone timm ViT: no class token; its fixed 2-D sin-cos positions stored as
# timm's (learnable) absolute position table; final LayerNorm on the tokens, then average pooling
# (fc_norm=False keeps the norm before the pool, as in the encoder); no classifier.
VIT_EXPORT_ARGS: dict[str, Any] = {
    "class_token": False,
    "global_pool": "avg",
    "fc_norm": False,
    "num_classes": 0,
    "dynamic_img_size": True,
}
# The timm name whose defaults are those of timm's plain VisionTransformer (ViT-B/16), used for JEPA
# encoders built from sizes only (backbone=None); every size is passed explicitly anyway.
PLAIN_VIT_NAME = "vit_base_patch16_224"


@dataclass
class TimmEncoder:
    """An encoder as timm weights.

    Attributes:
        architecture: timm model name.
        model_kwargs: the other ``timm.create_model`` arguments (JSON-serialisable).
        small_image_stem: apply :func:`~ssl_lightning.nn.backbone.apply_small_image_stem` after creation.
        state_dict: weights that load into that model with ``strict=True``.
        reference: the pretrained module whose output the timm model's ``forward`` reproduces.
    """

    architecture: str
    model_kwargs: dict[str, Any]
    small_image_stem: bool
    state_dict: dict[str, Tensor]
    reference: Callable[[Tensor], Tensor]


def create_timm_model(architecture: str, model_kwargs: dict[str, Any], small_image_stem: bool) -> nn.Module:
    """The timm model an export describes, without weights."""
    model = apply_stem_width(
        timm.create_model(architecture, pretrained=False, **model_kwargs), model_kwargs.get("stem_width")
    )
    return apply_small_image_stem(model) if small_image_stem else model


def backbone_as_timm(method: SSLMethod, hparams: dict[str, Any], encoder: str) -> TimmEncoder:
    """``method.backbone`` (a timm model created by name with ``num_classes=0``, from ``hparams``) as timm weights."""
    kwargs = {"num_classes": 0, "in_chans": hparams["in_chans"], **(hparams["backbone_kwargs"] or {})}
    backbone = method.backbone
    return TimmEncoder(hparams["backbone"], kwargs, has_small_image_stem(backbone), backbone.state_dict(), backbone)


def vit_as_timm(method: SSLMethod, hparams: dict[str, Any], encoder: str) -> TimmEncoder:
    """A JEPA method's ``target`` or ``context`` :class:`MaskedViTEncoder` as a timm ViT whose
    ``forward`` returns the average-pooled tokens (what the method's probes see)."""
    masked: MaskedViTEncoder = getattr(method, f"{encoder}_encoder")
    vit = masked.vit
    kwargs = {
        **(hparams["backbone_kwargs"] or {}),
        "img_size": list(vit.patch_embed.img_size),
        "patch_size": list(vit.patch_embed.patch_size),
        "in_chans": vit.patch_embed.proj.in_channels,
        "embed_dim": masked.embed_dim,
        "depth": len(vit.blocks),
        "num_heads": masked.num_heads,
        **VIT_EXPORT_ARGS,
    }
    state_dict = {**vit.state_dict(), "pos_embed": masked.pos_embed.unsqueeze(0)}
    architecture = hparams["backbone"] or PLAIN_VIT_NAME
    return TimmEncoder(architecture, kwargs, False, state_dict, lambda images: masked(images).mean(dim=1))
