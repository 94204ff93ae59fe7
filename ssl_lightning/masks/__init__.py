"""Vectorized I-JEPA multi-block masks (Assran et al., arXiv 2301.08243) and mask helpers."""

from ssl_lightning.masks.block_size import block_size, possible_block_sizes
from ssl_lightning.masks.multiblock import PAD_INDEX, MultiBlockLayout, MultiBlockMaskSampler
from ssl_lightning.masks.rectangles import indices_to_mask, rectangle_indices

__all__ = [
    "PAD_INDEX",
    "MultiBlockLayout",
    "MultiBlockMaskSampler",
    "block_size",
    "indices_to_mask",
    "possible_block_sizes",
    "rectangle_indices",
]
