"""FlexPredict / StoP as a LightningModule (Bar et al., "Stochastic positional embeddings improve
masked image modeling", ICML 2024, arXiv 2308.00566; SPEC.md §2)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ssl_lightning.methods.ijepa import IJEPA
from ssl_lightning.nn.fsdp import full_tensor
from ssl_lightning.nn.predictor import StochasticPositionPredictor


class FlexPredict(IJEPA):
    """I-JEPA whose predictor gets *stochastic* positions for the target tokens (paper Sec. 3, Eq. 3).

    Everything is :class:`IJEPA` except the predictor's target tokens: instead of the shared mask
    token, target token ``j`` is ``ψ_j + A·n_j`` with ``n_j ~ N(0, noise_std² I)`` in encoder
    space, drawn per token, per target block and per step in training (none in eval), where ``A``
    is the predictor's input projection, tied with the projection of the context features (its
    bias takes the mask token's role). Tying is what keeps training from shrinking ``A`` to zero to
    remove the noise; ``train/tied_projection_norm`` logs ``‖A‖_F`` so you can watch it.
    See :class:`~ssl_lightning.nn.StochasticPositionPredictor`.

    Args:
        noise_std: standard deviation σ of the noise (the reference code's value; the paper writes
            it as a variance): 0.25 for ViT-B/L, 0.2 for ViT-H.
        **ijepa_args: every :class:`IJEPA` argument.
    """

    def __init__(self, noise_std: float = 0.25, **ijepa_args: Any) -> None:
        self.noise_std = noise_std  # read by build_predictor, called from IJEPA.__init__
        super().__init__(**ijepa_args)

    def build_predictor(self, enc_dim: int, grid_size: tuple[int, int], **options) -> StochasticPositionPredictor:
        return StochasticPositionPredictor(enc_dim, grid_size, noise_std=self.noise_std, **options)

    def training_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        outputs = super().training_step(batch, batch_idx)
        # FSDP2: the norm of a sharded weight is a replicated DTensor; log it as a plain tensor.
        self.log("train/tied_projection_norm", full_tensor(self.predictor.input_proj.weight.detach().norm()))
        return outputs
