"""Fixed 2-D sine-cosine positional embeddings for a grid of image patches."""

from __future__ import annotations

import torch
from timm.layers import to_2tuple
from torch import Tensor

from ssl_lightning.errors import ConfigurationError


def sincos_pos_embed_2d(
    grid_size: int | tuple[int, int],
    embed_dim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fixed (not learned) 2-D sine-cosine table used by I-JEPA's encoder and predictor.

    I-JEPA (Assran et al., arXiv 2301.08243, Sec. 3) uses the MAE-style 2-D extension of the
    Transformer's sinusoidal positions. For the patch in row ``y`` and column ``x`` of an
    ``H × W`` grid, with ``ω_i = 10000^(−i / (D/4))`` for ``i = 0 … D/4 − 1``::

        e(y, x) = [sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω)]     (each block D/4 channels)

    Args:
        grid_size: ``H`` (square grid) or ``(H, W)``: patch rows and columns.
        embed_dim: channels ``D``; must be divisible by 4.
        device: where to build the table.
        dtype: dtype of the returned table (it is computed in float64).

    Returns:
        ``(H·W, D)`` tensor, rows in row-major patch order (index ``y·W + x``), the order of
        timm's flattened patch embedding.
    """
    if embed_dim % 4 != 0:
        raise ConfigurationError(f"embed_dim must be divisible by 4 for a 2-D sin-cos embedding, got {embed_dim}")
    height, width = to_2tuple(grid_size)
    quarter = embed_dim // 4
    omega = 10000.0 ** (-torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float64),
        torch.arange(width, device=device, dtype=torch.float64),
        indexing="ij",
    )
    x_angles = cols.reshape(-1, 1) * omega  # (H·W, D/4)
    y_angles = rows.reshape(-1, 1) * omega
    table = torch.cat([x_angles.sin(), x_angles.cos(), y_angles.sin(), y_angles.cos()], dim=1)
    return table.to(dtype)
