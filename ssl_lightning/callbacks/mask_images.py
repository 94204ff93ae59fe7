"""See what I-JEPA / FlexPredict mask: an image grid of context and target blocks in TensorBoard.

Masking bugs (one mask for the whole batch, targets inside the context, an unreachable last row)
are easy to see and hard to infer from a loss curve. The callback reads the masks the method used
for its last training batch (``pl_module.last_masks``); it runs no forward pass and draws no
masks of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchvision.utils import make_grid

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.masks import PAD_INDEX
from ssl_lightning.methods.ijepa import first_view

TARGET_COLOURS = torch.tensor(
    [[1.0, 0.2, 0.2], [0.2, 0.6, 1.0], [1.0, 0.8, 0.1], [0.3, 0.9, 0.3], [0.8, 0.3, 1.0], [0.1, 0.9, 0.9]]
)
"""RGB colours of target blocks 0, 1, 2, ... (cycled when there are more blocks)."""

OUTSIDE_BRIGHTNESS = 0.25
"""Brightness of pixels that are in no mask (neither context nor target)."""


def mask_overlay(
    images: Tensor, context_idx: Tensor, target_idx: Sequence[Tensor], grid: tuple[int, int], opacity: float = 0.5
) -> Tensor:
    """RGB pictures ``(B, 3, H, W)`` in [0, 1] of each image's masks.

    Context patches show the image, patches outside every mask are dimmed, and target block ``t``
    is tinted with ``TARGET_COLOURS[t]`` (on top of the context where they overlap).

    Args:
        images: ``(B, C, H, W)``, any value range (each image is rescaled to [0, 1]); one channel
            is shown as grey, more than three are averaged to grey.
        context_idx: ``(B, Kc)`` flat row-major patch indices of the contexts; entries
            :data:`~ssl_lightning.masks.PAD_INDEX` (``full_context`` padding) mark no patch.
        target_idx: one ``(B, Kt)`` index tensor per target block.
        grid: the patch grid ``(rows, columns)`` the indices refer to; it must divide the image size.
        opacity: weight of the target colours.
    """
    batch, channels, height, width = images.shape
    if height % grid[0] or width % grid[1]:
        raise ConfigurationError(f"The {grid} patch grid does not divide {height}×{width} images.")
    pictures = images.detach().float()
    if channels != 3:
        pictures = pictures.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    low = pictures.amin(dim=(1, 2, 3), keepdim=True)
    high = pictures.amax(dim=(1, 2, 3), keepdim=True)
    pictures = (pictures - low) / (high - low).clamp_min(1e-8)

    def to_pixels(indices: Tensor) -> Tensor:  # (B, K) patch indices → (B, 1, H, W) float mask
        real = indices != PAD_INDEX  # the padding of full_context contexts covers no patch
        covered = pictures.new_zeros(batch, grid[0] * grid[1])
        covered.scatter_reduce_(1, indices.where(real, 0), real.float(), "amax")
        return F.interpolate(covered.view(batch, 1, *grid), size=(height, width), mode="nearest")

    pictures = pictures * (OUTSIDE_BRIGHTNESS + (1 - OUTSIDE_BRIGHTNESS) * to_pixels(context_idx))
    colours = TARGET_COLOURS.to(pictures.device)
    for block, indices in enumerate(target_idx):
        colour = colours[block % len(colours)].view(1, 3, 1, 1).expand(batch, -1, height, width)
        pictures = torch.lerp(pictures, colour, opacity * to_pixels(indices))
    return pictures


class MaskVisualization(Callback):
    """Log the context/target masks of a training batch to TensorBoard as one image grid.

    Works with methods that keep the masks of their last training step in ``last_masks`` as
    ``(context_idx, target_idx)`` and their patch grid in ``mask_sampler.grid``
    (:class:`~ssl_lightning.methods.IJEPA`, :class:`~ssl_lightning.methods.FlexPredict`). Logs
    under ``tag`` after the first optimizer step and every ``every_n_steps`` steps after it, on
    global rank 0; see :func:`mask_overlay` for the colours.

    Args:
        every_n_steps: optimizer steps between two logged grids.
        max_images: images of the batch to show.
        min_side: small images are enlarged (nearest neighbour) to at least this many pixels so
            the patches stay visible.
        tag: TensorBoard image tag.
    """

    def __init__(self, every_n_steps: int = 500, max_images: int = 16, min_side: int = 96, tag: str = "masks") -> None:
        if every_n_steps < 1 or max_images < 1:
            raise ConfigurationError(f"every_n_steps and max_images must be ≥ 1, got {every_n_steps} and {max_images}")
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.min_side = min_side
        self.tag = tag
        self._last_logged_step: int | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last_logged_step or (step - 1) % self.every_n_steps:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None:
            rank_zero_warn("MaskVisualization logs to TensorBoard, but the Trainer has no TensorBoardLogger.")
            return
        self._last_logged_step = step
        logger.experiment.add_image(self.tag, self.mask_grid(pl_module, batch), global_step=step)

    def mask_grid(self, pl_module: LightningModule, batch) -> Tensor:
        """The ``(3, H', W')`` picture grid of the first ``max_images`` images of ``batch``."""
        masks = getattr(pl_module, "last_masks", None)
        if masks is None:
            raise ConfigurationError(
                f"MaskVisualization needs a method that keeps its last masks in `last_masks` (IJEPA, FlexPredict); "
                f"{type(pl_module).__name__} has none."
            )
        context_idx, target_idx = masks
        count = min(self.max_images, len(context_idx))
        images = first_view(batch[0])[:count]
        pictures = mask_overlay(
            images, context_idx[:count], [t[:count] for t in target_idx], pl_module.mask_sampler.grid
        )
        scale = max(1, math.ceil(self.min_side / min(pictures.shape[-2:])))
        pictures = F.interpolate(pictures, scale_factor=scale, mode="nearest")
        return make_grid(pictures, nrow=math.ceil(math.sqrt(count)), padding=2, pad_value=1.0)
