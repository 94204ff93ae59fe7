"""Self-supervised losses: pure functions plus thin ``nn.Module`` wrappers (no Lightning here)."""

from ssl_lightning.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from ssl_lightning.losses.jepa import JEPALoss, jepa_loss
from ssl_lightning.losses.sigreg import LeJEPALoss, lejepa_loss, sigreg
from ssl_lightning.losses.vicreg import VICRegLoss, vicreg_loss

__all__ = [
    "BarlowTwinsLoss",
    "JEPALoss",
    "LeJEPALoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "jepa_loss",
    "lejepa_loss",
    "sigreg",
    "vicreg_loss",
]
