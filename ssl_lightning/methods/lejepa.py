"""LeJEPA as a LightningModule (Balestriero & LeCun, arXiv 2511.08544, 2025; SPEC.md §9).

No teacher, no predictor network, no stop-gradient: every view's projection is pulled to the mean
of the global views' projections, and SIGReg keeps the projections' distribution near an isotropic
Gaussian (:mod:`ssl_lightning.losses.sigreg`). One trade-off, λ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from itertools import groupby

import timm
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.losses.sigreg import Grid, LeJEPALoss, check_num_slices, random_directions
from ssl_lightning.methods.base import base_arguments, batchnorm_layers, declared_batch_size
from ssl_lightning.methods.joint_embedding import JointEmbeddingMethod
from ssl_lightning.seeding import derive_seed

VIT_MODULES = ("vision_transformer", "deit")
"""timm modules whose models take ``dynamic_img_size`` (ViTs that can read local crops at their own size)."""


def is_timm_vit(name: str) -> bool:
    return any(name in timm.list_models(module=module) for module in VIT_MODULES)


def patch_size(backbone: nn.Module) -> int | None:
    """A timm ViT's patch side (``patch_embed.patch_size``), ``None`` for other backbones."""
    size = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)
    return None if size is None else int(size[0] if isinstance(size, (tuple, list)) else size)


@contextmanager
def running_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Inside, the BatchNorm layers of ``module`` still normalise with the batch's statistics but leave
    their running mean and variance (what evaluation uses) as they are: momentum 0, restored on exit."""
    norms = batchnorm_layers(module)
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


class LeJEPA(JointEmbeddingMethod):
    """LeJEPA: λ · SIGReg + (1 − λ) · prediction on the projections of several views of each image.

    backbone → embedding ``e`` (what the probes see: the first global view's, detached, no extra
    forward) → projector (Linear-BN-ReLU, Linear-BN-ReLU, Linear) → ``z``; both loss terms act on ``z``.
    Each view is forwarded once: the views of one size go through the backbone together (globals, then
    locals), and the projector sees all views at once. A timm ViT named by ``backbone`` is built with
    ``dynamic_img_size=True``, so local crops enter at their own size (a multiple of the patch size).

    Intentional differences from the official minimal example (``MINIMAL.md``), documented in
    docs/fidelity.md: the probes read the pooled backbone features (timm ``num_classes=0``) where the
    example adds a linear layer to 512 dimensions in front of the projector and probes that; the slice
    directions are drawn from a seed of (run seed, global step) instead of the global RNG, so that every
    rank draws the same ones and a resumed run draws what an uninterrupted one would.

    Args:
        backbone: timm model name or ``nn.Module`` returning ``(B, D)`` features.
        projector_dims: the projector's linear layers (paper: 2048-2048-K; K = 64 in the paper's
            ablation, 16 in the official small-data run).
        sigreg_weight: λ in [0, 1] (paper: 0.05; official small-data run: 0.02).
        num_slices: M, random directions per step (SPEC: 1024; the paper's Algorithm 1: 256).
        knots: quadrature knots of the Epps–Pulley integral (odd; 17).
        quadrature_grid: ``"official"`` ([0, 3], doubled) or ``"paper"`` ([−5, 5]).
        num_global_views: how many leading views are global; ``None`` = the leading views at the
            first view's size (all views when they have one size, as for CNNs in the paper).
        in_chans, image_size: input images (linked from the DataModule by the CLI).
        small_image_stem: 3×3 ResNet stem without max-pool; ``None`` = automatic for ≤ 64 px.
        backbone_kwargs: extra ``timm.create_model`` arguments (e.g. ``img_size``, ``drop_path_rate``).
        optimizer, warmup_epochs, warmup_steps, warmup_start_factor, final_lr_factor, lr_reference_batch_size,
            compile, compile_options, channels_last, init_from: see :class:`SSLMethod`.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        projector_dims: Sequence[int] = (2048, 2048, 64),
        sigreg_weight: float = 0.05,
        num_slices: int = 1024,
        knots: int = 17,
        quadrature_grid: Grid = "official",
        num_global_views: int | None = None,
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
        if num_global_views is not None and (not isinstance(num_global_views, int) or num_global_views < 2):
            raise ConfigurationError(
                f"LeJEPA needs at least 2 global views (its prediction target is their mean), got "
                f"num_global_views={num_global_views!r}"
            )
        if isinstance(backbone, str) and is_timm_vit(backbone):
            backbone_kwargs = {"dynamic_img_size": True, **(backbone_kwargs or {})}
        self.build_networks(
            backbone, in_chans, image_size, small_image_stem, backbone_kwargs, projector_dims, projector_bias=True
        )
        self.loss_fn = LeJEPALoss(sigreg_weight, knots, quadrature_grid)
        check_num_slices(num_slices)
        self.num_slices = num_slices
        self.num_global_views = num_global_views
        self.patch_size = patch_size(self.backbone)
        self._checked_sizes: set[tuple[int, ...]] = set()

    def check_batch_size(self, dataloader, world_size: int) -> None:
        """SIGReg compares a distribution over the global batch, so it needs at least 2 images there
        (the BatchNorm layers see every view of them, so they need no more)."""
        size = declared_batch_size(dataloader)
        if size is not None and size * world_size < 2:
            raise ConfigurationError(
                f"LeJEPA: a global batch of {size * world_size} image is too small for SIGReg, which compares the "
                "distribution of the batch's projections with a Gaussian. Raise the batch size "
                "(--data.init_args.batch_size, at least 2 over all devices)."
            )

    def global_view_count(self, views: list[Tensor]) -> int:
        """The number of leading global views: ``num_global_views``, or those at the first view's size.
        Checks, once per distinct list of view sizes, that there are at least 2 and that a ViT's
        patch size divides every view's side."""
        sizes = tuple(view.shape[-1] for view in views)
        leading = next((index for index, size in enumerate(sizes) if size != sizes[0]), len(sizes))
        count = self.num_global_views or leading
        if sizes not in self._checked_sizes:
            if len(views) < count or count < 2:
                raise ConfigurationError(
                    f"LeJEPA needs at least 2 global views per image, but the batch has {len(views)} views of sizes "
                    f"{list(sizes)} and {count} global. Use views=MultiCropViews(num_global=2, ...) (globals first)."
                )
            if self.patch_size and any(
                view.shape[-1] % self.patch_size or view.shape[-2] % self.patch_size for view in views
            ):
                raise ConfigurationError(
                    f"LeJEPA: the ViT's patch size {self.patch_size} does not divide every view's side {list(sizes)}. "
                    f"Choose crop sizes that are multiples of {self.patch_size} (MultiCropViews' global_size/local_size)."
                )
            self._checked_sizes.add(sizes)
        return count

    def embed_views(self, views: list[Tensor]) -> Tensor:
        """``(V·N, D)`` backbone embeddings of the views, view-major: one backbone pass per run of
        same-size views. Only the first pass (the global views) updates a BatchNorm backbone's running
        statistics: evaluation sees full-size images, and with the statistics of the small local crops
        mixed in, the online probe of a 200-step Fashion-MNIST run (2 global + 4 local views) read 45.7%
        on the validation images instead of 59.1% (the same training; 67.1% with the 2 global views alone)."""
        embeddings = []
        for index, (_, group) in enumerate(groupby(views, key=lambda view: tuple(view.shape[-2:]))):
            with nullcontext() if index == 0 else running_statistics_frozen(self.backbone):
                embeddings.append(self.backbone(torch.cat(list(group))))
        return torch.cat(embeddings)

    def slice_directions(self, dim: int, device: torch.device) -> Tensor:
        """This step's ``(dim, num_slices)`` unit directions, from a seed of (run seed, global step):
        the same on every rank, and redrawn every step."""
        generator = torch.Generator(device=device).manual_seed(derive_seed(self.run_seed or 0, self.global_step))
        return random_directions(dim, self.num_slices, generator)

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        views, _ = batch
        self.check_views(views, 2, type(self).__name__)
        num_global = self.global_view_count(views)
        batch_size = views[0].shape[0]
        embeddings = self.embed_views(views)
        projections = self.projector(embeddings).reshape(len(views), batch_size, -1)
        directions = self.slice_directions(projections.shape[-1], projections.device)
        loss, terms = self.loss_fn(projections, num_global, directions)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{name}": value for name, value in terms.items()})
        return {"loss": loss, "features": embeddings[:batch_size].detach()}
