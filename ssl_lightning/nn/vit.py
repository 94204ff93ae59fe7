"""Masked ViT encoder for JEPA methods: a timm ``VisionTransformer`` that encodes only kept patches."""

from __future__ import annotations

from typing import Any

import timm
from timm.models import is_model_in_modules
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ssl_lightning.errors import ConfigurationError
from ssl_lightning.nn.pos_embed import sincos_pos_embed_2d

# What makes a timm ViT the I-JEPA encoder trunk: no class token, no pooling, no classifier, no
# learned positions (fixed sin-cos ones are added by the wrapper), inputs of any size that the
# patch size divides (patch tokens come out as (B, H, W, D)).
JEPA_VIT_ARGS: dict[str, Any] = {
    "class_token": False,
    "global_pool": "",
    "num_classes": 0,
    "pos_embed": "none",
    "dynamic_img_size": True,
}


def gather_tokens(tokens: Tensor, idx: Tensor) -> Tensor:
    """Select tokens per sample: ``tokens`` ``(B, N, D)``, ``idx`` ``(B, K)`` → ``(B, K, D)``."""
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.size(-1)))


def run_blocks(blocks: nn.Sequential, x: Tensor, padding: Tensor | None = None) -> Tensor:
    """Transformer ``blocks`` over tokens ``x`` ``(B, K, D)``, never attending to a padded token.

    Without ``padding`` this is ``blocks(x)``. With ``padding`` ``(B, K)`` bool, True at padded
    tokens (the contexts of :class:`~ssl_lightning.masks.MultiBlockMaskSampler` with
    ``full_context=True``), every timm ``Block`` gets the attention mask ``(B, 1, 1, K)``, True
    where a key may be attended to, which timm passes to ``F.scaled_dot_product_attention`` or,
    unfused, turns into an additive ``-inf`` bias: padded keys get zero weight, so the real
    tokens' outputs do not depend on what the padded ones hold. Padded queries still attend to
    the real keys, so as long as every row has a real token no softmax row is empty (NaN); their
    outputs are meaningless and must be ignored.
    """
    if padding is None:
        return blocks(x)
    attn_mask = ~padding[:, None, None, :]
    for block in blocks:
        x = block(x, attn_mask=attn_mask)
    return x


class MaskedViTEncoder(nn.Module):
    """ViT encoder of I-JEPA (Assran et al., arXiv 2301.08243, Sec. 3) that can see a subset of patches.

    The context encoder embeds *all* patches, adds the fixed 2-D sin-cos positions
    (:func:`~ssl_lightning.nn.pos_embed.sincos_pos_embed_2d`), then keeps only the context
    patches before the transformer blocks; the target encoder sees every patch. The backbone is
    timm's ``VisionTransformer``, built with :data:`JEPA_VIT_ARGS`, and kept as ``self.vit``:
    ``encoder.vit.state_dict()`` loads unchanged into
    ``timm.create_model(name, pretrained=False, **JEPA_VIT_ARGS)``. The sin-cos table is a
    non-persistent buffer (rebuilt on construction, moved by ``.to()``), so the wrapper adds no
    state of its own; a timm model used without this wrapper must add the table itself.

    Args:
        model_name: a ViT from timm's ``vision_transformer`` module (e.g. ``"vit_base_patch16_224"``,
            ``"vit_huge_patch14_224"``), created without pretrained weights; ``None`` builds timm's
            ``VisionTransformer`` from the sizes below (its defaults are ViT-B/16 at 224 px).
        img_size: training image size, ``int`` or ``(height, width)``.
        patch_size: patch side in pixels; must divide both image sides.
        in_chans: image channels.
        embed_dim, depth, num_heads: transformer width, number of blocks, attention heads.
        **vit_kwargs: further ``VisionTransformer`` arguments (``drop_path_rate``, ``qkv_bias``, ...).
            Those in :data:`JEPA_VIT_ARGS` are fixed.
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        img_size: int | tuple[int, int] | None = None,
        patch_size: int | None = None,
        in_chans: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        **vit_kwargs: Any,
    ) -> None:
        super().__init__()
        sizes = {
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
        }
        vit_kwargs |= {key: value for key, value in sizes.items() if value is not None}
        vit_kwargs |= JEPA_VIT_ARGS
        if model_name is None:
            self.vit = VisionTransformer(**vit_kwargs)
        elif is_model_in_modules(model_name, "vision_transformer"):
            self.vit = timm.create_model(model_name, pretrained=False, **vit_kwargs)
        else:
            raise ConfigurationError(
                f"{model_name!r} is not a ViT of timm's vision_transformer module; use a name from "
                "timm.list_models(module='vision_transformer'), e.g. 'vit_base_patch16_224'."
            )
        if self.vit.num_prefix_tokens:
            raise ConfigurationError(f"{model_name!r} has register tokens, which the JEPA encoder does not use.")
        image_hw, patch_hw = self.vit.patch_embed.img_size, self.vit.patch_embed.patch_size
        if any(side % patch for side, patch in zip(image_hw, patch_hw)):
            raise ConfigurationError(f"Image size {image_hw} is not divisible by the patch size {patch_hw}.")
        self.register_buffer("pos_embed", sincos_pos_embed_2d(self.grid_size, self.embed_dim), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_heads(self) -> int:
        """Attention heads per block (I-JEPA's predictor uses the same number)."""
        return self.vit.blocks[0].attn.num_heads

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch rows and columns at the construction image size."""
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def num_patches(self) -> int:
        return self.vit.patch_embed.num_patches

    def forward(self, images: Tensor, keep_idx: Tensor | None = None, padding: Tensor | None = None) -> Tensor:
        """Encode ``images`` ``(B, C, H, W)``.

        Args:
            images: a batch of images; any size divisible by the patch size (positions of other
                grids than ``grid_size`` are computed on the fly).
            keep_idx: ``(B, K)`` flat row-major patch indices to encode, or ``None`` for all patches.
            padding: ``(B, K)`` bool, True at the slots of ``keep_idx`` that only pad a row to
                ``K`` (their index, e.g. :data:`~ssl_lightning.masks.PAD_INDEX`, is ignored):
                no token attends to them (:func:`run_blocks`). ``None``: every slot is real, and
                the blocks run without an attention mask.

        Returns:
            ``(B, K, embed_dim)`` (or ``(B, N, embed_dim)``) features after the final LayerNorm;
            the rows of padded slots hold meaningless values.
        """
        patches = self.vit.patch_embed(images)  # (B, h, w, D)
        x = patches.flatten(1, 2) + self._pos_embed_for(patches.shape[1:3])
        x = self.vit.pos_drop(x)
        if keep_idx is not None:
            x = gather_tokens(x, keep_idx if padding is None else keep_idx.masked_fill(padding, 0))
        x = self.vit.norm_pre(x)
        x = run_blocks(self.vit.blocks, x, padding)
        return self.vit.norm(x)

    def _pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        return sincos_pos_embed_2d(grid, self.embed_dim, device=self.pos_embed.device, dtype=self.pos_embed.dtype)
