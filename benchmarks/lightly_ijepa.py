"""lightly's I-JEPA predictor behind our predictor's interface, for the throughput comparison.

Only used when the ``lightly`` package is installed. The module keeps our encoders, masks and loss,
so the comparison isolates the predictor (the part both libraries build on timm blocks); the mask
samplers are compared separately by ``benchmarks/masks.py``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssl_lightning.nn import JEPAPredictor


class LightlyIJEPAPredictor(nn.Module):
    """lightly's ``IJEPAPredictorTIMM`` sized like ``ours`` and called like a :class:`JEPAPredictor`
    (both return the predictions of all target blocks stacked block-major). Square grids only:
    lightly builds its sin-cos table for a square grid."""

    def __init__(self, ours: JEPAPredictor) -> None:
        from lightly.models.modules.ijepa_timm import IJEPAPredictorTIMM

        super().__init__()
        height, width = ours.grid_size
        if height != width:
            raise ValueError(f"lightly's I-JEPA predictor needs a square patch grid, got {ours.grid_size}")
        self.predictor = IJEPAPredictorTIMM(
            num_patches=height * width,
            depth=len(ours.blocks),
            mlp_dim=ours.input_proj.in_features,
            predictor_embed_dim=ours.input_proj.out_features,
            num_heads=ours.blocks[0].attn.num_heads,
        )

    def forward(self, context_tokens: Tensor, context_idx: Tensor, target_idx: list[Tensor]) -> Tensor:
        return self.predictor(context_tokens, [context_idx], list(target_idx))
