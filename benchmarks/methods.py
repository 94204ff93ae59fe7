"""The methods the benchmarks know, each a builder of a ready LightningModule.

A builder takes ``(image_size, in_chans, backbone, **method_options)`` (``backbone=None``: the
method's default; ``method_options``: further constructor arguments of the method, e.g.
``compile=True``, which override the builder's own) and returns a :class:`MethodCase`: the LightningModule, how many views a training batch needs and
the view recipe the method trains with. The benchmarks read probe features as ``module(images)`` — every method's ``forward``
returns what its ``validation_step`` returns as ``features`` (a tensor, or a dict of tensors).
Add a method by writing its builder and one line in ``METHODS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from lightning.pytorch import LightningModule

from ssl_lightning.data import IJEPAViews, JointEmbeddingViews, ViewRecipe
from ssl_lightning.methods import IJEPA, BarlowTwins, BlockwiseBarlowTwins, FlexPredict, LeJEPA, VICReg


@dataclass
class MethodCase:
    module: LightningModule
    num_views: int
    views: ViewRecipe = field(default_factory=JointEmbeddingViews)


Builder = Callable[..., MethodCase]

NARROW_RESNET18 = {"channels": [16, 32, 64, 128]}


def adamw(lr: float) -> Callable:
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=1e-4)


def joint_embedding_options(image_size: int, in_chans: int, backbone: str | None) -> dict:
    """The quickstarts' shared budget: narrow ResNet-18 by default, 512-d projector, AdamW lr 2e-3."""
    return {
        "backbone": backbone or "resnet18",
        "projector_dims": [512, 512, 512],
        "in_chans": in_chans,
        "image_size": image_size,
        "backbone_kwargs": None if backbone else NARROW_RESNET18,
        "optimizer": adamw(2e-3),
        "warmup_epochs": 0.1,
    }


def vicreg(image_size: int, in_chans: int, backbone: str | None, **method_options) -> MethodCase:
    """VICReg with the quickstart's settings."""
    options = joint_embedding_options(image_size, in_chans, backbone)
    return MethodCase(VICReg(**{**options, **method_options}), num_views=2)


def barlow_twins(image_size: int, in_chans: int, backbone: str | None, **method_options) -> MethodCase:
    """End-to-end Barlow Twins with the quickstart's settings: the baseline of ``blockwise_barlow_twins``."""
    options = joint_embedding_options(image_size, in_chans, backbone)
    return MethodCase(BarlowTwins(**{**options, **method_options}), num_views=2)


def blockwise_barlow_twins(image_size: int, in_chans: int, backbone: str | None, **method_options) -> MethodCase:
    """Blockwise Barlow Twins with the same backbone, projectors, optimizer and loss scale as
    ``barlow_twins`` (noise 0.25), so the two compare at the same budget. The block heads are as
    wide as the last stage (128 for the narrow ResNet-18, 2048 for ResNet-50, as in the paper)."""
    options = joint_embedding_options(image_size, in_chans, backbone)
    head_dim = 2048 if backbone else NARROW_RESNET18["channels"][-1]
    options |= {"head_dim": head_dim, "loss_scale": 1.0}
    return MethodCase(BlockwiseBarlowTwins(**{**options, **method_options}), num_views=2)


def lejepa(image_size: int, in_chans: int, backbone: str | None, **method_options) -> MethodCase:
    """LeJEPA with the quickstart's backbone and optimizer, projector 512-512-64, λ 0.05, 1024 slices, two
    global views (the benchmarks' batches hold views of one size)."""
    options = joint_embedding_options(image_size, in_chans, backbone) | {"projector_dims": [512, 512, 64]}
    return MethodCase(LeJEPA(**{**options, **method_options}), num_views=2)


def jepa_options(image_size: int, in_chans: int, backbone: str | None) -> dict:
    """I-JEPA / FlexPredict at the quickstarts' budget: by default their small ViT (patch 4, 128-d,
    depth 4; predictor 64-d × 2) with target blocks of 10-15% of its small grid; a named timm ViT
    gets the paper's masks and predictor. AdamW lr 1e-3 (the method's weight-decay ramp applies)."""
    options = {
        "in_chans": in_chans,
        "image_size": image_size,
        "optimizer": adamw(1e-3),
        "warmup_epochs": 0.1,
        "warmup_start_factor": 0.2,
    }
    if backbone:
        return {**options, "backbone": backbone}
    small_vit = {"backbone": None, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4}
    return {**options, **small_vit, "pred_dim": 64, "pred_depth": 2, "target_scale": (0.1, 0.15), "min_keep": 3}


def ijepa(image_size: int, in_chans: int, backbone: str | None, **method_options) -> MethodCase:
    """I-JEPA with the quickstart's settings."""
    options = jepa_options(image_size, in_chans, backbone)
    return MethodCase(IJEPA(**{**options, **method_options}), num_views=1, views=IJEPAViews())


def flexpredict(image_size: int, in_chans: int, backbone: str | None, **method_options) -> MethodCase:
    """FlexPredict with exactly ``ijepa``'s settings and views, so the two differ only in the
    predictor's target tokens (noise_std 0.25, tied projection, no mask token)."""
    options = jepa_options(image_size, in_chans, backbone)
    return MethodCase(FlexPredict(**{**options, **method_options}), num_views=1, views=IJEPAViews())


METHODS: dict[str, Builder] = {
    "vicreg": vicreg,
    "barlow_twins": barlow_twins,
    "blockwise_barlow_twins": blockwise_barlow_twins,
    "ijepa": ijepa,
    "flexpredict": flexpredict,
    "lejepa": lejepa,
}
