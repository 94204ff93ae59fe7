"""Online-evaluation callbacks (they read the `features` a method returns; none runs a forward pass), and
:class:`OneDNNLinears`, which speeds up linear layers on some CPUs."""

from ssl_lightning.callbacks.knn import OnlineKNN, knn_votes
from ssl_lightning.callbacks.linear_probe import OnlineLinearProbe
from ssl_lightning.callbacks.mask_images import MaskVisualization, mask_overlay
from ssl_lightning.callbacks.onednn_linears import OneDNNLinears
from ssl_lightning.callbacks.pixel_baseline import PixelBaselineReport
from ssl_lightning.callbacks.rankme import CollapseWarning, RankMe, rankme

__all__ = [
    "CollapseWarning",
    "MaskVisualization",
    "OneDNNLinears",
    "OnlineKNN",
    "OnlineLinearProbe",
    "PixelBaselineReport",
    "RankMe",
    "knn_votes",
    "mask_overlay",
    "rankme",
]
