"""I-JEPA as a LightningModule (Assran et al., "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", CVPR 2023, arXiv 2301.08243; SPEC.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh

from ssl_lightning.errors import ConfigurationError, ConfigurationTypeError
from ssl_lightning.losses.jepa import JEPALoss, JEPALossKind
from ssl_lightning.masks.multiblock import PAD_INDEX, ContextSubset, CornerRange, MultiBlockMaskSampler
from ssl_lightning.methods.base import SSLMethod, base_arguments
from ssl_lightning.nn.ema import ema_update_, frozen_copy, momentum_at
from ssl_lightning.nn.fsdp import (
    check_aligned_shards,
    data_parallel_mesh,
    is_sharded,
    mixed_precision_policy,
    reshard,
    shard_transformer,
)
from ssl_lightning.nn.predictor import JEPAPredictor
from ssl_lightning.nn.schedules import cosine_ramp
from ssl_lightning.nn.vit import MaskedViTEncoder, gather_tokens


def first_view(views: Tensor | Sequence[Tensor]) -> Tensor:
    """The images of a batch: the tensor itself, or the first of several views."""
    if isinstance(views, Tensor):
        return views
    if not isinstance(views, Sequence) or len(views) == 0:
        raise ConfigurationError(
            f"JEPA methods need a batch of images (B, C, H, W) or a list of views, got {type(views).__name__}"
        )
    return views[0]


def mark_tokens_dynamic(*tensors: Tensor) -> None:
    """Mark dim 1 (the tokens) of ``tensors`` dynamic for ``torch.compile``.

    The masks' lengths change every batch; marked, the compiled networks and loss are traced once
    with a symbolic token count instead of once static and once more after the first change
    (``torch._dynamo.maybe_mark_dynamic``, see the dynamic-shapes page of the torch.compile docs;
    "maybe": a use that needs a fixed size specializes instead of failing). No effect in eager mode.
    """
    for tensor in tensors:
        torch._dynamo.maybe_mark_dynamic(tensor, 1)


def jepa_encoder(
    backbone: str | MaskedViTEncoder | None, image_size: int, in_chans: int, **vit_options
) -> MaskedViTEncoder:
    """The context encoder of a JEPA method: a :class:`MaskedViTEncoder` from a timm ViT name (or,
    for ``None``, from ``vit_options`` alone), or the given one after checking its image size."""
    if isinstance(backbone, MaskedViTEncoder):
        built_for = tuple(backbone.vit.patch_embed.img_size)
        if built_for != (image_size, image_size):
            raise ConfigurationError(
                f"The MaskedViTEncoder was built for {built_for} images but image_size is {image_size}: "
                "the masks and the predictor's positions use the encoder's patch grid. Build it with "
                f"img_size={image_size} or pass image_size={built_for[0]}."
            )
        return backbone
    if backbone is not None and not isinstance(backbone, str):
        raise ConfigurationTypeError(
            f"I-JEPA needs a ViT encoder that can encode a subset of patches, got {type(backbone).__name__}. "
            "Pass a timm ViT name (e.g. 'vit_base_patch16_224'), None with ViT sizes, or a MaskedViTEncoder."
        )
    return MaskedViTEncoder(backbone, img_size=image_size, in_chans=in_chans, **vit_options)


class IJEPA(SSLMethod):
    """Image-based Joint-Embedding Predictive Architecture: predict, from one context block of an
    image, the *representations* of several target blocks of the same image (paper Sec. 3).

    One training step on images ``x``:

    1. multi-block masks, drawn on the host by :class:`MultiBlockMaskSampler` (``sample_on_host``:
       no device sync) and copied to the batch's device: per image one context block and
       ``num_targets`` target blocks (removed from the context);
    2. target encoder ``f_θ̄`` (EMA copy of the context encoder, no gradient, never in the
       optimizer) on the full image, a LayerNorm without parameters over the features, then the
       target patches are gathered: ``s_y``;
    3. context encoder ``f_θ`` on the context patches only: ``s_x``;
    4. predictor ``g_φ(s_x, target positions)`` for every target block at once: ``ŝ_y``;
    5. loss ``D(ŝ_y, s_y)`` averaged over target blocks and patches: smooth-L1 as in the official
       code (default) or the paper's squared L2 (``loss="mse"``), :func:`~ssl_lightning.losses.jepa.jepa_loss`.

    After each optimizer step the target encoder follows ``θ̄ ← m·θ̄ + (1 − m)·θ`` with ``m`` linear
    from ``ema_momentum[0]`` to ``ema_momentum[1]`` over the run; the weight decay of the weights
    (not of biases and norms) follows a cosine ramp ``weight_decay[0] → weight_decay[1]``. Both
    are stepped per optimizer step, as is the base class's warmup + cosine learning rate.

    ``features`` (for the probes) are the average-pooled target-encoder tokens of the full image,
    already computed for the targets; validation features come from the target encoder too. The
    target encoder always runs in eval mode, so dropout or drop-path never perturb the targets.
    The masks of the last training step are kept in ``last_masks`` (``(context_idx, target_idx)``)
    for visualisation (:class:`~ssl_lightning.callbacks.MaskVisualization`).

    Args:
        backbone: a ViT of timm's ``vision_transformer`` module by name (e.g.
            ``"vit_base_patch16_224"``, ``"vit_huge_patch14_224"``; created without pretrained
            weights, at ``image_size``), ``None`` for timm's ``VisionTransformer`` built from the
            sizes below, or a ready :class:`~ssl_lightning.nn.MaskedViTEncoder` built for
            ``image_size``. Anything else (a ResNet, ...) is rejected: I-JEPA encodes patch subsets.
        patch_size, embed_dim, depth, num_heads: override the ViT's sizes (``None``: the named
            model's, or ViT-B/16's when ``backbone`` is ``None``).
        backbone_kwargs: further ``VisionTransformer`` arguments (``drop_path_rate``, ...).
        pred_dim, pred_depth: predictor width and depth (paper: 384; depth 6 for ViT-B, 12 for
            ViT-L/H). The predictor uses the encoder's number of heads.
        num_targets, target_scale, target_aspect, context_scale, context_aspect, min_keep,
            allow_overlap: multi-block masking (paper defaults; see :class:`MultiBlockMaskSampler`).
        reference_masks: reproduce the official code's mask sampling exactly (the official value
            of the three options below) instead of the corrected sampler.
        corner_range, shared_size_draw, context_subset: the three differences from the official
            sampler, one by one (``None``: follow ``reference_masks``; see
            :class:`MultiBlockMaskSampler`): block corners reach the last patch row/column
            (``"full"``, default) or not (``"official"``); one uniform number for a block's scale
            and aspect (``True``, official) or two (``False``, default); contexts cut to a random
            subset (``"random"``, default) or their first patches (``"first"``, official).
            ``corner_range="full", shared_size_draw=True, context_subset="first"`` is the official
            sampler with only the edge fixed.
        full_context: keep every context patch instead of cutting each image's context to the
            batch's shortest, as the official code does (and ``reference_masks=True`` requires):
            the shorter contexts are padded with :data:`~ssl_lightning.masks.PAD_INDEX`, which
            the context encoder and the predictor never attend to. The cut throws away a large
            share of the context, the more so the smaller the grid and the larger the batch (with
            the default blocks and 64 images, 7×7 contexts average 16 patches and keep 9). The
            cost: the padded tokens' compute, and an attention mask, which on GPU rules out
            SDPA's flash kernel. ``context_subset`` must stay unset.
            See :class:`MultiBlockMaskSampler`.
        loss: ``"smooth_l1"`` (official code) or ``"mse"`` (paper).
        ema_momentum: EMA momentum at the first and the last step (linear in between).
        weight_decay: weight decay of the weights at the first and the last step (cosine ramp),
            set on the optimizer's first parameter group every step (it overrides the optimizer's
            own ``weight_decay``); ``None`` keeps the optimizer's.
        schedule_freeze_epoch: from this epoch on, hold the learning rate and the weight decay at the
            values they have there instead of following the cosine to its end (StoP's ViT-H recipe,
            amirbar/StoP ``fix_lr_thres``/``fix_wd_thres`` = 250 of 300 epochs with the ``const``
            strategy); the EMA momentum keeps its schedule. ``None``: no freeze (I-JEPA).
        in_chans, image_size: input images (linked from the DataModule by the CLI).
        optimizer, warmup_epochs, warmup_start_factor, final_lr_factor: see :class:`SSLMethod`;
            defaults are the ViT-H/14 recipe (AdamW at lr 1e-3, warmup from 2e-4 over 40 epochs,
            cosine to 1e-6).
        compile, compile_options: see :class:`SSLMethod`; the token dimension of the masks, whose
            lengths change every batch, is marked dynamic, so each network compiles once.
        warmup_steps, lr_reference_batch_size: see :class:`SSLMethod` (the official code sets an
            absolute learning rate: ``None`` reproduces it).
        channels_last: see :class:`SSLMethod` (only the patch embedding is a convolution here).
        init_from: see :class:`SSLMethod`; an official I-JEPA or StoP checkpoint fills the context
            encoder, the target encoder and the predictor; encoder-only weights (timm, Hugging Face)
            fill both encoders and leave the predictor at its initialisation.
    """

    def __init__(
        self,
        backbone: str | MaskedViTEncoder | None = "vit_base_patch16_224",
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        backbone_kwargs: dict | None = None,
        pred_dim: int = 384,
        pred_depth: int = 6,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        allow_overlap: bool = False,
        reference_masks: bool = False,
        corner_range: CornerRange | None = None,
        shared_size_draw: bool | None = None,
        context_subset: ContextSubset | None = None,
        full_context: bool = False,
        loss: JEPALossKind = "smooth_l1",
        ema_momentum: tuple[float, float] = (0.996, 1.0),
        weight_decay: tuple[float, float] | None = (0.04, 0.4),
        schedule_freeze_epoch: float | None = None,
        in_chans: int = 3,
        image_size: int = 224,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_epochs: float = 40.0,
        warmup_start_factor: float = 0.2,
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
        self.context_encoder = jepa_encoder(
            backbone,
            image_size,
            in_chans,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            **(backbone_kwargs or {}),
        )
        self.target_encoder = frozen_copy(self.context_encoder)
        self.predictor = self.build_predictor(
            self.context_encoder.embed_dim,
            self.context_encoder.grid_size,
            pred_dim=pred_dim,
            pred_depth=pred_depth,
            num_heads=self.context_encoder.num_heads,
        )
        self.mask_sampler = MultiBlockMaskSampler(
            self.context_encoder.grid_size,
            num_targets=num_targets,
            target_scale=target_scale,
            target_aspect=target_aspect,
            context_scale=context_scale,
            context_aspect=context_aspect,
            min_keep=min_keep,
            allow_overlap=allow_overlap,
            reference=reference_masks,
            corner_range=corner_range,
            shared_size_draw=shared_size_draw,
            context_subset=context_subset,
            full_context=full_context,
        )
        self.loss_fn = JEPALoss(loss)
        self.ema_momentum = tuple(ema_momentum)
        self.weight_decay = None if weight_decay is None else tuple(weight_decay)
        if schedule_freeze_epoch is not None and schedule_freeze_epoch < 0:
            raise ConfigurationError(f"schedule_freeze_epoch must be ≥ 0 or None, got {schedule_freeze_epoch}")
        self.schedule_freeze_epoch = schedule_freeze_epoch
        self.last_masks: tuple[Tensor, list[Tensor]] | None = None

    def build_predictor(self, enc_dim: int, grid_size: tuple[int, int], **options) -> JEPAPredictor:
        """I-JEPA's predictor (shared learned mask token); FlexPredict overrides this one method."""
        return JEPAPredictor(enc_dim, grid_size, **options)

    def shard_modules(self, device_mesh: DeviceMesh) -> None:
        """FSDP2-shard the three networks over the data-parallel dimension of ``device_mesh``
        (``torch.distributed.fsdp.fully_shard``; called by ``configure_model`` under Lightning's
        ``ModelParallelStrategy``): each transformer block, then each network's root, alike for
        the context encoder, the target encoder and the predictor. Teacher and student parameters
        then hold the same shards (checked here), so the EMA update stays local to each rank.
        Under ``precision="bf16-mixed"`` the all-gathered weights are bfloat16
        (:func:`~ssl_lightning.nn.fsdp.mixed_precision_policy`). A second call does nothing."""
        if is_sharded(self.context_encoder):
            return
        mesh = data_parallel_mesh(device_mesh)
        policy = mixed_precision_policy(self._trainer.precision if self._trainer is not None else None)
        for network, blocks in (
            (self.context_encoder, self.context_encoder.vit.blocks),
            (self.target_encoder, self.target_encoder.vit.blocks),
            (self.predictor, self.predictor.blocks),
        ):
            shard_transformer(network, blocks, mesh, policy)
        check_aligned_shards(self.target_encoder, self.context_encoder)

    def compiled_modules(self) -> list[nn.Module]:
        return [self.context_encoder, self.target_encoder, self.predictor, self.loss_fn]

    def weight_parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.context_encoder, "target_encoder": self.target_encoder, "predictor": self.predictor}

    def setup(self, stage: str) -> None:
        """Reject Lightning's ``FSDPStrategy`` (FSDP1) before it wraps the model: it flattens the
        parameters of each wrapped unit into one ``FlatParameter`` and shards that by offset, and
        it wraps the whole LightningModule as one root unit, so the root shard mixes the student's
        and the teacher's embeddings and norms and the EMA cannot pair them rank-locally. Then
        load ``init_from`` (:meth:`SSLMethod.setup`)."""
        if isinstance(self.trainer.strategy, FSDPStrategy):
            raise ConfigurationTypeError(
                f"{type(self).__name__} does not support strategy=fsdp (FSDPStrategy, FSDP1): its EMA update needs the "
                "target encoder sharded exactly like the context encoder. Use FSDP2 through "
                "lightning.pytorch.strategies.ModelParallelStrategy(data_parallel_size=<devices × num_nodes>, "
                "tensor_parallel_size=1), or strategy=ddp."
            )
        super().setup(stage)

    def train(self, mode: bool = True) -> IJEPA:
        super().train(mode)
        self.target_encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Average-pooled target-encoder features ``(B, embed_dim)`` of full images (the representation)."""
        return self.target_encoder(images).mean(dim=1)

    def prediction_loss(
        self, images: Tensor, context_idx: Tensor, target_idx: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """JEPA loss of ``images`` with the given masks, and the pooled target-encoder features.

        Args:
            images: ``(B, C, H, W)``.
            context_idx: ``(B, Kc)`` flat patch indices of each image's context; with the sampler's
                ``full_context``, rows padded at the end with :data:`~ssl_lightning.masks.PAD_INDEX`.
            target_idx: one ``(B, Kt)`` index tensor per target block.
        """
        # Decided by the configuration, not by looking for PAD_INDEX, which would sync with the device.
        padding = context_idx == PAD_INDEX if self.mask_sampler.full_context else None
        mark_tokens_dynamic(context_idx, *target_idx)
        if padding is not None:
            mark_tokens_dynamic(padding)
        with torch.no_grad():
            tokens = self.target_encoder(images)
            normalized = F.layer_norm(tokens, tokens.shape[-1:])
            targets = torch.cat([gather_tokens(normalized, idx) for idx in target_idx])
        context = self.context_encoder(images, context_idx, padding)
        predictions = self.predictor(context, context_idx, target_idx, padding)
        mark_tokens_dynamic(predictions, targets)
        return self.loss_fn(predictions, targets), tokens.mean(dim=1)

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        views, _ = batch
        images = first_view(views)
        # From torch's CPU RNG, which SSLMethod reseeds for every batch and rank: resumable, different per rank,
        # and drawn on the host, so the step never waits for the device.
        context_idx, target_idx = self.mask_sampler.sample_on_host(len(images), images.device)
        self.last_masks = (context_idx, target_idx)
        loss, features = self.prediction_loss(images, context_idx, target_idx)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss, "features": features}

    def validation_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        images, _ = batch
        return {"features": self(images)}

    def scheduled_step(self, step: int) -> int:
        """The step the learning-rate and weight-decay schedules read: ``step``, or the first step of
        ``schedule_freeze_epoch`` once it is reached (the schedules then stay where they were)."""
        if self.schedule_freeze_epoch is None:
            return step
        return min(step, round(self.schedule_freeze_epoch * self.optimizer_steps_per_epoch()))

    def lr_factor(self, step: int) -> float:
        return super().lr_factor(self.scheduled_step(step))

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """The optimizer step with I-JEPA's per-step weight-decay ramp before it and the EMA update after it."""
        step = self.global_step
        total, _ = self.total_and_warmup_steps()
        if self.weight_decay is not None:
            optimizer.param_groups[0]["weight_decay"] = cosine_ramp(
                self.scheduled_step(step), total, *self.weight_decay
            )
            self.log("train/weight_decay", optimizer.param_groups[0]["weight_decay"])
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        momentum = momentum_at(step, total, *self.ema_momentum)
        reshard(self.target_encoder)  # under FSDP2 the EMA runs on the shards
        ema_update_(
            self.target_encoder.parameters(), self.context_encoder.parameters(), self.ema_momentum_held(momentum)
        )
        self.log("train/ema_momentum", momentum)
