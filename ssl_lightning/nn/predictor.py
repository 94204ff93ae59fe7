"""JEPA predictors: I-JEPA's narrow ViT predictor and FlexPredict's stochastic-position variant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, calculate_drop_path_rates, to_2tuple, trunc_normal_
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.nn.pos_embed import sincos_pos_embed_2d
from ssl_lightning.nn.vit import run_blocks


class JEPAPredictor(nn.Module):
    """I-JEPA predictor (Assran et al., arXiv 2301.08243, Sec. 3 "Predictor").

    For one image with context features ``s_x`` at positions ``C`` and one target block at
    positions ``T``, the predictor runs a narrow ViT over ``[B·s_x + ψ_C ; m + ψ_T]``, where ``B``
    is the input projection ``Linear(enc_dim → pred_dim)``, ``ψ`` the fixed 2-D sin-cos positions
    and ``m`` one shared learned mask token; after the final LayerNorm it keeps the outputs of the
    target tokens and projects them back to ``enc_dim``.

    Each target block is its own sequence: the context is repeated once per block along the
    batch axis and all blocks run in one batched call, so tokens of different target blocks never
    attend to each other. The padding of contexts padded to a common length (``context_padding``,
    from the sampler's ``full_context``) is masked out of the attention of every token, context
    and target alike (:func:`~ssl_lightning.nn.vit.run_blocks`). Subclasses change only the target
    tokens, by overriding :meth:`target_tokens` (and setting ``uses_mask_token = False`` when they
    do not need ``m``).

    Args:
        enc_dim: encoder width (features in and predictions out).
        grid_size: patch grid ``H`` or ``(H, W)`` the indices refer to.
        pred_dim: predictor width (384 in I-JEPA).
        pred_depth: number of transformer blocks (6 for ViT-B, 12 for ViT-L/H in I-JEPA).
        num_heads: attention heads per block; I-JEPA uses the encoder's.
        mlp_ratio, qkv_bias, drop_path_rate: as in timm's ``Block``/``VisionTransformer``.
    """

    uses_mask_token: ClassVar[bool] = True

    def __init__(
        self,
        enc_dim: int,
        grid_size: int | tuple[int, int],
        *,
        pred_dim: int = 384,
        pred_depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid_size = to_2tuple(grid_size)
        self.input_proj = nn.Linear(enc_dim, pred_dim)
        # (1, 1, pred_dim) as in the official code, whose optimizer decays every parameter of more
        # than one dimension: the mask token is weight-decayed like the weights (0.04 → 0.4).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim)) if self.uses_mask_token else None
        self.register_buffer("pos_embed", sincos_pos_embed_2d(self.grid_size, pred_dim), persistent=False)
        self.blocks = nn.Sequential(
            *(
                Block(pred_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate)
                for rate in calculate_drop_path_rates(drop_path_rate, pred_depth)
            )
        )
        self.norm = LayerNorm(pred_dim)
        self.output_proj = nn.Linear(pred_dim, enc_dim)
        self.apply(init_weights_vit_timm)
        if self.mask_token is not None:
            trunc_normal_(self.mask_token, std=0.02)

    def target_tokens(self, target_pos_embed: Tensor) -> Tensor:
        """Input tokens of the target positions, ``(N, Kt, pred_dim)`` from their sin-cos ``ψ_T``.

        The extension point of JEPA predictors; I-JEPA's token is the shared mask token plus ``ψ_T``.
        """
        return target_pos_embed + self.mask_token

    def forward(
        self,
        context_tokens: Tensor,
        context_idx: Tensor,
        target_idx: Sequence[Tensor],
        context_padding: Tensor | None = None,
    ) -> Tensor:
        """Predict the encoder features of every target block.

        Args:
            context_tokens: ``(B, Kc, enc_dim)`` context-encoder output.
            context_idx: ``(B, Kc)`` flat row-major patch indices of the context tokens.
            target_idx: one ``(B, Kt)`` index tensor per target block (all of the same ``Kt``).
            context_padding: ``(B, Kc)`` bool, True at context slots that only pad a row to ``Kc``
                (their index and token are ignored; see
                :class:`~ssl_lightning.nn.MaskedViTEncoder`), or ``None`` when all are real.

        Returns:
            ``(len(target_idx)·B, Kt, enc_dim)`` predictions in block-major order: row
            ``t·B + b`` is target block ``t`` of image ``b`` (i.e. ``torch.cat`` of the per-block
            predictions along dim 0).
        """
        num_blocks, (batch, num_context) = len(target_idx), context_idx.shape
        positions = context_idx if context_padding is None else context_idx.masked_fill(context_padding, 0)
        context = self.input_proj(context_tokens) + self.pos_embed[positions]
        targets = self.target_tokens(self.pos_embed[torch.cat(list(target_idx))])
        # One sequence per target block: the context, broadcast over the blocks (no copy before the
        # concatenation), then the block's target tokens; rows block-major, as torch.cat(dim=0) of the blocks.
        context = context.expand(num_blocks, *context.shape)
        x = torch.cat([context, targets.unflatten(0, (num_blocks, batch))], dim=2).flatten(0, 1)
        padding = None
        if context_padding is not None:  # target tokens are never padding
            padding = F.pad(context_padding.repeat(num_blocks, 1), (0, targets.size(1)), value=False)
        x = run_blocks(self.blocks, x, padding)
        return self.output_proj(self.norm(x[:, num_context:]))


class StochasticPositionPredictor(JEPAPredictor):
    """FlexPredict / StoP predictor (Bar et al., arXiv 2308.00566, Sec. 3): stochastic target positions.

    Target token ``j`` is ``ψ_j + A·n_j`` with ``n_j ~ N(0, noise_std² I)`` in *encoder* space,
    drawn per token, per target block and per call in training mode; ``A`` is the input projection
    that also maps context features into the predictor (weight tying, bias included, so the bias
    plays the role of the mask token, which is not used). In eval mode ``n_j = 0`` and the token is
    ``ψ_j`` plus that bias. Context tokens get no noise.

    Args:
        noise_std: standard deviation σ of ``n_j`` (the reference code's value; the paper writes σ
            as a variance): 0.25 for ViT-B/L, 0.2 for ViT-H.
        **kwargs: :class:`JEPAPredictor` arguments.
    """

    uses_mask_token: ClassVar[bool] = False

    def __init__(
        self, enc_dim: int, grid_size: int | tuple[int, int], *, noise_std: float = 0.25, **kwargs: Any
    ) -> None:
        if noise_std < 0:
            raise ConfigurationError(f"noise_std must be non-negative, got {noise_std}")
        super().__init__(enc_dim, grid_size, **kwargs)
        self.noise_std = noise_std

    def target_tokens(self, target_pos_embed: Tensor) -> Tensor:
        noise = target_pos_embed.new_zeros(*target_pos_embed.shape[:-1], self.input_proj.in_features)
        if self.training:
            noise.normal_(std=self.noise_std)
        return target_pos_embed + self.input_proj(noise)
