"""Self-supervised losses: pure functions plus thin ``nn.Module`` wrappers (no Lightning here)."""

from ssl_lightning.losses.vicreg import VICRegLoss, vicreg_loss

__all__ = ["VICRegLoss", "vicreg_loss"]
