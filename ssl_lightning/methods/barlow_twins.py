"""Barlow Twins as a LightningModule (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021, arXiv 2103.03230;
SPEC.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.losses.barlow_twins import BarlowTwinsLoss
from ssl_lightning.methods.base import base_arguments, weight_decay_groups
from ssl_lightning.methods.joint_embedding import JointEmbeddingMethod


class BarlowTwins(JointEmbeddingMethod):
    """Redundancy reduction: the cross-correlation of two views' embeddings is pushed to the identity.

    backbone → pooled features ``h`` (what the probes see) → projector without biases (§2 of the
    paper) → ``z`` → :class:`~ssl_lightning.losses.BarlowTwinsLoss` over the global batch.

    The paper trains with LARS, lr 0.2 × batch/256 for weights and 0.0048 × batch/256 for biases
    and norms (no weight decay and no LARS adaptation there), weight decay 1.5e-6, 10 warmup epochs
    then cosine: ``optimizer=Lars(lr=0.2)``, ``lr_reference_batch_size=256`` and the default
    ``bias_and_norm_lr_factor=0.024`` (= 0.0048 / 0.2). ``loss_scale`` is *not* a substitute for that
    factor: it also shifts the balance between gradient and weight decay inside LARS' trust ratio.

    Our cross-correlation is summed over processes with a gradient-carrying all-reduce, so the
    gradient is exactly the full-batch gradient. The official code's in-place ``all_reduce`` is
    invisible to autograd and DDP then averages, so its gradient is the full-batch gradient divided
    by the number of processes W (16 GPUs in the paper's runs): to reproduce the authors' *update*,
    use ``loss_scale = 1 / W`` (``examples/barlow_resnet50_imagenet.yaml``; derivation in
    ``docs/fidelity.md``).

    Args:
        backbone: timm model name or ``nn.Module`` returning ``(B, D)`` features.
        projector_dims: output sizes of the projector's linear layers (paper: 8192-8192-8192).
        off_diagonal_weight: λ, weight of the redundancy-reduction term (paper: 0.0051).
        loss_scale: factor on the whole loss (paper: 1; the official code's update: 1 / W, see above).
        bias_and_norm_lr_factor: learning rate of the biases and norm parameters (the no-weight-decay
            group) as a fraction of the weights' (paper: 0.0048 / 0.2 = 0.024).
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
        off_diagonal_weight: float = 0.0051,
        loss_scale: float = 1.0,
        bias_and_norm_lr_factor: float = 0.024,
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
            backbone, in_chans, image_size, small_image_stem, backbone_kwargs, projector_dims, projector_bias=False
        )
        self.loss_fn = BarlowTwinsLoss(off_diagonal_weight, loss_scale)
        if bias_and_norm_lr_factor <= 0:
            raise ConfigurationError(f"bias_and_norm_lr_factor must be > 0, got {bias_and_norm_lr_factor}")
        self.bias_and_norm_lr_factor = bias_and_norm_lr_factor

    def parameter_groups(self) -> list[dict]:
        """Weights, then biases and norm parameters at ``bias_and_norm_lr_factor`` × the learning rate."""
        return weight_decay_groups(self.parameters(), self.bias_and_norm_lr_factor)
