"""Axis-aligned blocks of a patch grid as boolean masks or flat row-major patch indices.

A block is given by its top-left corner ``(top, left)`` and its size ``(h, w)`` in patches; patch
``(row, col)`` of an H×W grid has flat index ``row · W + col``, the order in which a ViT's patch
embedding flattens the grid. Every function works on any leading batch shape and on the device
of its input.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rectangle_indices(corners: Tensor, size: tuple[int, int], grid_width: int) -> Tensor:
    """Sorted flat indices ``(..., h·w)`` of ``size`` blocks with top-left ``corners (..., 2)``."""
    h, w = size
    rows = torch.arange(h, device=corners.device)
    cols = torch.arange(w, device=corners.device)
    offsets = (rows[:, None] * grid_width + cols).flatten()
    starts = corners[..., 0] * grid_width + corners[..., 1]
    return starts[..., None] + offsets


def indices_to_mask(indices: Tensor, grid: tuple[int, int]) -> Tensor:
    """Boolean masks ``(B, H, W)``, True at the flat patch ``indices (B, K)`` of each row."""
    height, width = grid
    mask = torch.zeros(indices.shape[0], height * width, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices, True).view(-1, height, width)
