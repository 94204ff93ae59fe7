"""VICReg as a LightningModule (Bardes, Ponce & LeCun, ICLR 2022, arXiv 2105.04906; SPEC.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from ssl_lightning.losses.vicreg import VICRegLoss
from ssl_lightning.methods.base import base_arguments
from ssl_lightning.methods.joint_embedding import JointEmbeddingMethod


class VICReg(JointEmbeddingMethod):
    """Variance-Invariance-Covariance regularisation of two views' embeddings.

    backbone → pooled features ``h`` (what the probes see) → projector (expander; hidden layers with
    biases, the last without, as in the official code) → ``z`` → loss.

        Args:
            backbone: timm model name or ``nn.Module`` returning ``(B, D)`` features.
            projector_dims: output sizes of the projector's linear layers (paper: 8192-8192-8192).
            invariance_weight, variance_weight, covariance_weight: λ, μ, ν of the paper (25, 25, 1).
            in_chans, image_size: input images (linked from the DataModule by the CLI).
            small_image_stem: 3×3 ResNet stem without max-pool; ``None`` = automatic for ≤ 64 px.
            backbone_kwargs: extra ``timm.create_model`` arguments (e.g. a narrow ResNet's ``channels``).
            optimizer, warmup_epochs, warmup_steps, warmup_start_factor, final_lr_factor, lr_reference_batch_size,
                compile, compile_options, channels_last, init_from: see :class:`SSLMethod`.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        projector_dims: Sequence[int] = (8192, 8192, 8192),
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        in_chans: int = 3,
        image_size: int = 224,
        small_image_stem: bool | None = None,
        backbone_kwargs: dict | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_epochs: float = 10.0,
        warmup_start_factor: float = 0.0,
        final_lr_factor: float = 1e-3,
        compile: bool = False,
        compile_options: dict | None = None,
        warmup_steps: int | None = None,
        lr_reference_batch_size: int | None = None,
        channels_last: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__(**base_arguments(locals()))
        self.save_init_arguments()
        self.build_networks(
            backbone,
            in_chans,
            image_size,
            small_image_stem,
            backbone_kwargs,
            projector_dims,
            projector_bias=True,
            projector_last_bias=False,
        )
        self.loss_fn = VICRegLoss(invariance_weight, variance_weight, covariance_weight)
