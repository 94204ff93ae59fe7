"""I-JEPA multi-block mask sampler, vectorized over the batch (Assran et al., arXiv 2301.08243).

I-JEPA predicts, from one large *context* block of an image's patches, the representations of
several *target* blocks of the same image (paper §3, Fig. 4). Per batch, one target size and one
context size are drawn (:mod:`ssl_lightning.masks.block_size`); per image, every block gets its
own uniformly drawn top-left corner; the targets are then removed from the context block. All of
it is tensor operations over the batch, so it can run inside the training step instead of a
DataLoader worker's per-image Python loop (SPEC.md §1); the methods draw on the host
(:meth:`MultiBlockMaskSampler.sample_on_host`), so that the step never waits for the device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.masks.block_size import Size, block_size, lerp
from ssl_lightning.masks.rectangles import indices_to_mask, rectangle_indices
from ssl_lightning.masks.validation import (
    ContextSubset,
    CornerRange,
    check_feasible,
    check_grid,
    check_int,
    check_range,
    sampling_options,
)

PAD_INDEX = -1
"""The patch index that pads a context to the batch's longest with ``full_context=True``.

The context encoder and the predictor never attend to a padded slot
(:class:`~ssl_lightning.nn.MaskedViTEncoder`, :class:`~ssl_lightning.nn.JEPAPredictor`).
"""


class MultiBlockLayout(NamedTuple):
    """The blocks drawn for one batch: the seam between drawing blocks and listing patch indices.

    Corners are ``(top, left)`` in patches. ``context_mask`` is the context block minus the target
    blocks (unless ``allow_overlap``), before the per-batch truncation to a common length (or the
    padding with ``full_context``).
    """

    grid: Size
    target_size: Size
    context_size: Size
    target_corners: Tensor  # (B, num_targets, 2) long
    context_corners: Tensor  # (B, 2) long
    context_mask: Tensor  # (B, H, W) bool


def _check_full_context(full_context: bool, reference: bool, context_subset: ContextSubset | None) -> None:
    """Reject ``full_context`` together with an option that it contradicts, as
    :func:`~ssl_lightning.masks.validation.sampling_options` rejects contradicting options."""
    if type(full_context) is not bool:
        raise ConfigurationError(f"full_context must be True or False, got {full_context!r}.")
    if full_context and reference:
        raise ConfigurationError(
            "full_context=True keeps every context patch, but reference=True (IJEPA: "
            "reference_masks=True) reproduces the official code exactly, which cuts every context "
            "to the batch's shortest. Drop one of the two."
        )
    if full_context and context_subset is not None:
        raise ConfigurationError(
            f"context_subset={context_subset!r} chooses the patches that survive the cut to the "
            "batch's shortest context, but full_context=True cuts nothing. Leave context_subset unset."
        )


class MultiBlockMaskSampler:
    """Context and target patch indices for a batch, as in I-JEPA's multi-block masking.

    Defaults are the official recipe (paper §3 and Appendix C): 4 target blocks of scale
    (0.15, 0.2) and aspect ratio h/w in (0.75, 1.5); one context block of scale (0.85, 1.0) and
    aspect 1; targets removed from the context; every mask keeps more than ``min_keep=10`` patches.

    ``sampler(batch_size, device=..., generator=...)`` returns ``(context_idx, target_idx)``: a
    long tensor ``(B, Kc)`` and a list of ``num_targets`` long tensors ``(B, Kt)`` of flat
    row-major patch indices (``row · W + col``), each row sorted ascending. All target blocks of a
    batch share one size, so ``Kt = h·w`` needs no truncation. Contexts differ in length once the
    targets are removed; each is cut to the batch's shortest (see ``context_subset``), as in the
    official code. The shortest of a batch can be far below the typical context, and more so the
    larger the batch and the smaller the grid: with the default blocks and 64 images, 14×14
    contexts average about 81 patches but keep 53, 7×7 ones (``min_keep=3``) 16 but keep 9.
    ``full_context=True`` throws none away: each row holds all of its image's context, sorted
    ascending, and is padded at its end to the batch's longest context ``Kc`` with
    :data:`PAD_INDEX`, which the encoder and the predictor never attend to. Randomness
    comes from ``generator`` only (or the device's default generator), so a seeded generator
    reproduces the masks; the tensors live on ``device`` (default: the generator's device, else CPU).

    The official code (facebookresearch/ijepa) differs from this sampler in three ways, each one
    an option of its own (``None``: follow ``reference``):

    - ``corner_range``: ``"full"`` (default) draws top-left corners from ``[0, H - h]``, so every
      patch can be covered; ``"official"`` draws them from ``[0, H - h)``, as the official code
      does, so the last patch row and column are never covered (an upstream bug, PRs #40/#59).
    - ``shared_size_draw``: ``False`` (default) draws a block's scale and aspect ratio
      independently, as the paper describes; ``True`` reuses one uniform number for both, as the
      official code does, so a large block is always a tall one and only the block shapes of the
      official runs occur (on 14×14: 5×6, 6×6, 6×5, 7×5, 8×5; SPEC.md §1).
    - ``context_subset``: ``"random"`` (default) cuts a context by keeping a uniformly random
      subset of its patches (then sorted), so no region of the image is favoured; ``"first"`` keeps
      its first ``Kc`` indices in row-major order, as the official code does, which favours the
      top rows (upstream issue #60).

    ``reference=True`` is exactly the official code: the three official values. It rejects an
    explicit non-official value with ``ValueError`` rather than let it override ``reference``; to
    run the official distribution with only the edge fixed, pass ``corner_range="full",
    shared_size_draw=True, context_subset="first"`` (and ``reference=False``).

    If an image's context keeps ``<= min_keep`` patches, all its blocks are redrawn (vectorized
    over the failing images), up to ``max_tries`` draws in total. The official code instead
    redraws only the context and, after 20 failures, lets it overlap one more target each time;
    we never let a target leak into the context. Configurations in which some drawable block
    sizes can never succeed raise ``ValueError`` at construction; if images still fail after
    ``max_tries`` draws, the configuration almost never succeeds and the call raises
    ``ValueError`` rather than looping.

    Args:
        grid_size: patch grid ``(H, W)`` (or ``H`` for a square one); see :meth:`from_image_size`.
        num_targets: target blocks per image.
        target_scale, context_scale: range of the fraction of the grid a block covers.
        target_aspect, context_aspect: range of a block's aspect ratio, rows / columns.
        min_keep: every mask, target or context, must keep more than this many patches (as in
            the official code, where a smaller target block would retry forever).
        allow_overlap: keep the target patches in the context.
        reference: reproduce the official code's sampling exactly (see above).
        corner_range: ``"full"`` or ``"official"`` (last row and column never covered).
        shared_size_draw: one uniform number for a block's scale and aspect (official) or two.
        context_subset: ``"random"`` or ``"first"`` (official) patches kept when cutting contexts.
        full_context: keep every context patch and pad the shorter contexts with
            :data:`PAD_INDEX` instead of cutting all to the shortest (see above). Not the official
            code, so it rejects ``reference=True``; nothing is cut, so it rejects ``context_subset``.
        max_tries: draws per image before giving up with ``ValueError``.
    """

    def __init__(
        self,
        grid_size: int | tuple[int, int],
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        allow_overlap: bool = False,
        reference: bool = False,
        max_tries: int = 20,
        corner_range: CornerRange | None = None,
        shared_size_draw: bool | None = None,
        context_subset: ContextSubset | None = None,
        full_context: bool = False,
    ) -> None:
        self.grid = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        self.num_targets = num_targets
        self.target_scale = tuple(target_scale)
        self.target_aspect = tuple(target_aspect)
        self.context_scale = tuple(context_scale)
        self.context_aspect = tuple(context_aspect)
        self.min_keep = min_keep
        self.allow_overlap = allow_overlap
        self.reference = reference
        self.max_tries = max_tries
        options = sampling_options(
            reference, corner_range=corner_range, shared_size_draw=shared_size_draw, context_subset=context_subset
        )
        self.corner_range: CornerRange = options["corner_range"]
        self.shared_size_draw: bool = options["shared_size_draw"]
        self.context_subset: ContextSubset = options["context_subset"]
        _check_full_context(full_context, reference, context_subset)
        self.full_context = full_context
        check_grid(self.grid)
        check_int("num_targets", num_targets, minimum=1)
        check_int("min_keep", min_keep, minimum=0)
        check_int("max_tries", max_tries, minimum=1)
        check_range("target_scale", self.target_scale, upper=1.0)
        check_range("context_scale", self.context_scale, upper=1.0)
        check_range("target_aspect", self.target_aspect, upper=float("inf"))
        check_range("context_aspect", self.context_aspect, upper=float("inf"))
        check_feasible(
            self.grid,
            self.target_scale,
            self.target_aspect,
            self.context_scale,
            self.context_aspect,
            min_keep,
            allow_overlap,
            self.shared_size_draw,
            self.corner_range,
        )

    @classmethod
    def from_image_size(
        cls, image_size: int | tuple[int, int], patch_size: int | tuple[int, int], **kwargs
    ) -> MultiBlockMaskSampler:
        """A sampler for the patch grid of a ViT with ``patch_size`` on ``image_size`` images."""
        image = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        if any(i % p for i, p in zip(image, patch)):
            raise ConfigurationError(
                f"image_size {image} is not a multiple of patch_size {patch}: the patch grid "
                "would drop pixels. Resize or crop the images to a multiple of the patch size."
            )
        return cls((image[0] // patch[0], image[1] // patch[1]), **kwargs)

    def __call__(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        layout = self.sample_layout(batch_size, device, generator)
        return self.indices(layout, generator)

    def sample_on_host(self, batch_size: int, device: torch.device | str) -> tuple[Tensor, list[Tensor]]:
        """The masks of :meth:`__call__`, drawn on the host from torch's default CPU generator and
        copied to ``device`` without waiting for it: the training step's masks.

        Every value the sampler reads back (the block sizes, which images to redraw, the length the
        contexts are cut or padded to) is then a host value, so drawing the masks never waits for the
        device to finish the previous step's kernels (on a GPU each such read would empty the queue
        the host keeps ahead of the device). The official code draws its masks on the host too, in
        the DataLoader's workers. The copies come from pinned memory, one for the contexts and one
        for all target blocks; on a CPU ``device`` the tensors are the ones drawn. The same seed
        gives the same masks on every device.
        """
        context_idx, target_idx = self(batch_size, device="cpu")
        device = torch.device(device)
        if device.type == "cpu":
            return context_idx, target_idx
        targets = torch.stack(target_idx)
        if device.type == "cuda":
            context_idx, targets = context_idx.pin_memory(), targets.pin_memory()
        context_idx, targets = (t.to(device, non_blocking=True) for t in (context_idx, targets))
        return context_idx, list(targets.unbind(0))

    def sample_layout(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> MultiBlockLayout:
        """Draw block sizes for the batch and accepted block corners for every image."""
        if device is None:
            device = generator.device if generator is not None else "cpu"
        target_size, context_size = self._draw_sizes(device, generator)
        height, width = self.grid
        target_corners = torch.empty(batch_size, self.num_targets, 2, dtype=torch.long, device=device)
        context_corners = torch.empty(batch_size, 2, dtype=torch.long, device=device)
        context_mask = torch.empty(batch_size, height, width, dtype=torch.bool, device=device)
        redraw = torch.arange(batch_size, device=device)
        for _ in range(self.max_tries):
            targets = self._draw_corners((len(redraw), self.num_targets), target_size, generator, device)
            context = self._draw_corners((len(redraw),), context_size, generator, device)
            target_corners[redraw] = targets
            context_corners[redraw] = context
            context_mask[redraw] = self._context_mask(targets, context, target_size, context_size)
            redraw = (context_mask.flatten(1).sum(1) <= self.min_keep).nonzero().squeeze(1)
            if len(redraw) == 0:
                return MultiBlockLayout(
                    self.grid,
                    target_size,
                    context_size,
                    target_corners,
                    context_corners,
                    context_mask,
                )
        (th, tw), (ch, cw) = target_size, context_size
        raise ConfigurationError(
            f"After {self.max_tries} draws, {len(redraw)} of {batch_size} images still keep at "
            f"most min_keep={self.min_keep} context patches once {self.num_targets} target "
            f"blocks of {th}×{tw} are removed from a {ch}×{cw} context block on a {height}×{width} "
            "grid: this configuration almost never leaves enough context. Lower target_scale, "
            "num_targets or min_keep, raise context_scale, or pass allow_overlap=True."
        )

    def indices(
        self, layout: MultiBlockLayout, generator: torch.Generator | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Flat patch indices of a layout: context ``(B, Kc)`` and ``num_targets`` × ``(B, Kt)``."""
        corners = layout.target_corners.transpose(0, 1).contiguous()
        targets = rectangle_indices(corners, layout.target_size, self.grid[1])
        return self._context_indices(layout.context_mask, generator), list(targets.unbind(0))

    def _draw_sizes(self, device: torch.device | str, generator: torch.Generator | None) -> tuple[Size, Size]:
        (target_u, target_aspect_u), (context_u, context_aspect_u) = torch.rand(
            2, 2, device=device, generator=generator
        ).tolist()
        if self.shared_size_draw:  # the official code reuses the scale draw for the aspect ratio
            target_aspect_u, context_aspect_u = target_u, context_u
        target = block_size(self.grid, lerp(self.target_scale, target_u), lerp(self.target_aspect, target_aspect_u))
        context = block_size(
            self.grid,
            lerp(self.context_scale, context_u),
            lerp(self.context_aspect, context_aspect_u),
        )
        return target, context

    def _draw_corners(
        self,
        shape: tuple[int, ...],
        size: Size,
        generator: torch.Generator | None,
        device: torch.device | str,
    ) -> Tensor:
        """Uniform top-left corners ``(*shape, 2)``, in [0, H - h], or [0, H - h) if official."""
        choices = [n - s + (self.corner_range == "full") for n, s in zip(self.grid, size)]
        top, left = (torch.randint(c, shape, generator=generator, device=device) for c in choices)
        return torch.stack((top, left), dim=-1)

    def _context_mask(self, targets: Tensor, context: Tensor, target_size: Size, context_size: Size) -> Tensor:
        width = self.grid[1]
        mask = indices_to_mask(rectangle_indices(context, context_size, width), self.grid)
        if not self.allow_overlap:
            covered = rectangle_indices(targets, target_size, width).flatten(1)
            mask &= ~indices_to_mask(covered, self.grid)
        return mask

    def _context_indices(self, context_mask: Tensor, generator: torch.Generator | None) -> Tensor:
        """Each image's context indices, sorted ascending, cut to the batch's shortest context (or,
        with ``full_context``, all of them, padded at the end to the longest with ``PAD_INDEX``)."""
        kept = context_mask.flatten(1)
        if self.full_context:
            num_patches = kept.shape[1]
            positions = torch.arange(num_patches, device=kept.device).expand(kept.shape)
            # Patches outside the context sort last as num_patches, then become the padding.
            chosen = positions.masked_fill(~kept, num_patches).sort(dim=1).values[:, : int(kept.sum(1).max())]
            return chosen.masked_fill(chosen == num_patches, PAD_INDEX)
        length = int(kept.sum(1).min())
        if self.context_subset == "first":  # official: the first indices in row-major order
            priority = torch.arange(kept.shape[1], device=kept.device, dtype=torch.float).expand(kept.shape)
        else:
            priority = torch.rand(kept.shape, device=kept.device, generator=generator)
        chosen = priority.masked_fill(~kept, float("inf")).topk(length, dim=1, largest=False, sorted=False).indices
        return chosen.sort(dim=1).values
