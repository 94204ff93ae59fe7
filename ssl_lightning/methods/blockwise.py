"""Blockwise Barlow Twins as a LightningModule (Siddiqui, Krueger, LeCun & Deny, "Blockwise
Self-Supervised Learning at Scale", arXiv 2302.01647; SPEC.md §3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.losses.barlow_twins import BarlowTwinsLoss
from ssl_lightning.methods.base import SSLMethod, base_arguments, weight_decay_groups
from ssl_lightning.nn.backbone import create_backbone
from ssl_lightning.nn.blockwise import NoiseMode, add_feature_noise, stage_head
from ssl_lightning.nn.projector import projector_mlp
from ssl_lightning.nn.resnet_stages import resnet_stages, stage_channels

BLOCK_NAMES = ("block1", "block2", "block3", "block4")


class BlockwiseBarlowTwins(SSLMethod):
    """Each of a ResNet's four stages trained by its own Barlow Twins loss, with no gradient between stages.

    Block ``k`` = stage ``k`` (stage 1 includes the stem) → head (k×k conv → BN → ReLU → global
    average pool, the paper's "CbE + GSP") → representation ``h_k`` (what the probes see) →
    projector → Barlow Twins loss. Stage ``k+1`` receives the *detached* output of stage ``k``, so
    all blocks train simultaneously in one forward pass while each block's loss only reaches that
    block. The total loss is the sum of the block losses, each logged as ``train/loss_block<k>``.
    ``features`` are ``{"block1": h_1, ..., "block4": h_4}``: attach an ``OnlineLinearProbe`` to
    evaluate every block, as in the paper.

    Under DDP, the Barlow Twins loss is global-batch exact; for the BatchNorm layers (backbone,
    heads, projectors) to use global statistics too, as in the authors' runs, set the Trainer's
    ``sync_batchnorm=True``.

    Args:
        backbone: timm ResNet name (e.g. ``"resnet50"``) or a timm/torchvision ResNet module; a
            torchvision ResNet's classifier ``fc`` is replaced by ``nn.Identity`` (never used).
        head_dim: channels of each head's expansion convolution = size of the representations (2048).
        head_kernel_size: kernel size of that convolution (paper's best: 1).
        projector_dims: output sizes of each block's projector (paper: 8192-8192-8192, no biases).
        off_diagonal_weight: Barlow Twins' λ (0.0051).
        loss_scale: factor on each block's loss. The authors' code uses 0.024 on 16 processes with a
            cross-correlation summed by an in-place ``all_reduce`` that autograd does not see, so its
            gradient is the full-batch one / 16; ours is exactly the full-batch gradient, so their
            update is ``loss_scale = 0.024 / 16`` (``examples/blockwise_resnet50_imagenet.yaml``,
            ``docs/fidelity.md``).
        noise_std: σ of the noise injected after every stage during training,
            ``x ← x + σ·std(x)·ε`` (paper's best: 0.25; 0 disables it).
        noise_mode: ``"all"`` (one std over the batch of feature maps) or ``"hw"`` (per sample and
            channel, over positions).
        block_lr_scales: factor on the optimizer's learning rate for each block's parameters
            (stage, head and projector).
        in_chans, image_size: input images (linked from the DataModule by the CLI).
        small_image_stem: 3×3 ResNet stem without max-pool; ``None`` = automatic for ≤ 64 px.
        backbone_kwargs: extra ``timm.create_model`` arguments (e.g. a narrow ResNet's ``channels``).
        optimizer, warmup_epochs, warmup_steps, warmup_start_factor, final_lr_factor, lr_reference_batch_size,
            compile, compile_options, channels_last, init_from: see :class:`SSLMethod`.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        head_dim: int = 2048,
        head_kernel_size: int = 1,
        projector_dims: Sequence[int] = (8192, 8192, 8192),
        off_diagonal_weight: float = 0.0051,
        loss_scale: float = 0.024,
        noise_std: float = 0.25,
        noise_mode: NoiseMode = "all",
        block_lr_scales: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
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
        if len(block_lr_scales) != len(BLOCK_NAMES):
            raise ConfigurationError(f"block_lr_scales needs one factor per block (4), got {list(block_lr_scales)}")
        if noise_std < 0 or noise_mode not in ("all", "hw"):
            raise ConfigurationError(
                f"noise_std must be ≥ 0 and noise_mode 'all' or 'hw', got {noise_std}, {noise_mode!r}"
            )
        self.noise_std, self.noise_mode, self.block_lr_scales = noise_std, noise_mode, list(block_lr_scales)
        self.backbone, _ = create_backbone(backbone, in_chans, image_size, small_image_stem, backbone_kwargs)
        if isinstance(getattr(self.backbone, "fc", None), nn.Linear):
            self.backbone.fc = nn.Identity()
        channels = stage_channels(self.stages, in_chans, image_size)
        self.heads = nn.ModuleList(stage_head(c, head_dim, head_kernel_size) for c in channels)
        self.projectors = nn.ModuleList(projector_mlp(head_dim, list(projector_dims), bias=False) for _ in channels)
        self.loss_fn = BarlowTwinsLoss(off_diagonal_weight, loss_scale)

    @property
    def stages(self) -> nn.ModuleList:
        """The backbone's four stages, looked up on every call: they are views into ``self.backbone``
        (whose state dict keeps the plain ResNet's keys, exportable as is), and a module swapped in
        later — e.g. SyncBatchNorm by ``Trainer(sync_batchnorm=True)`` — is the one they run."""
        return resnet_stages(self.backbone)

    def weight_parts(self) -> dict[str, nn.Module]:
        """The ResNet only: the per-block heads and projectors are this method's own."""
        return {"encoder": self.backbone}

    def compiled_modules(self) -> list[nn.Module]:
        """Each stage, head and projector, and the loss: the stages, not the backbone, which is
        never called as a whole (the stop-gradient and the noise run between stages, eagerly).
        Stage 1 is compiled part by part (stem layers, ``layer1``): its ``nn.Sequential`` is
        rebuilt at every lookup of :attr:`stages`, so compiling it would not last."""
        first_stage, *later_stages = self.stages
        return [*first_stage, *later_stages, *self.heads, *self.projectors, self.loss_fn]

    def block_representations(self, images: Tensor) -> list[Tensor]:
        """The pooled ``(B, head_dim)`` representation of every block, in order."""
        representations = []
        x = images
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            if self.training and self.noise_std > 0:
                x = add_feature_noise(x, self.noise_std, self.noise_mode)
            representations.append(head(x))
            x = x.detach()  # the stop-gradient between blocks
        return representations

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``{"block1": h_1, ..., "block4": h_4}`` for ``images``."""
        return dict(zip(BLOCK_NAMES, self.block_representations(images)))

    def training_step(self, batch, batch_idx: int) -> dict:
        views, _ = batch
        self.check_views(views, 2, "BlockwiseBarlowTwins")
        first, second = self.block_representations(views[0]), self.block_representations(views[1])
        block_losses = [
            self.loss_fn(projector(h1), projector(h2))[0] for projector, h1, h2 in zip(self.projectors, first, second)
        ]
        loss = torch.stack(block_losses).sum()
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/loss_{name}": value for name, value in zip(BLOCK_NAMES, block_losses)})
        return {"loss": loss, "features": {name: h.detach() for name, h in zip(BLOCK_NAMES, first)}}

    def validation_step(self, batch, batch_idx: int) -> dict:
        images, _ = batch
        return {"features": self(images)}

    def parameter_groups(self) -> list[dict]:
        """Per block (stage + head + projector): the weight-decay split, with the block's ``lr_scale``."""
        groups = []
        for stage, head, projector, lr_scale in zip(self.stages, self.heads, self.projectors, self.block_lr_scales):
            params = [*stage.parameters(), *head.parameters(), *projector.parameters()]
            groups += [{**group, "lr_scale": lr_scale} for group in weight_decay_groups(params)]
        return groups
