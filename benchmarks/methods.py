"""The methods the benchmarks know, each a builder of a ready LightningModule.

A builder takes ``(image_size, in_chans, backbone)`` (``backbone=None``: the method's default)
and returns a :class:`MethodCase`: the LightningModule, how many views a training batch needs and
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

from ssl_lightning.data import JointEmbeddingViews, ViewRecipe
from ssl_lightning.methods import VICReg


@dataclass
class MethodCase:
    module: LightningModule
    num_views: int
    views: ViewRecipe = field(default_factory=JointEmbeddingViews)


Builder = Callable[[int, int, str | None], MethodCase]

NARROW_RESNET18 = {"channels": [16, 32, 64, 128], "stem_width": 16}


def adamw(lr: float) -> Callable:
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=1e-4)


def vicreg(image_size: int, in_chans: int, backbone: str | None) -> MethodCase:
    """VICReg with the quickstart's narrow ResNet-18 by default (512-d projector)."""
    module = VICReg(
        backbone or "resnet18",
        projector_dims=[512, 512, 512],
        in_chans=in_chans,
        image_size=image_size,
        backbone_kwargs=None if backbone else NARROW_RESNET18,
        optimizer=adamw(2e-3),
        warmup_epochs=0.1,
    )
    return MethodCase(module, num_views=2)


METHODS: dict[str, Builder] = {
    "vicreg": vicreg,
}
