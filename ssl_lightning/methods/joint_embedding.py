"""The shape shared by the joint-embedding methods (VICReg, Barlow Twins, LeJEPA): one backbone
applied to every view, a projector ("expander") and a loss on the views' embeddings. The training
step here is the two-view one; LeJEPA overrides it for its V views."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.nn.backbone import create_backbone
from ssl_lightning.nn.projector import projector_mlp


class JointEmbeddingMethod(SSLMethod):
    """backbone → pooled features ``h`` (what the probes see) → projector → ``z`` → ``loss_fn(z1, z2)``.

    Subclasses call :meth:`build_networks` and set ``self.loss_fn``, a module returning
    ``(loss, {term: value})``; the terms are logged as ``train/<term>``.
    """

    backbone: nn.Module
    projector: nn.Module
    loss_fn: nn.Module

    def build_networks(
        self,
        backbone: str | nn.Module,
        in_chans: int,
        image_size: int,
        small_image_stem: bool | None,
        backbone_kwargs: dict | None,
        projector_dims: Sequence[int],
        projector_bias: bool,
        projector_last_bias: bool | None = None,
    ) -> None:
        """Create ``self.backbone`` (see :func:`create_backbone`) and ``self.projector`` on its features."""
        self.backbone, self.feature_dim = create_backbone(
            backbone, in_chans, image_size, small_image_stem, backbone_kwargs
        )
        self.projector = projector_mlp(
            self.feature_dim, list(projector_dims), bias=projector_bias, last_bias=projector_last_bias
        )

    def weight_parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.backbone, "projector": self.projector}

    def compiled_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projector, self.loss_fn]

    def forward(self, images: Tensor) -> Tensor:
        """Pooled backbone features of ``images``."""
        return self.backbone(images)

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        views, _ = batch
        self.check_views(views, 2, type(self).__name__)
        h1, h2 = self.backbone(views[0]), self.backbone(views[1])
        loss, terms = self.loss_fn(self.projector(h1), self.projector(h2))
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{name}": value for name, value in terms.items()})
        return {"loss": loss, "features": h1.detach()}

    def validation_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        images, _ = batch
        return {"features": self.backbone(images)}
